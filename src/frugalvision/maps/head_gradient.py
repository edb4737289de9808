"""Grad-CAM for a head on globally average-pooled features, with numpy alone (Selvaraju et al., ICCV 2017).

The embedding is ``e = mean_hw A`` of the last feature map ``A`` (C×h×w), so ``d logit_k / d A[c, i, j]`` is
``g_k[c] / hw`` with ``g_k = d logit_k / d e``: Grad-CAM's channel weights are the head's own gradient, which for
an MLP (standardise -> Linear -> ReLU -> Linear) is two matrix products and the ReLU's mask. The map returned is
``Σ_c g_k[c]·A[c]``, kept signed and unnormalised like CAM (its mean over the grid is the first-order part of the
logit), so the maps of one image share one colour scale; for a linear head it *is* CAM (``g_k = W[k]``).
"""

from __future__ import annotations

import numpy as np

from ..heads._base import MLP_STATE

__all__ = ["head_gradients", "gradient_maps"]


def _mlp_state(head):
    if hasattr(head, "_mlp"):  # the inference-only head keeps its arrays in order
        return head._mlp
    return [np.asarray(getattr(head, f"{k}_"), dtype=np.float32) for k in MLP_STATE]


def head_gradients(head, embeddings: np.ndarray, picks) -> np.ndarray:
    """``(n, r, C)``: d logit / d embedding of each image's classes ``picks`` (a list of ``r`` indices per image)."""
    X = np.asarray(embeddings, dtype=np.float32)
    idx = np.asarray(picks, dtype=int)
    if hasattr(head, "coef_"):
        return np.asarray(head.coef_, dtype=np.float32)[idx]
    w1, b1, w2, _b2, mean, scale = _mlp_state(head)
    active = ((((X - mean) / scale) @ w1.T + b1) > 0).astype(np.float32)          # (n, H): the ReLU's mask
    # g[n, r, c] = Σ_j w2[k_r, j] · active[n, j] · w1[j, c] / scale[c]
    return np.einsum("nrj,jc->nrc", w2[idx] * active[:, None, :], w1) / scale


def gradient_maps(feature_maps: np.ndarray, embeddings: np.ndarray, head, picks) -> np.ndarray:
    """``(n, r, h, w)`` signed maps of each image's classes ``picks`` from its feature maps ``(n, C, h, w)``."""
    fm = np.asarray(feature_maps, dtype=np.float32)
    g = head_gradients(head, embeddings, picks)
    return np.einsum("nrc,nchw->nrhw", g, fm)
