"""Bias audit: every metric per subgroup, the largest gap with a CI, small groups flagged.

Per-group numbers come from fairlearn's ``MetricFrame``. Per-group accuracy and per-class recall and
precision carry Wilson intervals (they do not collapse to 100.0–100.0 for 50 of 50); the accuracy gap and the
per-class recall/precision gaps between groups get Newcombe's interval for a difference of two proportions,
which stays valid on small groups where a bootstrap of the gap collapses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .bootstrap import newcombe_diff_ci, wilson_ci
from .metrics import balanced_accuracy

__all__ = ["group_audit", "class_gap", "class_metrics_by_group", "MIN_GROUP_SIZE", "MIN_CLASS_IN_GROUP"]

#: Below this many test images a group's accuracy CI is wider than ±~15 points.
MIN_GROUP_SIZE = 30
#: A class's recall (precision) in a group is compared with other groups only from this many images of the
#: class in the group (predicted as the class, for precision); below it the interval spans most of 0-100 %.
MIN_CLASS_IN_GROUP = 5


def _metric_fns(classes):
    labels = list(classes)
    return {
        "accuracy": skm.accuracy_score,
        "balanced_accuracy": balanced_accuracy,
        "macro_f1": lambda t, p: skm.f1_score(t, p, labels=labels, average="macro", zero_division=0),
        "macro_precision": lambda t, p: skm.precision_score(t, p, labels=labels, average="macro", zero_division=0),
        "macro_recall": lambda t, p: skm.recall_score(t, p, labels=labels, average="macro", zero_division=0),
    }


def group_audit(y_true, y_pred, groups, classes, *, min_group_size: int = MIN_GROUP_SIZE) -> dict:
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
    n_correct = {k: int(correct[g == k].sum()) for k in table["group"]}
    cis = [wilson_ci(n_correct[k], int((g == k).sum())) for k in table["group"]]
    table["accuracy_ci_low"] = [c[0] for c in cis]
    table["accuracy_ci_high"] = [c[1] for c in cis]
    judged = table[~table["too_small"]]
    gap = None
    if len(judged) >= 2:
        best = judged.loc[judged["accuracy"].idxmax()]
        worst = judged.loc[judged["accuracy"].idxmin()]
        # Newcombe (two Wilson intervals): valid for small groups, where a bootstrap of the gap collapses.
        lo, hi = newcombe_diff_ci(n_correct[best["group"]], int((g == best["group"]).sum()),
                                  n_correct[worst["group"]], int((g == worst["group"]).sum()))
        gap = {"best": str(best["group"]), "worst": str(worst["group"]),
               "best_accuracy": float(best["accuracy"]), "worst_accuracy": float(worst["accuracy"]),
               "difference": float(best["accuracy"] - worst["accuracy"]), "ci_low": lo, "ci_high": hi,
               "significant": bool(lo > 0)}
    per_class, class_gaps = class_metrics_by_group(y_true, y_pred, g, classes)
    return {"table": table, "gap": gap, "min_group_size": min_group_size,
            "too_small": [str(k) for k in table.loc[table["too_small"], "group"]],
            "per_class": per_class, "class_gaps": class_gaps}


def class_metrics_by_group(y_true, y_pred, groups, classes, *, min_class_in_group: int = MIN_CLASS_IN_GROUP):
    """Recall and precision of every class in every group (fairlearn ``MetricFrame`` over one-vs-rest
    counts), with Wilson CIs, and per class and metric the largest gap between groups with Newcombe's CI.

    Returns
    -------
    (rows, gaps)
        ``rows``: one dict per (class, group): n (images of the class), recall (+ CI), n_predicted,
        precision (+ CI). ``gaps``: one dict per class and metric with at least two groups holding
        ``min_class_in_group`` images: best, worst, their values and sizes, difference (a fraction; shown
        in percentage points), ci_low/ci_high, significant (the CI excludes 0); largest difference first.
    """
    from fairlearn.metrics import MetricFrame

    y_true, y_pred, g = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    counts = {"tp": lambda t, p: int((t & p).sum()), "pos": lambda t, p: int(t.sum()),
              "said": lambda t, p: int(p.sum())}
    rows, gaps = [], []
    for c in classes:
        mf = MetricFrame(metrics=counts, y_true=(y_true == c), y_pred=(y_pred == c), sensitive_features=g)
        by = mf.by_group
        cls_rows = []
        for grp, r in by.iterrows():
            tp, pos, said = int(r["tp"]), int(r["pos"]), int(r["said"])
            rec_ci, prec_ci = wilson_ci(tp, pos), wilson_ci(tp, said)
            cls_rows.append({"class": str(c), "group": str(grp), "n": pos, "tp": tp,
                             "recall": tp / pos if pos else None, "recall_ci": list(rec_ci),
                             "n_predicted": said, "precision": tp / said if said else None,
                             "precision_ci": list(prec_ci)})
        rows.extend(cls_rows)
        for metric, den in (("recall", "n"), ("precision", "n_predicted")):
            judged = [r for r in cls_rows if r[den] >= min_class_in_group]
            if len(judged) < 2:
                continue
            best = max(judged, key=lambda r: r[metric])
            worst = min((r for r in judged if r is not best), key=lambda r: r[metric])
            lo, hi = newcombe_diff_ci(best["tp"], best[den], worst["tp"], worst[den])
            gaps.append({"class": str(c), "metric": metric, "best": best["group"], "worst": worst["group"],
                         "best_value": best[metric], "worst_value": worst[metric],
                         "n_best": best[den], "n_worst": worst[den],
                         "difference": best[metric] - worst[metric], "ci_low": lo, "ci_high": hi,
                         "significant": bool(lo > 0)})
    gaps.sort(key=lambda d: (-d["significant"], -d["difference"]))
    return rows, gaps


def class_gap(y_true, y_pred, classes) -> dict:
    """Worst vs best class recall, with Wilson intervals per class and Newcombe's for their difference."""
    y_true = np.asarray(y_true)
    correct = (y_true == np.asarray(y_pred)).astype(float)
    point = {c: float(correct[y_true == c].mean()) for c in classes if (y_true == c).any()}
    best = max(point, key=point.get)
    worst = min(point, key=point.get)
    # Newcombe's interval from the two Wilson intervals: valid on a handful of images, where a bootstrap of the
    # gap collapses (3 test images gave "100.0 to 100.0").
    n_of = {c: int((y_true == c).sum()) for c in point}
    k_of = {c: int(correct[y_true == c].sum()) for c in point}
    lo, hi = newcombe_diff_ci(k_of[best], n_of[best], k_of[worst], n_of[worst])
    return {"best": best, "worst": worst, "best_recall": point[best], "worst_recall": point[worst],
            "difference": point[best] - point[worst], "ci_low": lo, "ci_high": hi,
            # Wilson, not the bootstrap: 50 of 50 found gives 92.9-100 %, not 100-100 %.
            "recall_ci": {c: wilson_ci(int(correct[y_true == c].sum()), int((y_true == c).sum())) for c in point}}
