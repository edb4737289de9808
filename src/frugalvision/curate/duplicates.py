"""Near-duplicate pairs, checked pixel by pixel, and groups that cannot chain.

A near-duplicate is the *same picture* re-encoded (JPEG), resized (down to about 0.8x, or up) or
cropped by a small margin (up to about 15 % of the width, anywhere), possibly all three. Two images that
merely look alike - two different sneakers of one catalogue, one shape drawn at another place or in
another colour - are not near-duplicates, however close their embeddings.

Two steps:

1. **Candidates** (cheap): 16x16 grey thumbnails of each image and of a few crops of it
   (:data:`CROP_VARIANTS`); a pair's score is the best correlation between the whole of one image and
   the whole or a crop of the other. Each image keeps its ``k`` best partners (and, when embeddings are
   given, its ``k_embed`` nearest neighbours). Look-alikes are candidates too: among 2,000 distinct
   Fashion-MNIST images this gives about 3,600 candidate pairs, nearly all of different products.
   Up to :data:`EXACT_MAX` images every pair is scored; above, an inverted-file index (spherical k-means
   cells, each image searching its :data:`PROBES` nearest cells) scores about ``n^1.5`` pairs. On 10,000
   Fashion-MNIST training images it keeps 80 % of the all-pairs candidates (the rest are look-alikes at
   the margin of a top-3 among many) and every one of the 8 verified copies all pairs find, plus 2 more;
   15.7 s instead of 44.9 s for the candidates on a busy 2-core machine.
2. **Verification** (:func:`verify_pair`): one image is aligned onto the other - scale (crop or resize)
   and sub-pixel shift by template matching, at the lower of the two resolutions (at most
   :data:`WORK_SIDE` px) - and the pair is a copy when the aligned images correlate (``ncc >= 0.97``),
   their difference smoothed over 1.5 px (JPEG and resampling noise is fine-grained) averages at most
   2.5 grey levels and nowhere exceeds 9 after a 2.5-px smoothing (a seam, a print, a recoloured object
   does), and neither frame reaches beyond the other by more than 1.5 % (a copy lies inside the
   original; a shape drawn 3 px further left does not).

Measured by ``python bench/prepare_planted.py --verify-synthetic`` on 2,000 clean Fashion-MNIST images:
480 synthetic copies (JPEG q50-95 100 %, resize 0.75-2.5x 91 %, crops of 1-3 px at any position 99 %,
crop + resize 97.5 %, 1-px crop 100 %, 32-px JPEG 97.5 %) are verified at 97.5 %, and none of the 3,625
look-alike candidate pairs; of generated shapes on a plain background, 0 of 75 moved (1-6 px) and 0 of
75 recoloured pairs pass. Known misses: a copy whose brightness or contrast was changed (matching them
would make a recoloured object on a plain background a copy: 74 of 75 were in a trial), a crop
stretched to a new aspect ratio by more than about 2 % (about 60 % of the demo images are found), and
a shape drawn larger on a plain background passes (71 of 75: it *is* what a zoomed-in copy looks like).

Groups are built by **complete linkage** on the verified pairs: two groups merge only if *every* member
of one is near *every* member of the other, so A~B and B~C never put A and C together unless A~C.
Before grouping, every pair inside a connected set of verified pairs is verified too, so a group of five
copies is not split for want of a candidate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WORK_SIDE", "match_pixels", "crop_thumbnails", "candidate_pairs", "verify_pair", "near_pairs",
           "complete_linkage_groups"]

#: Longest side (px) of the grey image kept per file for verification.
WORK_SIDE = 64
THUMB = 16
#: (fraction of the side kept, anchor x, anchor y): crops whose thumbnails stand for cropped copies.
CROP_VARIANTS = ((0.92, 0.5, 0.5), (0.85, 0.5, 0.5), (0.9, 0.0, 0.0), (0.9, 1.0, 0.0), (0.9, 0.0, 1.0),
                 (0.9, 1.0, 1.0))
#: Verification: aligned correlation at least this, and the mean absolute difference after a Gaussian
#: smoothing of ``RESIDUAL_SIGMA`` px (grey levels) at most this ...
MIN_NCC, MAX_RESIDUAL, RESIDUAL_SIGMA = 0.97, 2.5, 1.5
#: ... and nowhere a difference larger than this after a wider smoothing (``LOCAL_SIGMA`` px): a small object
#: that changed colour on a plain background is not averaged away by the background ...
MAX_LOCAL, LOCAL_SIGMA = 9.0, 2.5
#: ... and neither image reaches beyond the other's frame by more than this fraction of its side
#: (a copy lies inside the original; a look-alike drawn 3 px to the left does not).
MAX_OVERHANG = 0.015
#: Scales tried: the copy covers this fraction of the other image's width (crops; 1.0 = same framing).
_COARSE = np.round(np.arange(1.0, 0.8449, -0.01), 3)


def match_pixels(img) -> np.ndarray:
    """Grey uint8 image, longest side at most :data:`WORK_SIDE` (area-averaged), from RGB uint8 or PIL."""
    import cv2

    arr = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)
    g = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY) if arr.ndim == 3 else arr
    h, w = g.shape
    s = WORK_SIDE / max(h, w)
    if s < 1:
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(g, np.uint8)


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.ravel() - v.mean()
    return v / (np.linalg.norm(v) + 1e-6)


def crop_thumbnails(grey: np.ndarray) -> np.ndarray:
    """``(1 + len(CROP_VARIANTS), 256)`` zero-mean unit-norm 16x16 thumbnails: the whole image, then its crops."""
    import cv2

    g = np.asarray(grey, np.float32)
    h, w = g.shape
    out = [_unit(cv2.resize(g, (THUMB, THUMB), interpolation=cv2.INTER_AREA))]
    for f, ax, ay in CROP_VARIANTS:
        cw, ch = max(1.0, w * f), max(1.0, h * f)
        x0, y0 = (w - cw) * ax, (h - ch) * ay
        # sub-pixel crop + area-like smoothing, then sample a 16x16 grid over the crop
        sigma = 0.5 * cw / THUMB
        src = cv2.GaussianBlur(g, (0, 0), sigma) if sigma > 0.6 else g
        m = np.float32([[cw / THUMB, 0, x0 + 0.5 * cw / THUMB - 0.5], [0, ch / THUMB, y0 + 0.5 * ch / THUMB - 0.5]])
        t = cv2.warpAffine(src, m, (THUMB, THUMB), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
        out.append(_unit(t))
    return np.stack(out).astype(np.float32)


#: Up to this many images, candidates come from every pair (exact); above it, from an inverted-file index.
EXACT_MAX = 4000
#: Inverted-file index over N vectors: ``CELLS_PER_ROOT·sqrt(N)`` cells (k-means on the unit sphere), and
#: each query visits its ``PROBES`` nearest cells: about ``N^1.5`` products instead of ``N²``.
CELLS_PER_ROOT, PROBES = 2.0, 12


def candidate_pairs(thumbs: np.ndarray, *, k: int = 3, min_score: float = 0.9, X: np.ndarray | None = None,
                    k_embed: int = 2, min_cos: float = 0.9, block: int = 256, index: str = "auto",
                    progress: bool = False) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, worth verifying.

    ``thumbs``: ``(n, V, 256)`` from :func:`crop_thumbnails`. A pair's score is the best correlation
    between the whole of one image and any crop of the other (or the whole); each image keeps its ``k``
    best partners scoring at least ``min_score``. With embeddings ``X``, each image also keeps its
    ``k_embed`` nearest neighbours with cosine at least ``min_cos``.

    ``index``: ``"exact"`` scores every pair (O(n²), used up to :data:`EXACT_MAX` images by ``"auto"``);
    ``"ivf"`` an inverted-file index (O(n^1.5) time, memory bounded by blocks): the whole thumbnail of
    each image is compared with the whole and crop thumbnails in its :data:`PROBES` nearest k-means cells
    (and the embedding with the embeddings there), so a pair is scored from both sides and kept when it
    is among either image's best.
    """
    n = len(thumbs)
    out: set[tuple[int, int]] = set()
    if n < 2:
        return out
    if index == "auto":
        index = "exact" if n <= EXACT_MAX else "ivf"
    if index not in ("exact", "ivf"):
        raise ValueError(f"index must be 'auto', 'exact' or 'ivf', got {index!r}")
    V = thumbs.shape[1]
    full = np.ascontiguousarray(thumbs[:, 0], dtype=np.float32)
    allv = np.ascontiguousarray(thumbs.reshape(n * V, -1), dtype=np.float32)
    kk = min(k, n - 1)
    Xn = None
    if X is not None and k_embed > 0:
        X = np.asarray(X, np.float32)
        Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if index == "ivf":
        found = []
        if kk > 0:
            found.append(_ivf_top(full, allv, np.repeat(np.arange(n), V), kk, min_score, progress, "thumbnails"))
        if Xn is not None:
            found.append(_ivf_top(Xn, Xn, np.arange(n), min(k_embed, n - 1), min_cos, progress, "embeddings"))
        for qi, j in found:
            lo, hi = np.minimum(qi, j), np.maximum(qi, j)
            out |= set(zip(lo.tolist(), hi.tolist()))
        return out
    for s in range(0, n, block):
        rows = np.arange(s, min(n, s + block))
        # best[i, j] = max over crops v of max(whole_i . crop_v(j), crop_v(i) . whole_j)
        best = (full[rows] @ allv.T).reshape(len(rows), n, V).max(axis=2)
        best = np.maximum(best, (allv[s * V:(s + len(rows)) * V] @ full.T).reshape(len(rows), V, n).max(axis=1))
        best[np.arange(len(rows)), rows] = -np.inf
        if kk <= 0:
            continue
        top = np.argpartition(-best, kk - 1, axis=1)[:, :kk]
        for r, i in enumerate(rows):
            for j in top[r]:
                if best[r, j] >= min_score:
                    out.add((min(int(i), int(j)), max(int(i), int(j))))
    if Xn is not None:
        ke = min(k_embed, n - 1)
        for s in range(0, n, block):
            cos = Xn[s:s + block] @ Xn.T
            cos[np.arange(len(cos)), np.arange(s, s + len(cos))] = -np.inf
            nn = np.argpartition(-cos, ke - 1, axis=1)[:, :ke]
            for r, row in enumerate(nn):
                for j in row:
                    if cos[r, j] >= min_cos:
                        i = s + r
                        out.add((min(i, int(j)), max(i, int(j))))
    return out


