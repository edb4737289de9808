"""What every head shares: predictions derived from ``logits`` (one row of class scores per sample)."""

from __future__ import annotations

import numpy as np

__all__ = ["SoftmaxHeadMixin", "softmax"]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SoftmaxHeadMixin:
    """Subclasses implement ``logits(X)``; the scikit-learn prediction methods follow from it."""

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
