"""Heads trained on cached embeddings, as scikit-learn estimators.

The estimator classes load on first use (PEP 562), so code that only applies a saved head
(:class:`~frugalvision.heads.numpy_head.InferenceHead`, e.g. in a Ray actor) never imports scikit-learn,
which takes about a second.
"""

from ._registry import HEADS, HEAD_KINDS, LinearHead, MLPHead, check_head_kind, head_class, head_type, softmax

__all__ = ["LinearHead", "MLPHead", "HEADS", "HEAD_KINDS", "check_head_kind", "head_class", "head_type", "softmax"]
