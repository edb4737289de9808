"""Heads trained on cached embeddings, as scikit-learn estimators."""

from .linear import LinearHead, softmax

HEADS = {"linear": LinearHead}

__all__ = ["LinearHead", "HEADS", "softmax"]
