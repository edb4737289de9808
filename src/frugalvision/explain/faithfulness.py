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
                       seed: int = 0, batch_images: int = 4) -> dict:
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
    # The full image, the grey one and the blurred one are the same for both orders: each image needs
    # 3 + 4 * (n_steps - 1) forward passes, not 4 * (n_steps + 1). Images are batched together.
    per = 3 + 4 * (n_steps - 1)
    chunk = max(1, batch_images)
    for start in range(0, n, chunk):
        batch = []
        for i in range(start, min(n, start + chunk)):
            img = images[i]
            grey = np.broadcast_to(img.reshape(-1, 3).mean(axis=0).astype(np.uint8), img.shape)
            blur = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=max(H // 16, 2))))
            batch += [img, grey, blur]
            for order in (np.argsort(-maps[i].ravel(), kind="stable"), rng.permutation(h * w)):
                masks = _cell_masks(order, h, w, H, W, n_steps)[1:-1, ..., None]
                batch += list(np.where(masks, grey, img))   # deletion: selected cells removed
                batch += list(np.where(masks, img, blur))   # insertion: selected cells restored
        probs = prob_fn(np.stack(batch).astype(np.uint8))
        for j, i in enumerate(range(start, min(n, start + chunk))):
            p = probs[j * per:(j + 1) * per, class_idx[i]]
            full, gone, blurred = p[0], p[1], p[2]
            mids = p[3:].reshape(2, 2, n_steps - 1)  # (order, deletion/insertion, step)
            for o, suffix in enumerate(("", "_random")):
                res["deletion" + suffix].append(np.r_[full, mids[o, 0], gone])
                res["insertion" + suffix].append(np.r_[blurred, mids[o, 1], full])
    x = np.linspace(0, 1, n_steps + 1)
    out = {}
    for k, curves in res.items():
        c = np.asarray(curves)
        out[f"{k}_auc"] = np.trapezoid(c, x, axis=1)
        out[f"{k}_curve"] = c.mean(axis=0)
    out["fraction"] = x
    return out
