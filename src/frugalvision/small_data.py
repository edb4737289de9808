"""The small-data path: every labelled image fits the head, and cross-validation chooses it and says what to expect.

With a handful of images per class a held-out validation split costs a fifth of the data and judges thresholds
on one or two images. Here the candidates are scored by repeated stratified k-fold on all labelled images:

- **nearest centroid on CL2N embeddings** (SimpleShot, Wang et al. 2019): centre on the mean of the labelled
  embeddings, L2-normalise, class mean = prototype, cosine to the prototypes;
- **logistic regression on CL2N embeddings** (no intercept), for a few values of C;
- the usual **standardised logistic regression** (the large-data head), for a few values of C.

Every candidate is deployed as an exact linear head on raw embeddings, ``W x + b`` with ``b = -W c``: the
per-image normalisation ``1 / |x - c|`` scales all logits of an image alike, so without an intercept it never
changes the decided class; the temperature (fitted on the out-of-fold logits) sets the probabilities. So CAMs,
the exported graph and every consumer work unchanged. The out-of-fold predictions give the accuracy estimate
(Wilson interval on the number of images), and the operating point and "none of these" threshold are chosen on
them instead of on a validation split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .evaluation.bootstrap import wilson_ci

__all__ = ["SmallDataFit", "fit_small_data", "CANDIDATES", "FEW_SHOT_BELOW"]

#: The small-data path is chosen automatically when the smallest class has fewer labelled images than this.
#: Measured (bench/few_shot.py, fashion4, 20 draws): +17.5 points at 5 per class, +6.3 at 10, +2.1 at 20. From 20 on
#: the usual path is kept so that the run holds out test images the report can judge on; --few-shot uses the small
#: path at any size (it has no held-out images, its estimate is cross-validated).
FEW_SHOT_BELOW = 20

#: (name, kind, C): scored in this order, so that a tie keeps the simpler candidate.
CANDIDATES = (("nearest centroid (CL2N)", "centroid", None),
              ("logistic regression on CL2N, C=1", "cl2n", 1.0),
              ("logistic regression on CL2N, C=10", "cl2n", 10.0),
              ("logistic regression on CL2N, C=100", "cl2n", 100.0),
              ("standardised logistic regression, C=0.01", "standard", 0.01),
              ("standardised logistic regression, C=0.1", "standard", 0.1))


def _cl2n(X, c):
    Z = X - c
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def _fit(kind: str, C, X, y_idx, k: int, class_weight=None, seed: int = 0):
    """``(W, b)`` of one candidate on raw embeddings: logits ``X @ W.T + b``."""
    if kind == "standard":
        from .heads.linear import LinearHead

        h = LinearHead(C=C, class_weight=class_weight, random_state=seed).fit(X, y_idx)
        W = np.zeros((k, X.shape[1]))
        b = np.full(k, -1e4)  # a class absent from this fold can never win
        W[h.classes_.astype(int)], b[h.classes_.astype(int)] = h.coef_, h.intercept_
        return W, b
    c = X.mean(axis=0)
    Z = _cl2n(X, c)
    if kind == "centroid":
        W = np.zeros((k, X.shape[1]))
        for j in range(k):
            if (y_idx == j).any():
                m = Z[y_idx == j].mean(axis=0)
                W[j] = m / max(np.linalg.norm(m), 1e-12)
        b = -W @ c
        b[~np.isin(np.arange(k), y_idx)] = -1e4
        return W, b
    present, y_loc = np.unique(y_idx, return_inverse=True)
    if len(present) > 2:
        # scikit-learn's objective (no intercept) in float32 L-BFGS, as LinearHead: at 40 classes x 1,280
        # dimensions scikit-learn's float64 solver made the small-data path take ~12 s of a 240-image training.
        from sklearn.utils.class_weight import compute_sample_weight

        from .heads._numpy_fit import fit_softmax

        sw = compute_sample_weight(class_weight, y_idx) if class_weight is not None else None  # keys: all classes
        coef = fit_softmax(Z, y_loc, len(present), C=C, sample_weights=[sw], max_iter=2000, fit_intercept=False)[0][0]
    else:  # two classes: scikit-learn's binary (sigmoid) parametrisation, folded to softmax, as LinearHead
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, class_weight=class_weight).fit(Z, y_idx)
        coef = np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
    W = np.zeros((k, X.shape[1]))
    W[present] = coef
    b = -W @ c
    b[~np.isin(np.arange(k), present)] = -1e4
    return W, b


def _folds(y_idx, seed: int, repeats: int):
    """Repeated stratified k-fold (k = smallest class size, at most 5), or None when a class has one image."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    k = int(np.bincount(y_idx).min())
    if k < 2:
        return None, 0
    k = min(k, 5)
    return list(RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed).split(
        np.zeros(len(y_idx)), y_idx)), k


