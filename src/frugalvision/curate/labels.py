"""Likely label errors and atypical images.

Label errors: cleanlab's confident learning (``cleanlab.filter.find_label_issues`` and
``cleanlab.rank.get_label_quality_scores``, the calls Datalab's label check makes) on out-of-fold
probabilities of a linear head over the embeddings; the suggested label is the most likely class.

Atypical images: distance to the class centroid in embedding space, robust z-score within the class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["out_of_fold_proba", "label_issues", "class_outliers"]


def out_of_fold_proba(X, y, classes, folds: int = 5, seed: int = 0) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    from ..heads import LinearHead

    pred = np.zeros((len(y), len(classes)))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        head = LinearHead(C=0.01).fit(X[tr], y[tr])
        p = head.predict_proba(X[te])
        for j, c in enumerate(head.classes_):
            pred[te, classes.index(c)] = p[:, j]
    return pred


def label_issues(X: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0) -> pd.DataFrame | None:
    """Columns ``is_label_issue``, ``label_score``, ``predicted_label``, ``p_predicted``; None if too few rows."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    classes = sorted(set(y))
    if len(classes) < 2 or min(np.unique(y, return_counts=True)[1]) < folds:
        return None
    pred = out_of_fold_proba(X, y, classes, folds, seed)
    y_idx = np.array([classes.index(c) for c in y])
    # What Datalab's label issue manager runs (CleanLearning.find_label_issues -> filter.find_label_issues with
    # prune_by_noise_rate, rank.get_label_quality_scores); Datalab itself needs cleanlab[datalab] (the
    # `datasets` package), which is not a dependency here.
    iss = pd.DataFrame({"is_label_issue": find_label_issues(y_idx, pred, filter_by="prune_by_noise_rate"),
                        "label_score": get_label_quality_scores(y_idx, pred)})
    iss["p_predicted"] = pred.max(axis=1)
    iss["predicted_label"] = [classes[k] for k in pred.argmax(axis=1)]
    return iss[["is_label_issue", "label_score", "predicted_label", "p_predicted"]]


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
