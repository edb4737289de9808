"""Where frugalvision keeps caches (embeddings, ONNX graphs). Override with FRUGALVISION_CACHE."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root(override=None) -> Path:
    """``override``, else ``$FRUGALVISION_CACHE``, else ``$XDG_CACHE_HOME/frugalvision`` (~/.cache)."""
    if override:
        return Path(override)
    env = os.environ.get("FRUGALVISION_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "frugalvision"
