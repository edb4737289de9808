"""Is the map faithful? Deletion and insertion curves (Petsiuk et al., BMVC 2018, "RISE").

Deletion: grey out the map's most important cells first and watch the class
probability fall; a faithful map makes it fall faster than a random order (lower
AUC). Insertion: start from a blurred image and restore the most important cells
first (higher AUC is better). Cells are the feature-map grid (e.g. 7×7 blocks of
32×32 input pixels), so the map's own resolution is what is tested.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["deletion_insertion"]


def _cell_masks(order, h, w, H, W, n_steps):
    """Boolean (n_steps+1, H, W) masks: True where cells ranked in the first k are selected."""
    ys = (np.arange(H) * h // H)
    xs = (np.arange(W) * w // W)
    cell_of_pixel = ys[:, None] * w + xs[None, :]
    rank = np.empty(h * w, dtype=int)
    rank[order] = np.arange(h * w)
    pixel_rank = rank[cell_of_pixel]
    ks = np.round(np.linspace(0, h * w, n_steps + 1)).astype(int)
    return np.stack([pixel_rank < k for k in ks])


def deletion_insertion(prob_fn, images: np.ndarray, maps: np.ndarray, class_idx, *, n_steps: int = 10,
                       seed: int = 0) -> dict:
    """Curves and AUCs for map-ranked and random-ranked cell orders.

    Parameters
    ----------
    prob_fn : callable
        ``uint8 (n, H, W, 3) -> (n, K)`` class probabilities.
    images : uint8 (n, H, W, 3)
        Network inputs.
    maps : (n, h, w)
        The explanation for ``class_idx`` of each image.
    class_idx : (n,) int

    Returns
    -------
    dict
        ``deletion_auc``/``insertion_auc`` (n,) for the map order, ``*_random_auc`` likewise,
        and the mean curves.
    """
    rng = np.random.default_rng(seed)
    n, H, W, _ = images.shape
    h, w = maps.shape[-2:]
    res = {k: [] for k in ("deletion", "insertion", "deletion_random", "insertion_random")}
    for i in range(n):
        img = images[i]
        grey = np.broadcast_to(img.reshape(-1, 3).mean(axis=0).astype(np.uint8), img.shape)
        blur = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=max(H // 16, 2))))
        orders = {"": np.argsort(-maps[i].ravel(), kind="stable"), "_random": rng.permutation(h * w)}
        batch = []
        for suffix, order in orders.items():
            masks = _cell_masks(order, h, w, H, W, n_steps)[..., None]
            batch.append(np.where(masks, grey, img))   # deletion: selected cells removed
            batch.append(np.where(masks, img, blur))   # insertion: selected cells restored
        probs = prob_fn(np.concatenate(batch).astype(np.uint8))[:, class_idx[i]].reshape(4, n_steps + 1)
        res["deletion"].append(probs[0])
        res["insertion"].append(probs[1])
        res["deletion_random"].append(probs[2])
        res["insertion_random"].append(probs[3])
    x = np.linspace(0, 1, n_steps + 1)
    out = {}
    for k, curves in res.items():
        c = np.asarray(curves)
        out[f"{k}_auc"] = np.trapezoid(c, x, axis=1)
        out[f"{k}_curve"] = c.mean(axis=0)
    out["fraction"] = x
    return out