@dataclass
class SmallDataFit:
    """The chosen candidate, its weights, and what cross-validation says about it."""

    name: str
    kind: str
    C: float | None
    coef: np.ndarray
    intercept: np.ndarray
    oof_logits: np.ndarray | None      # out-of-fold logits (first repeat), aligned with the rows; None without CV
    oof_rows: np.ndarray | None        # which rows have out-of-fold logits
    scores: list = field(default_factory=list)  # per candidate: name, CV accuracy (mean over repeats)
    folds: int = 0
    repeats: int = 0
    estimate: dict = field(default_factory=dict)  # accuracy, n, Wilson CI, or the reason there is none

    def summary(self) -> dict:
        return {"head": self.name, "kind": self.kind, "C": self.C, "folds": self.folds, "repeats": self.repeats,
                "candidates": self.scores, "estimate": self.estimate}


def fit_small_data(X, y, classes, *, class_weight=None, seed: int = 0, repeats: int = 3) -> SmallDataFit:
    """Choose the head by repeated stratified k-fold CV on all of ``X`` (labels ``y`` among ``classes``)."""
    X = np.asarray(X, dtype=np.float64)
    classes = [str(c) for c in classes]
    y_idx = np.array([classes.index(str(v)) for v in y])
    k = len(classes)
    folds, n_splits = _folds(y_idx, seed, repeats)
    if folds is None:  # one image of some class: nothing to cross-validate on; SimpleShot's choice
        W, b = _fit("centroid", None, X, y_idx, k)
        return SmallDataFit("nearest centroid (CL2N)", "centroid", None, W, b, None, None, folds=0, repeats=0,
                            estimate={"accuracy": None, "n": len(y_idx),
                                      "reason": "a class has a single image: no cross-validation is possible"})
    scores, oof = [], {}
    for name, kind, C in CANDIDATES:
        right, total = 0, 0
        logits = np.zeros((len(y_idx), k))
        for f, (tr, te) in enumerate(folds):
            W, b = _fit(kind, C, X[tr], y_idx[tr], k, class_weight, seed)
            z = X[te] @ W.T + b
            right += int((z.argmax(1) == y_idx[te]).sum())
            total += len(te)
            if f < n_splits:
                logits[te] = z
        scores.append({"head": name, "cv_accuracy": right / total})
        oof[name] = logits
    best = max(range(len(CANDIDATES)), key=lambda i: (round(scores[i]["cv_accuracy"], 6), -i))
    name, kind, C = CANDIDATES[best]
    W, b = _fit(kind, C, X, y_idx, k, class_weight, seed)
    logits = oof[name]
    # The estimate is the chosen head's accuracy over every repeat (the number its row in the candidates shows; the
    # first repeat alone said 91.3 % where every candidate's mean was at most 89.5 %), its interval Wilson's on the
    # images (repeats of the same images are not more images).
    acc = float(scores[best]["cv_accuracy"])
    lo, hi = wilson_ci(int(round(acc * len(y_idx))), len(y_idx))
    est = {"accuracy": acc, "n": len(y_idx), "ci": [lo, hi], "ci_method": "Wilson",
           "cv_accuracy_all_repeats": scores[best]["cv_accuracy"],
           "note": (f"out-of-fold predictions of {n_splits}-fold cross-validation ({repeats} repeats chose the head; "
                    f"the head was chosen among {len(CANDIDATES)} on the same folds, so the estimate is slightly "
                    f"optimistic)")}
    return SmallDataFit(name, kind, C, W, b, logits, np.arange(len(y_idx)), scores=scores, folds=n_splits,
                        repeats=repeats, estimate=est)


def cv_ood_scores(X, y, classes, fit: SmallDataFit, seed: int = 0, hyper: dict | None = None):
    """Out-of-fold "none of these" scores of every row (the score fitted on the other folds), for the threshold.
    ``hyper``: the scorer's settings, the final scorer's (:func:`frugalvision.ood.knn_settings` of all the rows), so
    the threshold is on the scale the model scores new images on."""
    from .ood import fit_ood, knn_settings, ood_score

    hyper = hyper or knn_settings(len(y))
    X = np.asarray(X, dtype=np.float32)
    y_idx = np.array([list(classes).index(str(v)) for v in y])
    folds, n_splits = _folds(y_idx, seed, 1)
    if folds is None:
        return None
    out = np.zeros(len(y_idx), np.float32)
    for tr, te in folds:
        if hyper.get("method") == "knn":  # a distance to the other folds' images: no head needed
            state = fit_ood(X[tr], np.asarray(y)[tr], None, **hyper)
            out[te] = ood_score(state, X[te])
            continue
        W, b = _fit(fit.kind, fit.C, X[tr].astype(np.float64), y_idx[tr], len(classes), None, seed)
        state = fit_ood(X[tr], np.asarray(y)[tr], (X[tr] @ W.T + b).astype(np.float32), **hyper)
        out[te] = ood_score(state, X[te], (X[te] @ W.T + b).astype(np.float32))
    return out
