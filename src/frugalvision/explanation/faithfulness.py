"""Is the map faithful? Deletion and insertion curves (Petsiuk et al., BMVC 2018, "RISE").

Deletion: grey out the map's most important cells first and watch the class
probability fall; a faithful map makes it fall faster than a random order (lower
AUC). Insertion: start from a blurred image and restore the most important cells
first (higher AUC is better). Cells are the feature-map grid (e.g. 7×7 blocks of
32×32 input pixels), so the map's own resolution is what is tested.

Cost: the backbone pass is all that matters (masks and blurs are ~1 % of the time). Each image needs
``2 + 4 * (n_steps - 1)`` passes when the unperturbed probability is passed in (``full_probs``, known from
the pass that made the map), one more otherwise; all images and curves go through the backbone in large
batches. The endpoints (full, all grey, all blurred) are shared by the map and random orders, so they
cancel in the paired difference random - map: the number of steps only sets how finely the curve between
them is sampled.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["deletion_insertion", "passes_per_image"]


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


def passes_per_image(n_steps: int, full_known: bool = True) -> int:
    """Backbone passes one image costs in :func:`deletion_insertion`."""
    return 2 + 4 * (n_steps - 1) + (0 if full_known else 1)


def deletion_insertion(prob_fn, images: np.ndarray, maps: np.ndarray, class_idx, *, n_steps: int = 10,
                       seed: int = 0, batch_images: int = 8, full_probs=None) -> dict:
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
    n_steps : int
        Points of each curve beyond the start (cells removed in ``n_steps`` equal shares).
    batch_images : int
        Images whose perturbed copies share one ``prob_fn`` call (``batch_images * passes_per_image``
        arrays at once: 8 images at 5 steps are 144 arrays, ~22 MB at 224 px).
    full_probs : (n,) float, optional
        Probability of ``class_idx`` on the unperturbed images, when already known (saves one pass each).

    Returns
    -------
    dict
        ``deletion_auc``/``insertion_auc`` (n,) for the map order, ``*_random_auc`` likewise,
        ``*_curves`` (n, n_steps+1) per image, the mean curves ``*_curve``, ``fraction`` and ``passes``.
    """
    if n_steps < 2:
        raise ValueError("n_steps must be at least 2 (one point between the endpoints).")
    rng = np.random.default_rng(seed)
    n, H, W, _ = images.shape
    h, w = maps.shape[-2:]
    known = full_probs is not None
    res = {k: [] for k in ("deletion", "insertion", "deletion_random", "insertion_random")}
    # The full image, the grey one and the blurred one are the same for both orders: each image needs
    # 3 + 4 * (n_steps - 1) forward passes (2 + ... when the full one is known), not 4 * (n_steps + 1).
    per = passes_per_image(n_steps, known)
    chunk = max(1, batch_images)
    orders = [(np.argsort(-maps[i].ravel(), kind="stable"), rng.permutation(h * w)) for i in range(n)]

    def perturbed(start, stop):
        batch = []
        for i in range(start, stop):
            img = images[i]
            grey = np.broadcast_to(img.reshape(-1, 3).mean(axis=0).astype(np.uint8), img.shape)
            blur = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=max(H // 16, 2))))
            batch += ([] if known else [img]) + [grey, blur]
            for order in orders[i]:
                masks = _cell_masks(order, h, w, H, W, n_steps)[1:-1, ..., None]
                batch += list(np.where(masks, grey, img))   # deletion: selected cells removed
                batch += list(np.where(masks, img, blur))   # insertion: selected cells restored
        return np.stack(batch).astype(np.uint8, copy=False)

    passes = 0
    spans = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    # The next batch is built (masks, blurs: single-threaded numpy) while the backbone runs on this one.
    with ThreadPoolExecutor(max_workers=1) as runner:
        pending = runner.submit(prob_fn, perturbed(*spans[0])) if spans else None
        for k, (start, stop) in enumerate(spans):
            following = perturbed(*spans[k + 1]) if k + 1 < len(spans) else None
            probs = pending.result()
            pending = runner.submit(prob_fn, following) if following is not None else None
            passes += len(probs)
            for j, i in enumerate(range(start, stop)):
                p = probs[j * per:(j + 1) * per, class_idx[i]]
                if known:
                    full, p = float(full_probs[i]), p
                else:
                    full, p = p[0], p[1:]
                gone, blurred = p[0], p[1]
                mids = p[2:].reshape(2, 2, n_steps - 1)  # (order, deletion/insertion, step)
                for o, suffix in enumerate(("", "_random")):
                    res["deletion" + suffix].append(np.r_[full, mids[o, 0], gone])
                    res["insertion" + suffix].append(np.r_[blurred, mids[o, 1], full])
    x = np.linspace(0, 1, n_steps + 1)
    out = {}
    for k, curves in res.items():
        c = np.asarray(curves, dtype=float).reshape(n, n_steps + 1)
        out[f"{k}_auc"] = np.trapezoid(c, x, axis=1)
        out[f"{k}_curves"] = c
        out[f"{k}_curve"] = c.mean(axis=0) if n else np.full(n_steps + 1, np.nan)
    out["fraction"] = x
    out["passes"] = passes
    return out
