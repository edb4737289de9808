"""Heads trained on cached embeddings, as scikit-learn estimators.

The estimator classes load on first use (PEP 562), so code that only applies a saved head
(:class:`~frugalvision.heads.numpy_head.InferenceHead`, e.g. in a Ray actor) never imports scikit-learn,
which takes about a second.
"""

from ._base import softmax
from ._registry import HEAD_KINDS, check_head_kind, head_class, head_type

__all__ = ["LinearHead", "MLPHead", "HEADS", "HEAD_KINDS", "check_head_kind", "head_class", "head_type", "softmax"]


def __getattr__(name: str):
    if name in HEAD_KINDS:
        return head_class(name)
    if name == "HEADS":
        return {"linear": head_class("LinearHead"), "mlp": head_class("MLPHead")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
