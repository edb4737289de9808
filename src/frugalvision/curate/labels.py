"""Likely label errors and atypical images.

Label errors
    Out-of-fold class probabilities from two views of the embeddings: a linear head (multinomial
    logistic regression, the project's :class:`~frugalvision.heads.LinearHead`) and a
    k-nearest-neighbour vote (cosine, ``k`` = 20, neighbours from the other folds only). The label
    quality (manifest column ``label_quality``) is cleanlab's ``rank.get_label_quality_scores``
    (self-confidence) of their average. An image is flagged when *both* views reject its label: the
    linear head gives it less than 2 % and at most 1 of its 20 nearest neighbours carries it (and the
    average prefers another class, which becomes the suggested label).

    Why not cleanlab's confident-learning filter (``filter.find_label_issues``, what Datalab's label
    check runs)? It estimates how many labels are wrong from the confusion between classes, so on a data
    set with look-alike classes (shirt / t-shirt / pullover) it sends every ambiguous image to review:
    on 2,000 Fashion-MNIST images with 12 planted errors, Datalab flags 124 images and finds 10 of them
    (``bench/prepare_compare.py``); the rule above flags 31 and finds all 12.

Atypical images
    Distance to the class centroid in embedding space, robust z-score within the class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["out_of_fold_proba", "label_issues", "class_outliers", "MAX_P", "MAX_NEIGHBOUR_SHARE", "KNN_K"]

#: Flag a label when the linear head gives it less than this probability (out of fold) ...
MAX_P = 0.02
#: ... and at most this fraction of its ``KNN_K`` nearest neighbours carries it.
MAX_NEIGHBOUR_SHARE = 0.05
KNN_K = 20


def _folds(y_idx: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y_idx)), y_idx)


def _top_k(sims: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """``(rows, k)``: the columns of each row's ``k`` largest values (in no order), exactly.

    ``np.argpartition`` over a whole block of 2,048 x 40,000 similarities took 5.3 s here (65 ns a value). The
    k-th largest of a column sample is a floor for each row's k-th largest, so the rows' top k are among the few
    values above it (about ``k`` x the sample's share): only those are sorted. ``mask``: a reusable boolean
    buffer of ``sims``' shape.
    """
    n_rows, n = sims.shape
    if n <= 8 * k or n <= 2048:
        return np.argpartition(-sims, k - 1, axis=1)[:, :k]
    sample = sims[:, ::max(1, n // 1024)]
    floor = np.partition(sample, sample.shape[1] - k, axis=1)[:, -k]
    r, c = np.nonzero(np.greater_equal(sims, floor[:, None], out=mask))
    order = np.lexsort((-sims[r, c], r))
    r, c = r[order], c[order]
    rank = np.arange(len(r)) - np.searchsorted(r, r)  # place in its row, best first
    return c[rank < k].reshape(n_rows, k)


def out_of_fold_proba(X, y, classes, folds: int = 5, seed: int = 0, *, k: int = KNN_K,
                      parts: bool = False, progress: bool = False):
    """Out-of-fold probabilities ``(n, len(classes))``: mean of a linear head and a cosine kNN vote.

    ``parts=True`` returns ``(ensemble, linear, share)`` where ``share`` is the fraction of each row's
    ``k`` nearest neighbours (other folds) carrying each class. The linear head's ``C`` grows as the fold
    shrinks (``C = 16 / n``, at least 0.01, at most 1): its penalty per training row stays that of
    ``C = 0.01`` on 1,600 rows, so a small data set is not judged by a needlessly timid head.
    """
    from ..heads import LinearHead

    X = np.asarray(X, np.float32)
    col = {c: j for j, c in enumerate(classes)}
    y_idx = np.array([col[c] for c in np.asarray(y)])
    K = len(classes)
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    lin = np.zeros((len(y_idx), K))
    share = np.zeros((len(y_idx), K))
    from tqdm.auto import tqdm

    splits = list(_folds(y_idx, folds, seed))
    # One buffer each for the fold's rows, its neighbour bank, a similarity block and its mask, reused by every
    # fold: memory freed between folds goes back to the host here, and touching it again cost ~8 s a fold at 50k.
    n_tr, n_te, d = max(len(tr) for tr, _ in splits), max(len(te) for _, te in splits), X.shape[1]
    rows_buf, bank_buf = np.empty(n_tr * d, np.float32), np.empty(n_tr * d, np.float32)
    sims_buf, mask_buf = np.empty(min(1024, n_te) * n_tr, np.float32), np.empty(min(1024, n_te) * n_tr, bool)
    start = None
    for tr, te in tqdm(splits, desc="Label checks (out-of-fold)", unit="fold",
                       disable=not progress or len(y_idx) < 2000, dynamic_ncols=True):
        m, y_tr = len(tr), y_idx[tr]
        rows = np.take(X, tr, axis=0, out=rows_buf[:m * d].reshape(m, d), mode="clip")  # "raise" buffers a copy
        # Each fold starts from the previous fold's solution (they share most rows): 146 -> 64 L-BFGS
        # iterations a fold at 50k, to the same tolerance.
        init = start[1:] if start is not None and np.array_equal(start[0], np.unique(y_tr)) else None
        head = LinearHead(C=float(np.clip(16.0 / m, 0.01, 1.0))).fit(rows, y_tr, init=init, overwrite_X=True)
        start = (head.classes_, head.coef_std_, head.intercept_std_)
        lin[te[:, None], np.asarray(head.classes_, int)[None, :]] = head.predict_proba(X[te])
        kk = min(k, m)
        bank = np.take(Xn, tr, axis=0, out=bank_buf[:m * d].reshape(m, d), mode="clip")
        for s in range(0, len(te), 1024):
            block = te[s:s + 1024]
            sims = np.matmul(Xn[block], bank.T, out=sims_buf[:len(block) * m].reshape(len(block), m))
            nn = _top_k(sims, kk, mask_buf[:len(block) * m].reshape(len(block), m))
            votes = np.zeros((len(block), K))
            np.add.at(votes, (np.repeat(np.arange(len(block)), kk), y_tr[nn].ravel()), 1.0)
            share[block] = votes / kk
    knn = (share * k + 0.5 / K) / (k + 0.5)  # a little smoothing: no probability is exactly 0
    ens = (lin + knn) / 2
    return (ens, lin, share) if parts else ens


def label_issues(X: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, max_p: float = MAX_P,
                 max_share: float = MAX_NEIGHBOUR_SHARE, progress: bool = False) -> pd.DataFrame | None:
    """Columns ``is_label_issue``, ``label_score``, ``predicted_label``, ``p_predicted``, ``p_linear``,
    ``neighbour_share``; None if too few rows.

    ``label_score`` (cleanlab's self-confidence of the out-of-fold ensemble, in [0, 1]) ranks every row.
    ``is_label_issue``: the linear head gives the label less than ``max_p``, at most ``max_share`` of
    the nearest neighbours carry it, and the ensemble prefers another class.
    """
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(y)
    classes = sorted(set(y.tolist()))
    counts = np.unique(y, return_counts=True)[1]
    if len(classes) < 2 or counts.min() < 2:
        return None
    folds = int(min(folds, counts.min()))
    pred, lin, share = out_of_fold_proba(X, y, classes, folds, seed, parts=True, progress=progress)
    y_idx = np.array([classes.index(c) for c in y])
    rows = np.arange(len(y))
    score = get_label_quality_scores(y_idx, pred, method="self_confidence")
    top = pred.argmax(axis=1)
    flag = (lin[rows, y_idx] < max_p) & (share[rows, y_idx] <= max_share) & (top != y_idx)
    return pd.DataFrame({"is_label_issue": flag, "label_score": score,
                         "predicted_label": [classes[t] for t in top], "p_predicted": pred.max(axis=1),
                         "p_linear": lin[rows, y_idx], "neighbour_share": share[rows, y_idx]})


def class_outliers(X: np.ndarray, y: np.ndarray, z_max: float = 4.0) -> dict[int, float]:
    """``{row: z}`` for rows atypical of their own class (z > ``z_max``)."""
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    out = {}
    for c in sorted(set(y)):
        m = np.flatnonzero(y == c)
        if len(m) < 8:
            continue
        centre = Xn[m].mean(axis=0)
        d = 1 - Xn[m] @ (centre / np.linalg.norm(centre))
        mad = np.median(np.abs(d - np.median(d))) * 1.4826 + 1e-9
        z = (d - np.median(d)) / mad
        for i, zi in zip(m, z):
            if zi > z_max:
                out[int(i)] = float(zi)
    return out
