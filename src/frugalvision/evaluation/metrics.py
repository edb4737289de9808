"""Classification metrics: scikit-learn's, plus the few it lacks (ECE, reliability bins).

Names follow scikit-learn: ``*_score`` higher is better, ``*_error``/``*_loss`` lower is better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

__all__ = ["balanced_accuracy", "headline_metrics", "per_class_table", "expected_calibration_error", "reliability_table"]


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true``: scikit-learn's balanced accuracy, without its warning
    when a prediction ('unknown', "none of these") is no true class (it is simply not that class's recall)."""
    y_true = np.asarray(y_true)
    present = sorted(set(y_true.tolist()))
    return float(skm.recall_score(y_true, np.asarray(y_pred), labels=present, average="macro", zero_division=0))


def headline_metrics(y_true, y_pred, proba, classes, *, ks=(2, 3)) -> dict:
    """Accuracy, balanced accuracy, macro/weighted P/R/F1, top-k accuracy, ROC AUC, log-loss.

    Top-k accuracy is given only for ``1 < k < n_classes`` (with 2 classes "top-2" is always 100 %); ROC AUC
    (one-vs-rest, macro) only when every class occurs in ``y_true``.
    """
    y_true = np.asarray(y_true)
    labels = list(classes)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
    }
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out[avg] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    present = np.isin(y_true, labels)
    for k in ks:
        if 1 < k < len(labels):
            out[f"top{k}_accuracy"] = float(skm.top_k_accuracy_score(y_true[present], proba[present], k=k, labels=labels))
    if set(labels) <= set(y_true[present]):
        if len(labels) == 2:  # scikit-learn's binary form: the score of the second class
            out["roc_auc"] = float(skm.roc_auc_score(y_true[present] == labels[1], proba[present, 1]))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y_true[present], proba[present], labels=labels,
                                                     multi_class="ovr", average="macro"))
    out["log_loss"] = float(skm.log_loss(y_true[present], proba[present], labels=labels))
    return out


def per_class_table(y_true, y_pred, classes) -> pd.DataFrame:
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=list(classes), zero_division=0)
    return pd.DataFrame({"class": list(classes), "precision": p, "recall": r, "f1": f, "support": s.astype(int)})


def reliability_table(y_true, proba, classes, *, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width bins of top-1 confidence: count, mean confidence, accuracy."""
    conf = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == np.asarray(y_true)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(m.sum()),
                     "confidence": float(conf[m].mean()) if m.any() else np.nan,
                     "accuracy": float(correct[m].mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(y_true, proba, classes, *, n_bins: int = 10) -> float:
    """ECE: bin-size-weighted mean |accuracy - confidence| over top-1 confidence bins."""
    t = reliability_table(y_true, proba, classes, n_bins=n_bins)
    t = t[t["count"] > 0]
    return float((t["count"] * (t["accuracy"] - t["confidence"]).abs()).sum() / max(t["count"].sum(), 1))
