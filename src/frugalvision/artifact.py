"""One portable model file: safetensors tensors + JSON metadata, never a pickle.

The file is a standard ``.safetensors``: tensors ``head.*`` (and ``backbone.*`` for a
fine-tuned backbone), and in its header metadata one ``frugalvision`` entry holding
JSON (classes, head type and parameters, backbone name and weights identity,
preprocessing, versions, training summary). Loading parses JSON and raw tensors only.
"""

from __future__ import annotations

import json
from importlib import metadata as _md
from pathlib import Path

import numpy as np

from ._io import atomic_writer, refuse_overwrite
from .exceptions import ArtifactError

__all__ = ["save_artifact", "load_artifact", "FORMAT", "FORMAT_VERSION", "versions"]

FORMAT = "frugalvision-model"
FORMAT_VERSION = 1


def versions() -> dict:
    out = {}
    for pkg in ("frugalvision", "timm", "torch", "scikit-learn", "onnxruntime", "numpy"):
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            out[pkg] = None
    return out


def save_artifact(path, tensors: dict[str, np.ndarray], meta: dict, *, overwrite: bool = False) -> Path:
    """Write ``tensors`` and ``meta`` to ``path`` atomically (refuses to overwrite unless asked)."""
    from safetensors.numpy import save

    path = Path(path)
    refuse_overwrite(path, overwrite, "model file")
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    blob = save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                metadata={"frugalvision": json.dumps(body, default=_jsonable)})
    with atomic_writer(path, "wb") as fh:
        fh.write(blob)
    return path


def load_artifact(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read ``(tensors, meta)`` from a model file, with a clear error for anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ArtifactError(f"Model file '{path}' does not exist. Train one with 'frugalvision train DATA --out DIR'.")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("frugalvision")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(
            f"'{path}' is not a frugalvision model file ({exc}). Model files are .safetensors written by "
            f"'frugalvision train'."
        ) from None
    if raw is None:
        raise ArtifactError(f"'{path}' is a safetensors file but has no frugalvision metadata; it is not a model file.")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' has format {meta.get('format')!r} version {meta.get('format_version')}; this frugalvision "
            f"reads '{FORMAT}' up to version {FORMAT_VERSION}. Upgrade frugalvision: pip install -U frugalvision"
        )
    return tensors, meta


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