# Scores per block of an index cell: at most this many (queries x vectors) floats (16 MB).
_CELL_BLOCK = 4_000_000


def _spherical_kmeans(D: np.ndarray, n_cells: int, seed: int = 0, iters: int = 8, per_cell: int = 40) -> np.ndarray:
    """``(n_cells, d)`` unit centroids of unit rows ``D``, fitted on a sample of ``per_cell`` rows per cell."""
    rng = np.random.default_rng(seed)
    sample = D[rng.choice(len(D), min(len(D), n_cells * per_cell), replace=False)]
    C = sample[rng.choice(len(sample), n_cells, replace=False)].copy()
    for _ in range(iters):
        a = np.argmax(sample @ C.T, axis=1)
        sums = np.zeros_like(C)
        np.add.at(sums, a, sample)
        empty = np.linalg.norm(sums, axis=1) < 1e-9
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]  # reseed empty cells
        C = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return C.astype(np.float32)


def _ivf_top(Q: np.ndarray, D: np.ndarray, owner: np.ndarray, k: int, min_score: float, progress: bool,
             what: str) -> tuple[np.ndarray, np.ndarray]:
    """Each query row i's ``k`` best owners ``j != i`` by ``max over j's rows of Q[i] . D[row]`` (at least
    ``min_score``), searched in the :data:`PROBES` nearest cells of a k-means index over ``D``.

    ``owner[r]``: the image row ``r`` of ``D`` belongs to, non-decreasing. Returns ``(i, j)`` arrays.
    Time about ``n·PROBES·sqrt(len(D))/CELLS_PER_ROOT`` products instead of ``n·len(D)``; memory bounded by
    blocks.
    """
    from tqdm.auto import tqdm

    n = len(Q)
    n_cells = int(np.clip(round(CELLS_PER_ROOT * np.sqrt(len(D))), 1, len(D)))
    C = _spherical_kmeans(D, n_cells)
    probes = min(PROBES, n_cells)
    cell = np.empty(len(D), np.intp)
    for s in range(0, len(D), 8192):  # each vector in its nearest cell
        cell[s:s + 8192] = np.argmax(D[s:s + 8192] @ C.T, axis=1)
    visits = np.empty((n, probes), np.intp)
    for s in range(0, n, 8192):  # each query's nearest cells
        visits[s:s + 8192] = np.argpartition(-(Q[s:s + 8192] @ C.T), probes - 1, axis=1)[:, :probes]
    members = np.argsort(cell, kind="stable")  # by cell, then by row (so by owner inside a cell)
    bounds = np.searchsorted(cell[members], np.arange(n_cells + 1))
    vq = np.argsort(visits.ravel(), kind="stable")
    vbounds = np.searchsorted(visits.ravel()[vq], np.arange(n_cells + 1))
    qs, js, ss = [], [], []
    for c in tqdm(range(n_cells), desc=f"Near-duplicate candidates ({what})", unit="cell", disable=not progress,
                  dynamic_ncols=True, leave=False):
        m = members[bounds[c]:bounds[c + 1]]
        q = vq[vbounds[c]:vbounds[c + 1]] // probes
        if not len(m) or not len(q):
            continue
        own = owner[m]
        starts = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
        uown = own[starts]
        Dm = D[m]
        step = max(1, _CELL_BLOCK // len(m))
        for s in range(0, len(q), step):
            qb = q[s:s + step]
            S = Q[qb] @ Dm.T
            if len(starts) < len(m):
                S = np.maximum.reduceat(S, starts, axis=1)  # best of each owner's rows (crops)
            S[qb[:, None] == uown[None, :]] = -np.inf  # not itself
            kb = min(k, S.shape[1])
            top = np.argpartition(-S, kb - 1, axis=1)[:, :kb] if kb < S.shape[1] else \
                np.broadcast_to(np.arange(S.shape[1]), S.shape)
            sc = np.take_along_axis(S, top, axis=1)
            keep = sc >= min_score
            qs.append(np.broadcast_to(qb[:, None], top.shape)[keep])
            js.append(uown[top[keep]])
            ss.append(sc[keep])
    qi, j, sc = (np.concatenate(a) if a else np.zeros(0) for a in (qs, js, ss))
    if not len(qi):
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # One score per (query, owner) (an owner can sit in several cells), then each query's k best.
    o = np.lexsort((-sc, j, qi))
    qi, j, sc = qi[o], j[o], sc[o]
    first = np.r_[True, (qi[1:] != qi[:-1]) | (j[1:] != j[:-1])]
    qi, j, sc = qi[first], j[first], sc[first]
    o = np.lexsort((-sc, qi))
    qi, j = qi[o], j[o]
    start = np.searchsorted(qi, qi)  # first position of each query's run
    rank = np.arange(len(qi)) - start
    return qi[rank < k], j[rank < k]


def _scale_plan(P, Q, s, t=1.0):
    """How to bring P and Q to the lower of their resolutions, Q covering the fraction ``s`` of P's width and a
    region ``t`` times taller than Q's own aspect ratio says (a crop resized to a fixed shape):
    ``(which, (width, height))``, ``which`` 0 (resize P), 1 (resize Q) or None (neither); None if impossible.
    Cheap: the search skips a plan whose shapes it has seen (:func:`_first_time`) before paying for the resize."""
    hp, wp = P.shape
    hq, wq = Q.shape
    rw = s * wp
    rh = rw * hq / wq * t
    if rh > hp * 1.001 + 0.5:
        return None
    if wq > rw:  # Q is the finer one: bring it down to P's scale
        return 1, (max(4, round(rw)), max(4, round(rh)))
    fx, fy = wq / rw, hq / rh
    if abs(fx - 1) < 1e-6 and abs(fy - 1) < 1e-6:
        return None, (wq, hq)
    return 0, (max(4, round(wp * fx)), max(4, round(hp * fy)))


def _first_time(P, Q, plan, seen: set, *tag) -> bool:
    """Whether ``plan`` is possible and gives shapes (with ``tag``) not in ``seen``, which it then joins: small
    images round many scales to the same pixel sizes, and each is matched once."""
    if plan is None:
        return False
    which, (w, h) = plan
    key = (*tag, (h, w) if which == 0 else P.shape, (h, w) if which == 1 else Q.shape)
    if key in seen:
        return False
    seen.add(key)
    return True


def _at_scale(P, Q, plan):
    """P and Q resized as ``plan`` (from :func:`_scale_plan`) says."""
    import cv2

    which, size = plan
    if which == 1:
        return P, cv2.resize(Q, size, interpolation=cv2.INTER_AREA)
    if which == 0:
        return cv2.resize(P, size, interpolation=cv2.INTER_AREA), Q
    return P, Q


def _match(P, Q, sigma, subpixel=False):
    """Best normalised correlation of Q's interior (5 % margin) inside P: (ncc, dx, dy) or None."""
    import cv2

    m = max(1, round(0.05 * max(Q.shape)))
    if sigma:
        P, Q = cv2.GaussianBlur(P, (0, 0), sigma), cv2.GaussianBlur(Q, (0, 0), sigma)
    T = Q[m:Q.shape[0] - m, m:Q.shape[1] - m]
    if T.shape[0] < 3 or T.shape[1] < 3 or T.shape[0] > P.shape[0] or T.shape[1] > P.shape[1]:
        return None
    r = cv2.matchTemplate(P, T, cv2.TM_CCOEFF_NORMED)
    _, v, _, (x, y) = cv2.minMaxLoc(r)
    fx = fy = 0.0
    if subpixel and v > 0:  # parabola through the peak and its neighbours
        if 0 < x < r.shape[1] - 1:
            a, b, c = r[y, x - 1], r[y, x], r[y, x + 1]
            fx = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
        if 0 < y < r.shape[0] - 1:
            a, b, c = r[y - 1, x], r[y, x], r[y + 1, x]
            fy = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    if not np.isfinite(v):
        return None
    return float(v), x - m + min(0.5, max(-0.5, fx)), y - m + min(0.5, max(-0.5, fy))


def verify_pair(a: np.ndarray, b: np.ndarray, *, min_ncc: float = MIN_NCC, max_residual: float = MAX_RESIDUAL,
                min_coarse: float = 0.93) -> dict | None:
    """Align ``b`` onto ``a`` (or ``a`` onto ``b``) and measure how far they are from one picture.

    ``a``, ``b``: grey images from :func:`match_pixels`. Returns None when no alignment exists (flat image,
    shapes too different), else a dict: ``ncc`` (correlation of the aligned images), ``residual`` (mean
    absolute difference in grey levels after a Gaussian smoothing of :data:`RESIDUAL_SIGMA` px), ``local``
    (largest difference after a smoothing of :data:`LOCAL_SIGMA` px), ``overhang`` (how far, as a fraction
    of its side, one image reaches beyond the other's frame), ``scale`` (the fraction of one framing the
    other covers: 1.0 same framing, 0.9 a 10 % crop) and ``copy`` (all four within their limits).

    The search: both roles (which image is the crop), scales 1.0 to 0.85 in steps of 0.01 on blurred
    images (pairs whose best correlation stays below ``min_coarse`` stop there), then steps of 0.0025
    with a sub-pixel shift; when that is close but not a copy, also a region 2-4 % taller or wider (a crop
    resized to a fixed shape).
    """
    import cv2

    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if min(a.shape) < 6 or min(b.shape) < 6 or a.std() < 1.0 or b.std() < 1.0:
        return None

    def is_copy(r):
        return bool(r["ncc"] >= min_ncc and r["residual"] <= max_residual and r["local"] <= MAX_LOCAL
                    and r["overhang"] <= MAX_OVERHANG)

    blurred = (cv2.GaussianBlur(a, (0, 0), 1.0), cv2.GaussianBlur(b, (0, 0), 1.0))
    best, seen = None, set()
    for role in (0, 1):
        P, Q = blurred if role == 0 else blurred[::-1]
        for s in _COARSE:
            plan = _scale_plan(P, Q, float(s))
            if not _first_time(P, Q, plan, seen, role):
                continue
            mt = _match(*_at_scale(P, Q, plan), 0)
            if mt and (best is None or mt[0] > best[0]):
                best = (mt[0], role, float(s))
    if best is None:
        return None
    coarse, role, s0 = best
    if coarse < min_coarse:
        return {"ncc": coarse, "residual": float("inf"), "local": float("inf"), "overhang": 1.0, "scale": s0,
                "copy": False}
    P, Q = (a, b) if role == 0 else (b, a)
    r = _fine(P, Q, [(float(s), 1.0) for s in np.arange(min(1.0, s0 + 0.01), s0 - 0.0101, -0.0025)])
    if r is None:
        return None
    r["copy"] = is_copy(r)
    if not r["copy"] and r["ncc"] >= min_ncc - 0.03 and r["residual"] <= 3 * max_residual:
        # Close but not a copy: maybe a crop stretched to another shape (2-4 % taller or wider)
        s1 = r["scale"]
        r2 = _fine(P, Q, [(s1 + ds, t) for t in (0.96, 0.98, 1.02, 1.04) for ds in (-0.005, 0.0, 0.005)
                          if s1 + ds <= 1.0])
        if r2 is not None and is_copy(r2):
            r2["copy"] = True
            return r2
    return r


def _fine(P, Q, plan) -> dict | None:
    """Best sub-pixel alignment over ``plan`` [(scale, aspect)], and the differences it leaves."""
    import cv2

    fine, seen = None, set()
    for s, t in plan:
        how = _scale_plan(P, Q, s, t)
        if not _first_time(P, Q, how, seen):
            continue
        pq = _at_scale(P, Q, how)
        mt = _match(*pq, 0.5, subpixel=True)
        if mt and (fine is None or mt[0] > fine[0]):
            fine = (*mt, s, pq)
    if fine is None:
        return None
    ncc, dx, dy, s, (Pr, Qr) = fine
    hq, wq = Qr.shape
    warp = np.float32([[1, 0, dx], [0, 1, dy]])
    Pw = cv2.warpAffine(Pr, warp, (wq, hq), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.ones_like(Pr), warp, (wq, hq), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.999
    inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if inside.mean() < 0.6:
        return {"ncc": ncc, "residual": float("inf"), "local": float("inf"), "overhang": 1.0, "scale": s}
    d = np.where(inside, Pw - Qr, 0).astype(np.float32)
    w = inside.astype(np.float32)

    def smoothed(sigma):
        return np.abs(cv2.GaussianBlur(d, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(w, (0, 0), sigma), 1e-3))[inside]

    hp, wp = Pr.shape
    overhang = max(-dx, -dy, dx + wq - wp, dy + hq - hp, 0.0) / max(wq, hq)
    return {"ncc": ncc, "residual": float(smoothed(RESIDUAL_SIGMA).mean()), "local": float(smoothed(LOCAL_SIGMA).max()),
            "overhang": float(overhang), "scale": s}


def near_pairs(pixels: list, thumbs: np.ndarray, X: np.ndarray | None = None, *, min_ncc: float = MIN_NCC,
               max_residual: float = MAX_RESIDUAL, k: int = 3, min_thumb: float = 0.9, k_embed: int = 2,
               min_cos: float = 0.9, max_closure: int = 50, index: str = "auto",
               progress: bool = False) -> list[tuple[int, int, float]]:
    """Verified near-duplicate pairs ``(i, j, ncc)``, ``i < j``.

    ``pixels``: per image, the grey array of :func:`match_pixels`; ``thumbs``: ``(n, V, 256)`` of
    :func:`crop_thumbnails`; ``X``: embeddings (optional, more candidates). Every pair inside a connected
    set of verified pairs (up to ``max_closure`` images) is verified as well, for complete linkage.
    ``index``: how candidates are found (see :func:`candidate_pairs`).
    """
    from tqdm.auto import tqdm

    n = len(pixels)
    if n < 2:
        return []
    cand = candidate_pairs(thumbs, k=k, min_score=min_thumb, X=X, k_embed=k_embed, min_cos=min_cos, index=index,
                           progress=progress)
    done: dict[tuple[int, int], float | None] = {}

    def check(i, j):
        if (i, j) not in done:
            done[(i, j)] = _verify_chunk([(i, j)], pixels, min_ncc, max_residual)[0]
        return done[(i, j)]

    todo = sorted(cand)
    with tqdm(total=len(todo), desc="Verifying near-duplicate candidates", unit="pair",
              disable=not progress or len(todo) < 500, dynamic_ncols=True) as bar:
        for chunk, verdicts in _verified(todo, pixels, min_ncc, max_residual):
            done.update(zip(chunk, verdicts))
            bar.update(len(chunk))
    # Closure: verify every pair inside each connected set of verified pairs.
    parent = list(range(n))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (i, j), v in list(done.items()):
        if v is not None:
            parent[root(i)] = root(j)
    comps: dict[int, list[int]] = {}
    for i in {x for (a, b), v in done.items() if v is not None for x in (a, b)}:
        comps.setdefault(root(i), []).append(i)
    for members in comps.values():
        if 2 < len(members) <= max_closure:
            members.sort()
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    check(members[x], members[y])
    return sorted((i, j, v) for (i, j), v in done.items() if v is not None)


#: From this many candidate pairs on, they are verified in worker processes. A pair costs ~1.3 ms, mostly
#: Python between small OpenCV calls, so threads share one core through the GIL (10,000 Fashion-MNIST images,
#: 20,700 pairs: 23.9 s in this process, 14.4 s in two workers; the workers' start, ~1 s, pays from a few
#: thousand pairs).
PROCESS_FROM = 4096
_CHUNK = 512


def _verify_chunk(pairs, arrays, min_ncc, max_residual) -> list:
    """Verdicts (the ncc of a copy, else None) of ``pairs`` of keys into ``arrays``: one worker's chunk."""
    out = []
    for i, j in pairs:
        r = verify_pair(arrays[i], arrays[j], min_ncc=min_ncc, max_residual=max_residual)
        out.append(r["ncc"] if r and r["copy"] else None)
    return out


def _verified(todo: list, pixels: list, min_ncc: float, max_residual: float):
    """``(chunk, verdicts)`` over ``todo``, in order: in worker processes (:mod:`frugalvision._processes`) when there
    are many pairs, each chunk carrying only its own images; else in this process."""
    from .._processes import cores, process_map

    chunks = [todo[s:s + _CHUNK] for s in range(0, len(todo), _CHUNK)]
    workers = min(cores(), len(chunks))
    if len(todo) < PROCESS_FROM or workers < 2:
        for chunk in chunks:
            yield chunk, _verify_chunk(chunk, pixels, min_ncc, max_residual)
        return
    jobs = ((c, {k: pixels[k] for ij in c for k in ij}, min_ncc, max_residual) for c in chunks)
    yield from zip(chunks, process_map(_verify_chunk, jobs, workers))


def complete_linkage_groups(n: int, pairs) -> list[list[int]]:
    """Groups of size >= 2 in which every two members form a pair (greedy, strongest pairs first)."""
    near = {(a, b) if a < b else (b, a) for a, b, *_ in pairs}
    group_of = {}
    members: dict[int, set] = {}
    for a, b, *rest in sorted(pairs, key=lambda p: -(p[2] if len(p) > 2 else 1.0)):
        ga, gb = group_of.get(a, ("s", a)), group_of.get(b, ("s", b))
        if ga == gb:
            continue
        ma = members.get(ga, {a})
        mb = members.get(gb, {b})
        if all(((x, y) if x < y else (y, x)) in near for x in ma for y in mb):
            key = ("g", min(ma | mb))
            members.pop(ga, None)
            members.pop(gb, None)
            members[key] = ma | mb
            for x in members[key]:
                group_of[x] = key
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])
