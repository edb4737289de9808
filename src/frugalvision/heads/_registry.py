"""Heads trained on cached embeddings, as scikit-learn estimators: the code behind ``frugalvision.heads`` (its
docstring says more).
"""

__all__ = ["HEAD_KINDS", "check_head_kind", "head_class", "head_type"]

#: Head class names, as model files record them (``meta["head"]["type"]``).
HEAD_KINDS = ("LinearHead", "MLPHead")


def check_head_kind(kind: str) -> str:
    """``kind`` if it names a saved head class, else a ValueError listing the known ones."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head type {kind!r}; known: {', '.join(HEAD_KINDS)}")
    return kind


def head_class(kind: str):
    """The estimator class saved under ``kind`` (imports scikit-learn)."""
    check_head_kind(kind)
    if kind == "LinearHead":
        from .linear import LinearHead

        return LinearHead
    from .mlp import MLPHead

    return MLPHead


def head_type(head) -> str:
    """The class name a head is saved under (an inference-only head keeps the estimator's)."""
    return getattr(head, "kind", None) or type(head).__name__
