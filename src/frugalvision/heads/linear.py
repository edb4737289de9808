"""A linear softmax head on cached embeddings, as a scikit-learn estimator.

It standardises the embeddings and fits an L2-regularised multinomial logistic
regression (scikit-learn's), then folds the scaling into ``coef_``/``intercept_``
so that ``softmax(X @ coef_.T + intercept_)`` on *raw* embeddings is the model.
That fold is what makes class activation maps exact: because the embedding is the
spatial mean of the last feature map A, ``coef_[k] @ A[:, i, j]`` is class k's
evidence at each location.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["LinearHead", "softmax"]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class LinearHead(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression on standardised embeddings.

    Parameters
    ----------
    C : float, default=0.5
        Inverse L2 strength (smaller = stronger regularisation).
    class_weight : {'balanced'} or dict or None
        ``'balanced'`` reweights classes inversely to their frequency.
    max_iter : int, default=2000
    random_state : int or None

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (n_classes, n_features)
        Weights on raw (unscaled) embeddings; one row per class, also for 2 classes.
    intercept_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    n_iter_ : int
    """

    def __init__(self, C: float = 0.5, class_weight=None, max_iter: int = 2000, random_state=None):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}.")
        scaler = StandardScaler().fit(X, sample_weight=sample_weight)
        lr = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter,
                                random_state=self.random_state)
        lr.fit(scaler.transform(X), y, sample_weight=sample_weight)
        self.classes_ = lr.classes_
        w = lr.coef_ / scaler.scale_
        b = lr.intercept_ - w @ scaler.mean_
        if w.shape[0] == 1:  # binary: sigmoid(z) == softmax([-z/2, z/2])
            w = np.vstack([-w[0] / 2, w[0] / 2])
            b = np.array([-b[0] / 2, b[0] / 2])
        self.coef_ = w.astype(np.float64)
        self.intercept_ = b.astype(np.float64)
        self.n_iter_ = int(np.max(lr.n_iter_))
        return self

    def logits(self, X) -> np.ndarray:
        """``(n_samples, n_classes)`` class scores; ``softmax(logits)`` is ``predict_proba``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_.T + self.intercept_

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

    # Tensors and params for the artifact (see frugalvision.artifact).
    def get_state(self) -> dict:
        check_is_fitted(self)
        return {"coef": self.coef_.astype(np.float32), "intercept": self.intercept_.astype(np.float32)}

    @classmethod
    def from_state(cls, params: dict, tensors: dict, classes) -> "LinearHead":
        head = cls(**params)
        head.coef_ = np.asarray(tensors["coef"], dtype=np.float64)
        head.intercept_ = np.asarray(tensors["intercept"], dtype=np.float64)
        head.classes_ = np.asarray(classes)
        head.n_features_in_ = head.coef_.shape[1]
        return head
