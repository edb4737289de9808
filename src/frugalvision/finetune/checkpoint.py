"""The fine-tuning checkpoint file, checked like the embedding cache and the hash memo (numpy only: no torch here).

One safetensors file holds the trainable tensors, the best epoch's copy, the optimiser state and the loop state
(JSON metadata), written atomically after every epoch. It carries an XXH3-128 over every tensor (name, dtype,
shape, bytes) and the loop state, so a file cut short, overwritten in place or with one bit flipped is never
resumed from: it is named in one warning, moved aside (``.bad-<time>``, kept for inspection, never deleted) and
fine-tuning starts again from the frozen backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._io import arrays_digest, atomic_writer, set_aside

__all__ = ["checkpoint_bytes", "write_checkpoint", "read_checkpoint", "META_KEY", "DIGEST_KEY"]

META_KEY = "frugalvision_finetune"
DIGEST_KEY = "xxh3_128"
_RESTART = "fine-tuning starts again from the frozen backbone"


def _digest(tensors: dict, meta_text: str) -> str:
    return arrays_digest({**tensors, "\x00meta": np.frombuffer(meta_text.encode("utf-8"), dtype=np.uint8)})


def checkpoint_bytes(tensors: dict, meta: dict) -> bytes:
    """The bytes of a checkpoint: ``tensors`` (name -> numpy array) and ``meta`` (JSON), with their checksum."""
    from safetensors.numpy import save

    meta_text = json.dumps(meta)
    return save(tensors, metadata={META_KEY: meta_text, DIGEST_KEY: _digest(tensors, meta_text)})


def write_checkpoint(path, tensors: dict, meta: dict) -> Path:
    """Write the checkpoint atomically: tensors, loop state and checksum can never disagree."""
    with atomic_writer(path, "wb") as fh:
        fh.write(checkpoint_bytes(tensors, meta))
    return Path(path)


def read_checkpoint(path):
    """``(meta, tensors)`` of a checkpoint whose checksum matches; ``None`` for a damaged one, which is set aside
    with one warning naming it (the caller then starts from scratch)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types (and OSError) for a cut or garbled file
        set_aside(path, f"not a readable checkpoint: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                  _RESTART)
        return None
    meta_text, stored = header.get(META_KEY), header.get(DIGEST_KEY)
    if meta_text is None or stored is None:
        set_aside(path, "no checksum (not a checkpoint of this version)", _RESTART)
        return None
    if _digest(tensors, meta_text) != stored:
        set_aside(path, "its checksum does not match its contents", _RESTART)
        return None
    try:
        meta = json.loads(meta_text)
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise ValueError("no loop state")
    except ValueError as exc:
        set_aside(path, f"its loop state cannot be read ({exc})", _RESTART)
        return None
    return meta, tensors
