"""A small MLP head (one hidden layer, dropout, weight decay, early stopping) on cached embeddings."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._torch_fit import fit_mlp
from ._base import SoftmaxHeadMixin

__all__ = ["MLPHead"]


class MLPHead(SoftmaxHeadMixin, ClassifierMixin, BaseEstimator):
    """Standardise -> Linear(hidden) -> ReLU -> Dropout -> Linear(classes), trained with AdamW.

    Early stopping watches the loss on a stratified ``validation_fraction`` of the training rows.
    Not linear, so explanations use Grad-CAM (``--method gradcam``) rather than exact CAM.

    Parameters
    ----------
    hidden : int, default=256
    dropout : float, default=0.2
    weight_decay : float, default=1e-3
    lr : float, default=1e-3
    batch_size : int, default=256
    max_epochs : int, default=100
    patience : int, default=6
    class_weight : {'balanced'} or None
    validation_fraction : float, default=0.1
    random_state : int, default=0

    Attributes
    ----------
    classes_, n_features_in_, n_epochs_, best_val_loss_
    """

    def __init__(self, hidden: int = 256, dropout: float = 0.2, weight_decay: float = 1e-3, lr: float = 1e-3,
                 batch_size: int = 256, max_epochs: int = 100, patience: int = 6, class_weight=None,
                 validation_fraction: float = 0.1, random_state: int = 0):
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.class_weight = class_weight
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X, y, init=None):
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_min_samples=4)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"MLPHead needs at least 2 classes, got only {classes[0]!r}.")
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-6
        cw = compute_class_weight(self.class_weight, classes=classes, y=y) if self.class_weight else None
        state, epochs, best = fit_mlp((X - self.mean_) / self.scale_, y_idx, len(classes), hidden=self.hidden,
                                      dropout=self.dropout, weight_decay=self.weight_decay, lr=self.lr,
                                      batch_size=self.batch_size, max_epochs=self.max_epochs,
                                      patience=self.patience, class_weight=cw,
                                      validation_fraction=self.validation_fraction, seed=self.random_state or 0)
        self.w1_, self.b1_ = state["0.weight"], state["0.bias"]
        self.w2_, self.b2_ = state["3.weight"], state["3.bias"]
        self.classes_ = classes
        self.n_epochs_, self.best_val_loss_ = epochs, best
        return self

    def logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        h = np.maximum(((X - self.mean_) / self.scale_) @ self.w1_.T + self.b1_, 0)
        return (h @ self.w2_.T + self.b2_).astype(np.float64)

    def torch_module(self):
        """The head as a torch module on raw embeddings (for Grad-CAM)."""
        import torch

        w1 = self.w1_ / self.scale_
        b1 = self.b1_ - w1 @ self.mean_
        net = torch.nn.Sequential(torch.nn.Linear(w1.shape[1], w1.shape[0]), torch.nn.ReLU(),
                                  torch.nn.Linear(self.w2_.shape[1], self.w2_.shape[0]))
        with torch.no_grad():
            net[0].weight.copy_(torch.as_tensor(w1))
            net[0].bias.copy_(torch.as_tensor(b1))
            net[2].weight.copy_(torch.as_tensor(self.w2_))
            net[2].bias.copy_(torch.as_tensor(self.b2_))
        return net.eval()

    def get_state(self) -> dict:
        check_is_fitted(self)
        return {k: np.asarray(getattr(self, f"{k}_"), dtype=np.float32) for k in ("w1", "b1", "w2", "b2", "mean", "scale")}

    @classmethod
    def from_state(cls, params: dict, tensors: dict, classes) -> "MLPHead":
        head = cls(**params)
        for k in ("w1", "b1", "w2", "b2", "mean", "scale"):
            setattr(head, f"{k}_", np.asarray(tensors[k], dtype=np.float32))
        head.classes_ = np.asarray(classes)
        head.n_features_in_ = head.w1_.shape[1]
        return head
