"""Heads trained on cached embeddings, as scikit-learn estimators.

The estimator classes load on first use (PEP 562), so code that only applies a saved head
(:class:`~frugalvision.heads.inference.InferenceHead`, e.g. in a Ray actor) never imports scikit-learn,
which takes about a second.
"""

from ._base import softmax

__all__ = ["LinearHead", "MLPHead", "HEADS", "softmax"]


def __getattr__(name: str):
    if name == "LinearHead":
        from .linear import LinearHead

        return LinearHead
    if name == "MLPHead":
        from .mlp import MLPHead

        return MLPHead
    if name == "HEADS":
        from .linear import LinearHead
        from .mlp import MLPHead

        return {"linear": LinearHead, "mlp": MLPHead}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
