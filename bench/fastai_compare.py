"""fastai's own recipe on the same images and the same pretrained backbone.

    python bench/fastai_compare.py DATA_DIR   (DATA_DIR has train/ and test/ class folders)

``vision_learner(dls, arch).fine_tune(1)`` with ``arch`` returning timm's tf_efficientnet_lite0
with the same offline ImageNet weights frugalvision uses (fastai would otherwise download
weights). Prints one JSON line: seconds, test accuracy. Needs ``pip install fastai``.
"""

from __future__ import annotations

import json
import sys
import time


def main(data: str) -> None:
    from fastai.vision.all import (ImageDataLoaders, Normalize, Resize, accuracy, vision_learner)

    from frugalvision.backbones.build import imagenet_classifier

    def lite0(pretrained=True):
        return imagenet_classifier("efficientnet_lite0")[0]

    t = time.perf_counter()
    dls = ImageDataLoaders.from_folder(data, train="train", valid="test", item_tfms=Resize(224), bs=32,
                                       num_workers=2, batch_tfms=Normalize.from_stats([0.498] * 3, [0.502] * 3))
    learn = vision_learner(dls, lite0, normalize=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(1)
    _, acc = learn.validate()
    print(json.dumps({"seconds": time.perf_counter() - t, "test_accuracy": float(acc), "recipe": "fine_tune(1)"}))


if __name__ == "__main__":
    main(sys.argv[1])
