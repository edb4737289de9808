"""Gradient-based CAMs through the maintained ``grad-cam`` package (jacobgil/pytorch-grad-cam).

Grad-CAM (Selvaraju et al., ICCV 2017), Grad-CAM++ (Chattopadhay et al., WACV 2018),
LayerCAM (Jiang et al., TIP 2021), Score-CAM (Wang et al., CVPRW 2020). They serve
models whose head is not linear or whose backbone was fine-tuned; for a linear head
on average-pooled features Grad-CAM equals ReLU(CAM) up to scale.

The layer is the registry's ``cam_layer`` (no guessing), the hooks are released by
the library's context manager, and maps come back at feature resolution so the
overlay code maps them through the crop like exact CAM.
"""

from __future__ import annotations

import numpy as np

from ..inference import GRADIENT_METHODS

__all__ = ["GRADIENT_METHODS", "gradient_cams"]


def _classifier(backbone, head_module):
    """nn.Module: normalised NCHW float -> logits of the frugalvision head (any head with torch_module())."""
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = backbone.model
            self.head = head_module

        def forward(self, x):
            return self.head(self.body.forward_head(self.body.forward_features(x), pre_logits=True))

    return Classifier().eval()


def gradient_cams(backbone, head, images_uint8: np.ndarray, class_idx, method: str = "gradcam",
                  cam_layer: str | None = None) -> np.ndarray:
    """``(n, K, h, w)`` maps in [0, 1] for ``class_idx`` (list per image of class indices)."""
    import pytorch_grad_cam as pgc
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in GRADIENT_METHODS:
        raise ValueError(f"Unknown method '{method}'. Choose one of cam, {', '.join(GRADIENT_METHODS)}.")
    model = _classifier(backbone, head.torch_module())
    layer = model.body.get_submodule(cam_layer or backbone.spec.cam_layer)
    x = backbone.normalise(torch.from_numpy(np.ascontiguousarray(images_uint8))).contiguous()
    with torch.no_grad():
        h, w = backbone.model.forward_features(x[:1]).shape[-2:]
    cls = getattr(pgc, GRADIENT_METHODS[method])
    out = np.zeros((len(x), len(class_idx[0]), h, w), dtype=np.float32)
    with cls(model=model, target_layers=[layer]) as cam:
        for r in range(len(class_idx[0])):
            targets = [ClassifierOutputTarget(int(ci[r])) for ci in class_idx]
            # grad-cam upsamples to the input size; ask for the feature grid instead.
            cam.get_target_width_height = lambda _x: (int(w), int(h))
            out[:, r] = cam(input_tensor=x.requires_grad_(True), targets=targets)
    return out
