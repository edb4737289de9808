"""Temperature scaling (Guo et al., 2017): one scalar fitted on validation logits."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["fit_temperature"]


def fit_temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on held-out rows."""
    logits = np.asarray(logits, dtype=np.float64)
    y_idx = np.asarray(y_idx)

    def nll(log_t):
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), y_idx]))

    res = minimize_scalar(nll, bounds=(-4.0, 5.0), method="bounded")
    return float(np.exp(res.x))
