"""The embedded demo dataset: 600 Fashion-MNIST product photos (MIT), written out as a folder.

4 classes (bag, sandal, shirt, t-shirt), 100 train + 50 test each. Bag and sandal are
easy; shirt and t-shirt are look-alikes, the same pattern as haircare vs skincare.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["write_demo_dataset", "DEMO_CLASSES"]

DEMO_CLASSES = ("bag", "sandal", "shirt", "t-shirt")


def write_demo_dataset(folder) -> Path:
    """Write ``folder/{train,test}/<class>/<name>.png`` (files already there are kept)."""
    from PIL import Image

    folder = Path(folder)
    with resources.files("frugalvision.data").joinpath("fashion_demo.npz").open("rb") as fh:
        z = np.load(fh, allow_pickle=False)
        images, labels, splits, names = z["images"], z["labels"], z["splits"], z["names"]
    for img, label, split, name in zip(images, labels, splits, names):
        p = folder / str(split) / str(label) / str(name)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p)
    return folder
