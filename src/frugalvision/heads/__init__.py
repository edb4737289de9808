"""Heads trained on cached embeddings, as scikit-learn estimators."""

from .linear import LinearHead, softmax
from .mlp import MLPHead

HEADS = {"linear": LinearHead, "mlp": MLPHead}

__all__ = ["LinearHead", "MLPHead", "HEADS", "softmax"]
