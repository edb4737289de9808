"""Beyond the arg-max: operating points, per-class ROC/PR curves, selective prediction, unknown images.

Numbers only (plots live in ``plots.py``); every interval is a percentile bootstrap over the evaluated
images with the same resamples as the rest of the evaluation.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from .bootstrap import percentile_ci

__all__ = ["class_curves", "selective_curve", "unknown_detection", "operating_point_report"]

COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def _boot(fn, idx, *arrays) -> tuple:
    """Percentile CI of ``fn(*arrays[i])`` over bootstrap index rows ``idx`` (resamples where it fails are skipped)."""
    import warnings

    vals = []
    for row in idx:
        try:
            with warnings.catch_warnings():  # a resample may hold one class only: skipped, not worth a warning
                warnings.simplefilter("ignore")
                v = fn(*(a[row] for a in arrays))
        except ValueError:
            continue
        if v is not None and np.isfinite(v):
            vals.append(v)
    return percentile_ci(np.asarray(vals)) if len(vals) >= 10 else (float("nan"), float("nan"))


def class_curves(y, proba, classes, idx, *, points: int = 101) -> list[dict]:
    """Per class, one-vs-rest: ROC AUC and average precision with CIs, and the curves (for plots)."""
    y = np.asarray(y)
    out = []
    for k, c in enumerate(classes):
        pos = (y == c)
        if pos.all() or not pos.any():
            out.append({"class": c, "roc_auc": None, "average_precision": None, "n_pos": int(pos.sum())})
            continue
        s = proba[:, k]
        fpr, tpr, _ = skm.roc_curve(pos, s)
        prec, rec, _ = skm.precision_recall_curve(pos, s)
        grid = np.linspace(0, 1, points)
        out.append({
            "class": c, "n_pos": int(pos.sum()), "n_neg": int((~pos).sum()),
            "roc_auc": float(skm.roc_auc_score(pos, s)),
            "roc_auc_ci": _boot(skm.roc_auc_score, idx, pos, s),
            "average_precision": float(skm.average_precision_score(pos, s)),
            "average_precision_ci": _boot(skm.average_precision_score, idx, pos, s),
            "roc": {"fpr": grid.tolist(), "tpr": np.interp(grid, fpr, tpr).tolist()},
            "pr": {"recall": grid.tolist(), "precision": _precision_at(grid, rec, prec).tolist()},
        })
    return out


def _precision_at(grid, rec, prec):
    # precision_recall_curve returns recall decreasing; the best precision reachable at >= each recall.
    order = np.argsort(rec)
    r, p = rec[order], prec[order]
    best = np.maximum.accumulate(p[::-1])[::-1]
    return np.array([best[np.searchsorted(r, g)] if g <= r[-1] else 0.0 for g in grid])


def selective_curve(correct, confidence, idx) -> list[dict]:
    """Accuracy on the images kept when only the most confident share (coverage) is kept, with CIs."""
    correct, confidence = np.asarray(correct, bool), np.asarray(confidence, float)
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for cov in COVERAGES:
        n = max(1, int(round(cov * len(order))))
        keep = np.zeros(len(order), bool)
        keep[order[:n]] = True
        rows.append({"coverage": cov, "n": n, "accuracy": float(correct[keep].mean()),
                     "accuracy_ci": _boot(lambda c, kp: c[kp].mean() if kp.any() else None, idx, correct, keep)})
    return rows


def unknown_detection(scores_known, scores_unknown, threshold=None, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """How well the "none of these" score separates known-class images from unknown ones.

    AUROC (unknown = positive), the share of unknown images still accepted when 95 % of known ones are
    (FPR at 95 % TPR, the OpenOOD convention), and at the model's own threshold: the share of unknown images
    rejected and of known images kept; each with a bootstrap CI (known and unknown resampled separately).
    """
    a, b = np.asarray(scores_known, float), np.asarray(scores_unknown, float)
    rng = np.random.default_rng(seed)

    def stats(a, b):
        y = np.r_[np.zeros(len(a)), np.ones(len(b))]
        s = np.r_[a, b]
        cut = np.quantile(a, 0.95)  # keep 95 % of the known images
        out = {"auroc": float(skm.roc_auc_score(y, s)), "fpr_at_95_tpr": float((b <= cut).mean())}
        if threshold is not None:
            out["unknown_rejected"] = float((b > threshold).mean())
            out["known_kept"] = float((a <= threshold).mean())
        return out

    point = stats(a, b)
    boots = [stats(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(n_boot)]
    return {**point, "n_known": int(len(a)), "n_unknown": int(len(b)), "threshold": threshold,
            **{f"{k}_ci": percentile_ci(np.array([x[k] for x in boots])) for k in point}}


def operating_point_report(op, y, pred, classes, idx) -> list[dict]:
    """For each target of the operating point: the value reached on these images (CI), and its cost in words."""
    if op is None:
        return []
    y, pred = np.asarray(y), np.asarray(pred)
    rows = []
    for t in op.targets:
        pos, said = (y == t.cls), (pred == t.cls)

        def value(p, s):
            d = p.sum() if t.metric == "recall" else s.sum()
            return (p & s).sum() / d if d else None

        v = value(pos, said)
        false_alarms = float((said & ~pos).sum() / max((~pos).sum(), 1))
        missed = float((~said & pos).sum() / max(pos.sum(), 1))
        ci = _boot(value, idx, pos, said)
        met = None if v is None else ("met" if ci[0] >= t.value else "not met" if ci[1] < t.value else "cannot tell")
        if t.metric == "recall":
            words = (f"To find {t.value:.0%} of {t.cls} images (found here: {_pct(v)}), expect about "
                     f"{100 * false_alarms:.0f} false alarms per 100 images of other classes.")
        else:
            words = (f"When it says {t.cls}, it should be right {t.value:.0%} of the time (here: {_pct(v)}); "
                     f"the price is {100 * missed:.0f} of every 100 {t.cls} images missed.")
        rows.append({"target": str(t), "value": v, "value_ci": ci, "verdict": met,
                     "threshold": (op.recall_thresholds if t.metric == "recall" else op.precision_thresholds)[t.cls],
                     "false_alarm_rate": false_alarms, "miss_rate": missed, "in_words": words,
                     "n": int(pos.sum() if t.metric == "recall" else said.sum())})
    return rows


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"
