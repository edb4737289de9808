"""What every head shares: predictions derived from ``logits`` (one row of class scores per sample)."""

from __future__ import annotations

import numpy as np

__all__ = ["SoftmaxHeadMixin", "softmax", "linear_logits", "mlp_logits", "MLP_STATE"]

#: The arrays an MLP head is saved as (``<name>_`` attributes on the estimator), in ``mlp_logits`` order.
MLP_STATE = ("w1", "b1", "w2", "b2", "mean", "scale")


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# The forward passes, on validated float arrays; the estimators and the inference-only head share them.
def linear_logits(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    return X @ coef.T + intercept


def mlp_logits(X: np.ndarray, w1, b1, w2, b2, mean, scale) -> np.ndarray:
    h = np.maximum(((X - mean) / scale) @ w1.T + b1, 0)
    return (h @ w2.T + b2).astype(np.float64)


class SoftmaxHeadMixin:
    """Subclasses implement ``logits(X)``; the scikit-learn prediction methods follow from it."""

    @staticmethod
    def _validate_for_all(heads: list, X, y, **kw):
        """Validate ``(X, y)`` once for several heads fitted on the same rows (``fit_many``), and give every
        head the input attributes scikit-learn's validation sets (``n_features_in_``, ``feature_names_in_``)."""
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        first = heads[0]
        X, y = validate_data(first, X, y, **kw)
        check_classification_targets(y)
        for h in heads[1:]:
            h.n_features_in_ = first.n_features_in_
            if hasattr(first, "feature_names_in_"):
                h.feature_names_in_ = first.feature_names_in_
        return X, y

    @classmethod
    def fit_units(cls, heads: list) -> list[list]:
        """Groups of ``heads`` that ``fit_many`` solves together and a caller may fit apart, costliest first;
        by default one group (e.g. a warm-started C path)."""
        return [list(heads)]

    def decision_function(self, X):
        """scikit-learn convention: ``(n_samples,)`` for 2 classes, else ``(n_samples, n_classes)``."""
        z = self.logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        return softmax(self.logits(X))

    def predict_log_proba(self, X):
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))

    def predict(self, X):
        z = self.logits(X)  # checks fitted before touching classes_
        return self.classes_[np.argmax(z, axis=1)]
