"""Bias audit: every metric per subgroup, the largest gap with a bootstrap CI, small groups flagged.

Per-group numbers come from fairlearn's ``MetricFrame``; the gap's confidence interval
comes from a seeded bootstrap over test rows (the same resamples for every group).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .bootstrap import bootstrap_indices, percentile_ci

__all__ = ["group_audit", "class_gap", "MIN_GROUP_SIZE"]

#: Below this many test images a group's accuracy CI is wider than ±~15 points.
MIN_GROUP_SIZE = 30


def _metric_fns(classes):
    labels = list(classes)
    return {
        "accuracy": skm.accuracy_score,
        "balanced_accuracy": skm.balanced_accuracy_score,
        "macro_f1": lambda t, p: skm.f1_score(t, p, labels=labels, average="macro", zero_division=0),
        "macro_precision": lambda t, p: skm.precision_score(t, p, labels=labels, average="macro", zero_division=0),
        "macro_recall": lambda t, p: skm.recall_score(t, p, labels=labels, average="macro", zero_division=0),
    }


def group_audit(y_true, y_pred, groups, classes, *, n_boot: int = 1000, seed: int = 0,
                min_group_size: int = MIN_GROUP_SIZE) -> dict:
    """Metrics by group, group sizes, and the accuracy gap best vs worst judged group.

    Returns
    -------
    dict
        ``table`` (DataFrame: group, n, metrics..., accuracy CI, too_small), ``gap`` (best, worst,
        difference, CI), ``column`` is filled in by the caller.
    """
    from fairlearn.metrics import MetricFrame

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    g = pd.Series(np.asarray(groups, dtype=str)).replace({"": "(missing)", "nan": "(missing)"}).to_numpy()
    mf = MetricFrame(metrics=_metric_fns(classes), y_true=y_true, y_pred=y_pred, sensitive_features=g)
    table = mf.by_group.reset_index().rename(columns={"sensitive_feature_0": "group"})
    table.insert(1, "n", [int((g == k).sum()) for k in table["group"]])
    table["too_small"] = table["n"] < min_group_size
    correct = (y_true == y_pred).astype(float)
    idx = bootstrap_indices(len(y_true), n_boot, seed)
    boot_acc = {}
    for k in table["group"]:
        m = (g == k).astype(float)
        num = (correct[idx] * m[idx]).sum(axis=1)
        den = m[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_acc[k] = np.where(den > 0, num / den, np.nan)
    cis = [percentile_ci(boot_acc[k]) for k in table["group"]]
    table["accuracy_ci_low"] = [c[0] for c in cis]
    table["accuracy_ci_high"] = [c[1] for c in cis]
    judged = table[~table["too_small"]]
    gap = None
    if len(judged) >= 2:
        best = judged.loc[judged["accuracy"].idxmax()]
        worst = judged.loc[judged["accuracy"].idxmin()]
        diff = boot_acc[best["group"]] - boot_acc[worst["group"]]
        lo, hi = percentile_ci(diff)
        gap = {"best": str(best["group"]), "worst": str(worst["group"]),
               "best_accuracy": float(best["accuracy"]), "worst_accuracy": float(worst["accuracy"]),
               "difference": float(best["accuracy"] - worst["accuracy"]), "ci_low": lo, "ci_high": hi,
               "significant": bool(lo > 0)}
    return {"table": table, "gap": gap, "min_group_size": min_group_size,
            "too_small": [str(k) for k in table.loc[table["too_small"], "group"]]}


def class_gap(y_true, y_pred, classes, idx: np.ndarray) -> dict:
    """Worst vs best class recall with per-class and difference CIs from shared resamples."""
    y_true = np.asarray(y_true)
    correct = (y_true == np.asarray(y_pred)).astype(float)
    boots, point = {}, {}
    for c in classes:
        m = (y_true == c).astype(float)
        if m.sum() == 0:
            continue
        point[c] = float(correct[m > 0].mean())
        num = (correct[idx] * m[idx]).sum(axis=1)
        den = m[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boots[c] = np.where(den > 0, num / den, np.nan)
    best = max(point, key=point.get)
    worst = min(point, key=point.get)
    lo, hi = percentile_ci(boots[best] - boots[worst])
    return {"best": best, "worst": worst, "best_recall": point[best], "worst_recall": point[worst],
            "difference": point[best] - point[worst], "ci_low": lo, "ci_high": hi,
            "recall_ci": {c: percentile_ci(b) for c, b in boots.items()}}
