"""Optional dependencies: one line that names the extra to install, instead of an ImportError traceback."""

from __future__ import annotations

import importlib.util

from .exceptions import MissingExtraError

__all__ = ["has_torch", "installed", "require_torch"]

_TORCH_STACK = ("torch", "timm")


def installed(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-imported module
        return False


def has_torch() -> bool:
    """True when the torch extra is installed (checked without importing it)."""
    return all(installed(m) for m in _TORCH_STACK)


def require_torch(feature: str) -> None:
    """Raise MissingExtraError naming ``feature`` when PyTorch (the torch extra) is not installed."""
    if not has_torch():
        raise MissingExtraError(f"{feature} needs PyTorch, which the core install leaves out (~5 GB). "
                                f"Install it with: pip install 'frugalvision[torch]'")
