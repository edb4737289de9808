"""A small MLP head (one hidden layer, dropout, weight decay, early stopping) on cached embeddings.

Trained in float32 numpy (``_numpy_fit.fit_mlp``); torch is imported only by ``torch_module`` (Grad-CAM).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import MLP_STATE, SoftmaxHeadMixin, mlp_logits
from ._numpy_fit import fit_mlp
from ._threads import run_each

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
    checks_per_epoch : int, default=1
        Validation checks per epoch; ``patience`` counts checks (the search checks more often, see tune).

    Attributes
    ----------
    classes_, n_features_in_, n_epochs_, best_val_loss_
    """

    def __init__(self, hidden: int = 256, dropout: float = 0.2, weight_decay: float = 1e-3, lr: float = 1e-3,
                 batch_size: int = 256, max_epochs: int = 100, patience: int = 6, class_weight=None,
                 validation_fraction: float = 0.1, random_state: int = 0, checks_per_epoch: int = 1):
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
        self.checks_per_epoch = checks_per_epoch

    def fit(self, X, y, init=None):
        return self.fit_many([self], X, y)[0]

    @classmethod
    def fit_many(cls, heads: list, X, y) -> list:
        """Fit several unfitted ``MLPHead`` s on the same rows; heads that share hidden size, batch size,
        schedule and seed train together in one stacked model (same algorithm, a fraction of the time)."""
        X, y = cls._validate_for_all(heads, X, y, dtype=np.float32, ensure_min_samples=4)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"MLPHead needs at least 2 classes, got only {classes[0]!r}.")
        mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
        Xs = (X - mean) / scale

        def fit_group(item):
            (hidden, batch, epochs, patience, vf, seed, checks), hs = item
            return fit_mlp(Xs, y_idx, len(classes), hidden=hidden, dropouts=[h.dropout for h in hs],
                           weight_decays=[h.weight_decay for h in hs], lrs=[h.lr for h in hs], batch_size=batch,
                           max_epochs=epochs, patience=patience, validation_fraction=vf, seed=seed,
                           checks_per_epoch=checks,
                           class_weights=[compute_class_weight(h.class_weight, classes=classes, y=y)
                                          if h.class_weight else None for h in hs])

        items = [(_stack_key(hs[0]), hs) for hs in cls.fit_units(heads)]
        # One stack per thread, costliest first (see _threads): BLAS's own threads would idle through the
        # single-threaded AdamW and activation passes between a step's small GEMMs.
        for (_, hs), fits in zip(items, run_each(fit_group, items)):
            for h, (state, n_epochs, best) in zip(hs, fits):
                h.mean_, h.scale_ = mean, scale
                h.w1_, h.b1_, h.w2_, h.b2_ = state["w1"], state["b1"], state["w2"], state["b2"]
                h.classes_ = classes
                h.n_epochs_, h.best_val_loss_ = n_epochs, best
        return heads

    @classmethod
    def fit_units(cls, heads: list) -> list[list]:
        """The stacks ``fit_many`` trains ``heads`` in, costliest first: heads sharing hidden size, batch size,
        schedule and seed, at most ``_STACK`` per stack (a head's result does not depend on its stack), so that
        threads get even shares. A caller may fit each stack on its own (tune schedules them across folds)."""
        groups: dict = {}
        for h in heads:
            groups.setdefault(_stack_key(h), []).append(h)
        units = [hs[i:i + _STACK] for hs in groups.values() for i in range(0, len(hs), _STACK)]
        # Cost per epoch ~ heads x hidden units x (GEMMs on every row + an AdamW pass per batch).
        return sorted(units, key=lambda hs: -len(hs) * hs[0].hidden * (1 + 128 / hs[0].batch_size))

    def logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return mlp_logits(X, self.w1_, self.b1_, self.w2_, self.b2_, self.mean_, self.scale_)

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
        return {k: np.asarray(getattr(self, f"{k}_"), dtype=np.float32) for k in MLP_STATE}

    @classmethod
    def from_state(cls, params: dict, tensors: dict, classes) -> "MLPHead":
        head = cls(**params)
        for k in MLP_STATE:
            setattr(head, f"{k}_", np.asarray(tensors[k], dtype=np.float32))
        head.classes_ = np.asarray(classes)
        head.n_features_in_ = head.w1_.shape[1]
        return head


_STACK = 4


def _stack_key(h) -> tuple:
    return (h.hidden, h.batch_size, h.max_epochs, h.patience, h.validation_fraction, h.random_state or 0,
            h.checks_per_epoch)
