"""Build a frozen, pretrained backbone as a torch module (imports torch and timm).

The module returned by :func:`build_backbone` takes ``uint8`` RGB images laid out
``N×H×W×3`` at the spec's input size and returns ``(feature_map, embedding)``:
normalisation lives *inside* the network, so the same graph serves extraction,
CAM, ONNX export and serving, and decoded images travel between processes as
compact bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..exceptions import WeightsUnavailableError
from .registry import BackboneSpec, get_spec
from .weights import _file_digest, _pypi_weights_path, weights_identity

__all__ = ["FrozenBackbone", "build_backbone", "load_state_dict_file", "imagenet_classifier", "weights_identity"]


class FrozenBackbone(nn.Module):
    """uint8 NHWC images -> (last feature map NCHW, pooled embedding NC)."""

    def __init__(self, model: nn.Module, spec: BackboneSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        return ((x - self.mean) * self.inv_std).contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor):
        fmap = self.model.forward_features(self.normalise(images))
        pooled = self.model.forward_head(fmap, pre_logits=True)
        return fmap, pooled


def build_backbone(name_or_spec, weights: str | os.PathLike | None = None, *, pretrained: bool = True):
    """Create the frozen backbone for a registry name (or ``timm:<name>``).

    Parameters
    ----------
    name_or_spec : str or BackboneSpec
    weights : path, optional
        A local ``.safetensors`` or ``.pth`` file to use instead of the default source.
        ``.pth`` files are read with ``weights_only=True`` (no code execution).
    pretrained : bool
        False builds random weights (tests, architecture checks).

    Returns
    -------
    backbone : FrozenBackbone
        In eval mode with gradients disabled; ``backbone.weights_id`` identifies the weights.
    """
    import timm

    spec = get_spec(name_or_spec)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    if weights is not None:
        state = load_state_dict_file(weights)
        _load_into(model, state, source=str(weights))
        weights_id = f"file:{_file_digest(weights)}"
    elif not pretrained:
        weights_id = "random"
    elif spec.weights.startswith("pypi:"):
        path = _pypi_weights_path(spec)
        state = _lite_to_timm(torch.load(path, map_location="cpu", weights_only=True), model)
        _load_into(model, state, source=str(path))
        weights_id = f"{spec.weights}:{_file_digest(path)}"
    else:
        model = _timm_pretrained(spec)
        weights_id = f"timm:{spec.timm_name}@{timm.__version__}"
    model.eval().requires_grad_(False)
    backbone = FrozenBackbone(model, spec).eval()
    backbone.weights_id = weights_id
    return backbone


def imagenet_classifier(name_or_spec="efficientnet_lite0") -> tuple[nn.Module, list[str]]:
    """The full ImageNet classifier (with its 1000-way head) and class names; for sanity checks."""
    import timm
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    spec = get_spec(name_or_spec)
    if not spec.weights.startswith("pypi:"):
        raise ValueError(f"imagenet_classifier only supports the offline backbones, not '{spec.name}'.")
    model = timm.create_model(spec.timm_name, pretrained=False)
    path = _pypi_weights_path(spec)
    model.load_state_dict(_lite_to_timm(torch.load(path, map_location="cpu", weights_only=True), model))
    return model.eval(), list(_IMAGENET_CATEGORIES)


# --------------------------------------------------------------------------- weights


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pth``/``.pt``/``.bin`` without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"Weights file '{path}' does not exist. Pass the path of a .safetensors or .pth file "
            f"holding the backbone's state dict."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle with code in it, or not a checkpoint at all
            raise WeightsUnavailableError(
                f"Could not read '{path}' as a weights-only PyTorch checkpoint ({type(exc).__name__}: {exc}). "
                f"frugalvision never unpickles arbitrary objects; re-save the file as a plain state dict or "
                f"as .safetensors."
            ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"'{path}' does not contain a state dict (found {type(state).__name__}).")
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "model.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _load_into(model: nn.Module, state: dict, source: str) -> None:
    own = model.state_dict()
    # Classifier weights in the file are ignored: frugalvision trains its own head.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsUnavailableError(
            f"The weights in '{source}' do not fit this architecture: {len(missing)} of {len(own)} tensors are "
            f"missing or have another shape (first: {missing[:3]}). Check that the file belongs to the "
            f"backbone you asked for."
        )
    model.load_state_dict(usable, strict=False)


def _lite_to_timm(src: dict, model: nn.Module) -> dict:
    """Map ``efficientnet_pytorch``-layout keys onto timm's ``tf_efficientnet_liteN``.

    Both layouts list the same tensors in the same block order (stem, blocks, head,
    classifier), so they are paired in order and every pair's shape is checked.
    """
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(src_items) < len(dst_keys):
        raise WeightsUnavailableError(
            f"EfficientNet-Lite weights have {len(src_items)} tensors, the timm model needs {len(dst_keys)}."
        )
    out = {}
    own = model.state_dict()
    for dst, (k, v) in zip(dst_keys, src_items):
        if own[dst].shape != v.shape:
            raise WeightsUnavailableError(f"EfficientNet-Lite weight '{k}' {tuple(v.shape)} does not fit '{dst}' {tuple(own[dst].shape)}.")
        out[dst] = v
    return out


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub (or $HF_ENDPOINT) be reached? Assumed yes behind a configured proxy."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class _HubOffline:
    """Temporarily tell huggingface_hub to use its local cache only (no retries against a dead network)."""

    def __enter__(self):
        from huggingface_hub import constants

        self._old = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        return self

    def __exit__(self, *exc):
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = self._old
        return False


def _timm_pretrained(spec: BackboneSpec) -> nn.Module:
    import contextlib

    import timm

    # Offline, the hub client would retry for ~50 s before failing: try the local cache only, at once.
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true") or not _hub_reachable()
    try:
        with _HubOffline() if offline else contextlib.nullcontext():
            return timm.create_model(spec.timm_name, pretrained=True, num_classes=0)
    except Exception as exc:  # network, hub, or missing-cache errors: all mean "no weights here"
        raise WeightsUnavailableError(
            f"No pretrained weights for backbone '{spec.name}' ({spec.timm_name}) could be loaded: they are not "
            f"in the local timm/Hugging Face cache and "
            f"{'the Hugging Face hub is not reachable (offline)' if offline else f'downloading them failed ({type(exc).__name__})'}. "
            f"With internet access, run the same command once and the weights are cached for later offline use. "
            f"Offline, pass a local weights file with --weights FILE (Python: weights='FILE'), a .safetensors or "
            f".pth state dict for '{spec.timm_name}', or use an offline backbone such as 'efficientnet_lite0', "
            f"whose weights ship with frugalvision."
        ) from exc
