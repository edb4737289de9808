"""Gradient-based CAMs through the maintained ``grad-cam`` package (jacobgil/pytorch-grad-cam).

Grad-CAM (Selvaraju et al., ICCV 2017), Grad-CAM++ (Chattopadhay et al., WACV 2018),
LayerCAM (Jiang et al., TIP 2021), Score-CAM (Wang et al., CVPRW 2020). They serve
models whose head is not linear or whose backbone was fine-tuned; for a linear head
on average-pooled features Grad-CAM equals ReLU(CAM) up to scale.

The layer is the registry's ``cam_layer`` (no guessing), the hooks are released by
the library's context manager, and maps come back at feature resolution so the
overlay code maps them through the crop like exact CAM.

The library scales every map to [0, 1] on its own, which makes a weak runner-up look as strong as the
winner. Here its per-map scaling is skipped and the maps of one image are divided by their common maximum:
still in [0, 1], but the classes of an image stay comparable (the report's shared colour scale needs it).
"""

from __future__ import annotations

import numpy as np

#: Gradient methods, by their class name in the ``grad-cam`` package.
GRADIENT_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM",
                    "scorecam": "ScoreCAM"}

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
        _unscaled(cam)
        for r in range(len(class_idx[0])):
            targets = [ClassifierOutputTarget(int(ci[r])) for ci in class_idx]
            out[:, r] = cam(input_tensor=x.requires_grad_(True), targets=targets)
    top = out.reshape(len(out), -1).max(axis=1, initial=0.0)[:, None, None, None]
    return np.divide(out, top, out=np.zeros_like(out), where=top > 0)


def _unscaled(cam) -> None:
    """Make a pytorch-grad-cam object return ReLU(map) at the feature grid, without its per-map [0, 1] scaling."""
    import types

    def per_layer(self, input_tensor, targets, eigen_smooth):
        acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        return [np.maximum(self.get_cam_image(input_tensor, layer, targets, a, g, eigen_smooth), 0)[:, None]
                for layer, a, g in zip(self.target_layers, acts, grads)]

    cam.compute_cam_per_layer = types.MethodType(per_layer, cam)
    cam.aggregate_multi_layers = lambda per: np.maximum(np.concatenate(per, axis=1), 0).mean(axis=1)
