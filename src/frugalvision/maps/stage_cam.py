"""Class maps at stride 16 for multi-stage features: the logit split exactly over the image.

With ``--features multi`` the embedding is ``[mean(A), (mean(S_k), max(S_k)) for each stage k]`` (``A`` the last
map at stride 32, ``S_3``, ``S_4`` at stride 16, ``S_5``, ``S_6`` at stride 32). For a linear head (or any head's
gradient ``g``) each part's contribution to the logit sits somewhere on the image:

- an average-pooled channel spreads ``g_c * S_c[i, j]`` over every cell (as classic CAM);
- a max-pooled channel's whole contribution ``g_c * max S_c`` comes from its arg-max cell (the thin crack or the
  spot that lit it up), so it is put there, times the number of cells, so that its mean over the grid is the term.

Every part is brought to the finest grid (stride 16) by area resampling, which keeps each map's mean, so the mean
of the class map plus the bias is the logit, exactly: the same property that makes classic CAM exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stage_class_maps", "area_matrix"]


def area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)``: the share of each output cell covered by each input cell (rows sum to 1); resampling with
    it on both axes keeps a map's mean, whatever the two sizes."""
    edges_out = np.linspace(0, 1, n_out + 1)
    edges_in = np.linspace(0, 1, n_in + 1)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0, None) * n_out


def _resample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(..., h, w)`` -> ``(..., H, W)`` by area."""
    h, w = m.shape[-2:]
    if (h, w) == size:
        return m
    R, C = area_matrix(size[0], h).astype(np.float32), area_matrix(size[1], w).astype(np.float32)
    return np.einsum("Hh,...hw,Ww->...HW", R, m, C)


def stage_class_maps(last_map: np.ndarray, stage_maps: list[np.ndarray], grads: np.ndarray) -> np.ndarray:
    """``(n, r, H, W)`` signed maps at the finest grid among the inputs.

    Parameters
    ----------
    last_map : (n, C0, h0, w0)
        The last feature map (its mean is the first ``C0`` numbers of the embedding).
    stage_maps : list of (n, Ck, hk, wk)
        The pooled stages' maps in embedding order (each gives ``Ck`` averages then ``Ck`` maxima).
    grads : (n, r, D)
        d logit / d embedding of the ``r`` classes wanted per image (a linear head: its weight rows).
    """
    parts = [np.asarray(last_map, np.float32)] + [np.asarray(s, np.float32) for s in stage_maps]
    size = max((p.shape[-2:] for p in parts), key=lambda s: s[0] * s[1])
    g = np.asarray(grads, np.float32)
    n, r, _ = g.shape
    out = np.zeros((n, r, *size), np.float32)
    at = 0
    for i, fm in enumerate(parts):
        c, h, w = fm.shape[1:]
        g_avg = g[:, :, at:at + c]
        at += c
        part = np.einsum("nrc,nchw->nrhw", g_avg, fm)  # averages: spread like CAM
        if i > 0:
            g_max = g[:, :, at:at + c]
            at += c
            flat = fm.reshape(n, c, h * w)
            arg = flat.argmax(axis=2)                                      # (n, c): where each maximum is
            term = g_max * np.take_along_axis(flat, arg[..., None], 2)[:, None, :, 0]  # (n, r, c)
            spikes = np.zeros((n, r, h * w), np.float32)
            for j in range(n):  # scatter each channel's term onto its arg-max cell
                np.add.at(spikes[j], (slice(None), arg[j]), term[j] * (h * w))
            part = part + spikes.reshape(n, r, h, w)
        out += _resample(part, size)
    if at != g.shape[2]:
        raise ValueError(f"The maps give {at} embedding numbers but the head reads {g.shape[2]}.")
    return out
