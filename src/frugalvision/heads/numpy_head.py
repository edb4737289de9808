"""A saved head applied with numpy alone: what a worker that only predicts needs.

It computes the same logits as the estimator it was saved from (the forward passes are shared,
see ``_base``), exposes ``coef_``/``intercept_`` for exact CAM when the head is linear, and
builds the real scikit-learn estimator only if something else is asked of it (Grad-CAM's torch
module, ``get_params`` when saving, ...).
"""

from __future__ import annotations

import numpy as np

from ._base import MLP_STATE, linear_logits, mlp_logits, softmax

__all__ = ["InferenceHead"]


class InferenceHead:
    """A saved ``LinearHead`` or ``MLPHead`` (``kind`` is the class name), for prediction only."""

    def __init__(self, kind: str, params: dict, tensors: dict, classes):
        from . import check_head_kind

        self.kind, self.params, self._tensors = check_head_kind(kind), dict(params), dict(tensors)
        self.classes_ = np.asarray(classes)
        self._estimator = None
        if kind == "LinearHead":  # the attributes exact CAM reads
            self.coef_ = np.asarray(tensors["coef"], dtype=np.float64)
            self.intercept_ = np.asarray(tensors["intercept"], dtype=np.float64)
            self.n_features_in_ = self.coef_.shape[1]
        else:
            self._mlp = [np.asarray(tensors[k], dtype=np.float32) for k in MLP_STATE]
            self.n_features_in_ = self._mlp[0].shape[1]

    def logits(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; this head expects (n_samples, {self.n_features_in_}).")
        if self.kind == "LinearHead":
            return linear_logits(X.astype(np.float64, copy=False), self.coef_, self.intercept_)
        return mlp_logits(X.astype(np.float32, copy=False), *self._mlp)

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.logits(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.logits(X), axis=1)]

    def estimator(self):
        """The scikit-learn estimator this head was saved from (imports scikit-learn)."""
        if self._estimator is None:
            from . import head_class

            self._estimator = head_class(self.kind).from_state(self.params, self._tensors, self.classes_)
        return self._estimator

    def __getattr__(self, name: str):
        # Only reached for attributes not set above: anything else is the estimator's.
        if name.startswith("__") or name in ("_estimator", "_tensors", "kind", "params", "coef_", "_mlp"):
            raise AttributeError(name)
        return getattr(self.estimator(), name)

    def __repr__(self) -> str:
        return f"InferenceHead({self.kind}, classes={list(self.classes_)})"
