"""Beyond the arg-max: operating points, per-class ROC/PR curves, selective prediction, unknown images.

Numbers only (plots live in ``plots.py``). A share of images at a fixed threshold (the value an operating
point reaches, accuracy on the most usual share, unknown images rejected, known ones kept) gets a Wilson
interval, like every single proportion in frugalvision; what is not a simple proportion (ROC AUC, average
precision, the share accepted at a threshold set from the same images) gets a percentile bootstrap over
the evaluated images, vectorised over the resamples. Each result says which (``*_ci_method``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

from .bootstrap import percentile_ci, wilson_ci

__all__ = ["class_curves", "selective_curve", "unknown_detection", "operating_point_report", "roc_auc_rows",
           "average_precision_rows"]

COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def roc_auc_rows(pos: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``(B, n)`` labels and scores (ties count one half, as scikit-learn's);
    NaN for a row without both classes. The Mann-Whitney form: one ranking per row, no Python loop."""
    pos = np.atleast_2d(np.asarray(pos, bool))
    ranks = rankdata(np.atleast_2d(np.asarray(scores, float)), axis=1)
    n1 = pos.sum(axis=1)
    n0 = pos.shape[1] - n1
    u = (ranks * pos).sum(axis=1) - n1 * (n1 + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def average_precision_rows(pos: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step-wise definition, tied scores one threshold) of each row of
    ``(B, n)`` labels and scores; NaN for a row without positives."""
    pos = np.atleast_2d(np.asarray(pos, bool))
    s = np.atleast_2d(np.asarray(scores, float))
    order = np.argsort(-s, axis=1, kind="stable")
    s, y = np.take_along_axis(s, order, 1), np.take_along_axis(pos, order, 1)
    n = s.shape[1]
    tp = np.cumsum(y, axis=1)
    last = np.ones_like(y)
    last[:, :-1] = s[:, 1:] != s[:, :-1]  # the end of each run of tied scores is a threshold
    pos_idx = np.broadcast_to(np.arange(n), s.shape)
    end = np.minimum.accumulate(np.where(last, pos_idx, n)[:, ::-1], axis=1)[:, ::-1]  # its run's end
    precision_at_end = np.take_along_axis(tp, end, 1) / (end + 1)
    n1 = y.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n1 > 0, (precision_at_end * y).sum(axis=1) / n1, np.nan)


def _rows_ci(values, n: int) -> tuple:
    """Percentile CI of per-resample values (resamples where the statistic is undefined are skipped); none when
    the smaller side behind the statistic has fewer than MIN_BOOTSTRAP_N images."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return percentile_ci(v, n=n) if len(v) >= 10 else (float("nan"), float("nan"))


def class_curves(y, proba, classes, idx, *, points: int = 101) -> list[dict]:
    """Per class, one-vs-rest: ROC AUC and average precision with bootstrap CIs, and the curves (for plots)."""
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
            "roc_auc_ci": _rows_ci(roc_auc_rows(pos[idx], s[idx]), min(pos.sum(), (~pos).sum())),
            "average_precision": float(skm.average_precision_score(pos, s)),
            "average_precision_ci": _rows_ci(average_precision_rows(pos[idx], s[idx]), min(pos.sum(), (~pos).sum())),
            "ci_method": "bootstrap",
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


def selective_curve(correct, confidence, idx=None) -> list[dict]:
    """Accuracy on the images kept when only the most confident share (coverage) is kept, with Wilson CIs
    (``k`` right of the ``n`` kept). ``idx`` is accepted for compatibility and not used."""
    correct, confidence = np.asarray(correct, bool), np.asarray(confidence, float)
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for cov in COVERAGES:
        n = max(1, int(round(cov * len(order))))
        k = int(correct[order[:n]].sum())
        rows.append({"coverage": cov, "n": n, "accuracy": k / n if len(order) else float("nan"),
                     "accuracy_ci": wilson_ci(k, n if len(order) else 0), "ci_method": "Wilson"})
    return rows


def unknown_detection(scores_known, scores_unknown, threshold=None, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """How well the "none of these" score separates known-class images from unknown ones.

    AUROC (unknown = positive) and the share of unknown images still accepted when 95 % of known ones are
    (FPR at 95 % TPR, the OpenOOD convention), with bootstrap CIs (known and unknown resampled separately;
    the 95 % cut moves with the known sample, so that share is not a simple proportion); at the model's own
    threshold, fixed on validation, the share of unknown images rejected and of known images kept, with
    Wilson CIs. ``threshold``: one number, or ``(known, unknown)`` arrays of each image's own threshold (that of
    its most probable class).
    """
    a, b = np.asarray(scores_known, float), np.asarray(scores_unknown, float)
    rng = np.random.default_rng(seed)
    ia, ib = rng.integers(0, len(a), (n_boot, len(a))), rng.integers(0, len(b), (n_boot, len(b)))
    y = np.r_[np.zeros(len(a), bool), np.ones(len(b), bool)]
    cut = np.quantile(a, 0.95)  # keep 95 % of the known images
    out = {"auroc": float(skm.roc_auc_score(y, np.r_[a, b])), "fpr_at_95_tpr": float((b <= cut).mean())}
    ci = {"auroc_ci": _rows_ci(roc_auc_rows(np.broadcast_to(y, (n_boot, len(y))), np.c_[a[ia], b[ib]]),
                               min(len(a), len(b))),
          "fpr_at_95_tpr_ci": _rows_ci((b[ib] <= np.quantile(a[ia], 0.95, axis=1)[:, None]).mean(axis=1),
                                       min(len(a), len(b)))}
    methods = {"auroc": "bootstrap", "fpr_at_95_tpr": "bootstrap"}
    if threshold is not None:
        ta, tb = threshold if isinstance(threshold, tuple) else (threshold, threshold)
        rejected, kept = int((b > tb).sum()), int((a <= ta).sum())
        out.update(unknown_rejected=rejected / len(b), known_kept=kept / len(a))
        ci.update(unknown_rejected_ci=wilson_ci(rejected, len(b)), known_kept_ci=wilson_ci(kept, len(a)))
        methods.update(unknown_rejected="Wilson", known_kept="Wilson")
    shown = None if isinstance(threshold, tuple) else threshold  # per-image arrays are not a threshold to show
    return {**out, "n_known": int(len(a)), "n_unknown": int(len(b)), "threshold": shown, **ci, "ci_method": methods}


def operating_point_report(op, y, pred, classes, idx=None) -> list[dict]:
    """For each target of the operating point: the value reached on these images with its Wilson CI (a recall or
    a precision is a proportion: ``k`` of ``n``), the verdict, and its cost in words. ``idx`` is unused."""
    if op is None:
        return []
    y, pred = np.asarray(y), np.asarray(pred)
    rows = []
    for t in op.targets:
        pos, said = (y == t.cls), (pred == t.cls)

        k, n = int((pos & said).sum()), int(pos.sum() if t.metric == "recall" else said.sum())
        v = k / n if n else None
        false_alarms = float((said & ~pos).sum() / max((~pos).sum(), 1))
        missed = float((~said & pos).sum() / max(pos.sum(), 1))
        ci = wilson_ci(k, n)
        met = None if v is None else ("met" if ci[0] >= t.value else "not met" if ci[1] < t.value else "cannot tell")
        # What happened on these images, with its counts: "expect about 0 false alarms" beside a missed target
        # read as a promise.
        n_fa, n_other, n_missed = int((said & ~pos).sum()), int((~pos).sum()), int((~said & pos).sum())
        if t.metric == "recall":
            words = (f"Aiming to find {t.value:.0%} of {t.cls} images, it found {_pct(v)} here ({k} of {n}), at "
                     f"{100 * false_alarms:.0f} false alarms per 100 images of other classes ({n_fa} of {n_other}).")
        else:
            words = (f"Aiming to be right {t.value:.0%} of the time when it says {t.cls}, it was right {_pct(v)} "
                     f"here ({k} of {n}), missing {100 * missed:.0f} of every 100 {t.cls} images ({n_missed} of "
                     f"{int(pos.sum())}).")
        rows.append({"target": str(t), "value": v, "value_ci": ci, "ci_method": "Wilson", "verdict": met,
                     "threshold": (op.recall_thresholds if t.metric == "recall" else op.precision_thresholds)[t.cls],
                     "false_alarm_rate": false_alarms, "miss_rate": missed, "in_words": words, "n": n, "k": k})
    return rows


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"
