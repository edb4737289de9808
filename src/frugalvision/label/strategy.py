"""Which images to label next: pure functions on embeddings (no files, no state).

* :func:`selection_space` - the space every choice is made in: CL2N embeddings (centred on the pool mean,
  L2-normalised) projected on their first principal components, computed once per pool.
* :func:`typiclust` - TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a Budget"): k-means
  with (labelled + wanted) clusters; take the clusters with the fewest labelled images (largest first) and in each
  the most *typical* image (inverse mean distance to its nearest neighbours in the cluster). Diverse, typical
  images: what a model with almost no labels learns most from.
* :func:`margin` - uncertainty sampling: the smallest gap between the two most probable classes.
* :func:`margin_diverse` - cluster-margin style (Citovsky et al. 2021): the ``pool_factor * n`` smallest margins,
  cut into ``n`` k-means clusters, the smallest margin of each: uncertain images that are not near-copies.
* :func:`random_order` - the baseline.

:func:`choose` is the strategy the labelling loop uses (``"auto"``): TypiClust while the labels are few, then
margin + diversity. The switch point was chosen with ``bench/label_loop.py`` (see the README, "Label less").
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STRATEGIES",
    "SWITCH_PER_CLASS",
    "choose",
    "margin",
    "margin_diverse",
    "margins",
    "random_order",
    "selection_space",
    "typiclust",
]

STRATEGIES = ("auto", "typiclust", "margin", "margin_diverse", "random")
#: ``auto`` uses TypiClust until there are this many labels per class, then margin + diversity
#: (bench/label_loop.py).
SWITCH_PER_CLASS = 5
#: TypiClust's cap on the number of clusters (the paper's choice for CIFAR-sized pools), and its neighbours.
MAX_CLUSTERS = 500
TYPICALITY_NEIGHBOURS = 20
MIN_CLUSTER = 5


def selection_space(X: np.ndarray, dims: int = 64, seed: int = 0) -> np.ndarray:
    """CL2N embeddings projected on their first ``dims`` principal components (float32), re-normalised."""
    X = np.asarray(X, dtype=np.float32)
    Z = X - X.mean(axis=0)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    d = min(dims, Z.shape[1], max(len(Z) - 1, 1))
    if d < Z.shape[1]:
        from sklearn.utils.extmath import randomized_svd

        _, _, Vt = randomized_svd(Z - Z.mean(axis=0), d, random_state=seed, n_iter=3)
        Z = Z @ Vt.T.astype(np.float32)
        Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(Z, dtype=np.float32)


def _kmeans(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = max(1, min(k, len(Z)))
    if len(Z) > 4000:
        km = MiniBatchKMeans(k, random_state=seed, n_init=1, batch_size=2048, max_iter=50)
    else:
        km = KMeans(k, random_state=seed, n_init=1, max_iter=100)
    return km.fit_predict(Z)


def _typicality(Zc: np.ndarray) -> np.ndarray:
    """1 / mean distance to the nearest neighbours (within the given points)."""
    n = len(Zc)
    if n < 2:
        return np.ones(n)
    k = min(TYPICALITY_NEIGHBOURS, n - 1)
    d2 = np.maximum(2.0 - 2.0 * (Zc @ Zc.T), 0.0)  # unit vectors
    np.fill_diagonal(d2, np.inf)
    nn = np.partition(d2, k - 1, axis=1)[:, :k]
    return 1.0 / (np.sqrt(nn).mean(axis=1) + 1e-8)


def typiclust(Z: np.ndarray, labelled: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices of unlabelled rows of ``Z`` (``labelled``: boolean mask), chosen by TypiClust."""
    free = np.flatnonzero(~labelled)
    n = min(n, len(free))
    if n <= 0:
        return np.zeros(0, int)
    k = min(int(labelled.sum()) + n, MAX_CLUSTERS, len(Z))
    cluster = _kmeans(Z, k, seed)
    sizes = np.bincount(cluster, minlength=k)
    covered = np.bincount(cluster[labelled], minlength=k).astype(float)
    taken = labelled.copy()
    out = []
    for _ in range(n):
        avail = np.bincount(cluster[~taken], minlength=k)
        # fewest labels first, then the largest cluster; clusters too small to be typical of anything last
        order = np.lexsort((-sizes, sizes < MIN_CLUSTER, covered))
        c = next((c for c in order if avail[c] > 0), None)
        if c is None:
            break
        members = np.flatnonzero(cluster == c)
        typ = _typicality(Z[members])
        typ[taken[members]] = -np.inf
        pick = members[int(np.argmax(typ))]
        out.append(pick)
        taken[pick] = True
        covered[c] += 1
    return np.array(out, int)


def margins(proba: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (1 with a single class)."""
    if proba.shape[1] < 2:
        return np.ones(len(proba))
    part = np.partition(proba, -2, axis=1)
    return part[:, -1] - part[:, -2]


def margin(proba: np.ndarray, labelled: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` unlabelled rows with the smallest margin."""
    free = np.flatnonzero(~labelled)
    m = margins(proba[free])
    return free[np.argsort(m, kind="stable")[:n]]


def margin_diverse(Z: np.ndarray, proba: np.ndarray, labelled: np.ndarray, n: int, seed: int = 0,
                   pool_factor: int = 10) -> np.ndarray:
    """The smallest margin in each of ``n`` k-means clusters of the ``pool_factor * n`` smallest margins."""
    free = np.flatnonzero(~labelled)
    n = min(n, len(free))
    if n <= 0:
        return np.zeros(0, int)
    m = margins(proba[free])
    cand = free[np.argsort(m, kind="stable")[:pool_factor * n]]
    if len(cand) <= n:
        return cand
    cm = margins(proba[cand])
    cluster = _kmeans(Z[cand], n, seed)
    out = [int(cand[np.flatnonzero(cluster == c)[np.argmin(cm[cluster == c])]]) for c in np.unique(cluster)]
    if len(out) < n:  # k-means left a cluster empty: fill with the next smallest margins
        chosen = set(out)
        out += [int(i) for i in cand if int(i) not in chosen][:n - len(out)]
    return np.array(out, int)


def random_order(labelled: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    free = np.flatnonzero(~labelled)
    return np.random.default_rng(seed + int(labelled.sum())).permutation(free)[:n]


def choose(strategy: str, Z: np.ndarray, proba: np.ndarray | None, labelled: np.ndarray, n: int, *,
           n_classes: int, seed: int = 0, switch_per_class: int = SWITCH_PER_CLASS,
           n_labelled: int | None = None) -> tuple[np.ndarray, str]:
    """``(rows, how)``: ``n`` rows to label next with ``strategy`` (one of :data:`STRATEGIES`), and which rule
    chose them (``typical``, ``uncertain``, ``random``).

    ``proba`` is the current model's probabilities on every row (None before there is a model); the margin
    strategies fall back to TypiClust (``auto``, ``margin_diverse``) or random order (``margin``) without one.
    ``n_labelled`` (default: the rows in ``labelled``) is the count of class labels ``auto`` switches on.
    """
    n_labelled = int(labelled.sum()) if n_labelled is None else n_labelled
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
    if strategy == "random" or (strategy == "margin" and proba is None):
        return random_order(labelled, n, seed), "random"
    if strategy == "margin":
        return margin(proba, labelled, n), "uncertain"
    if strategy == "typiclust" or proba is None or (
            strategy == "auto" and n_labelled < switch_per_class * n_classes):
        return typiclust(Z, labelled, n, seed), "typical"
    return margin_diverse(Z, proba, labelled, n, seed), "uncertain"
