"""Matplotlib figures for evaluation (Agg backend, PNG bytes out; no screen needed)."""

from __future__ import annotations

import functools
import io
import textwrap

import numpy as np

__all__ = ["confusion_png", "reliability_png", "balance_png", "bar_png", "curves_png", "coverage_png",
           "learning_curve_png"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _wrap(name: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(str(name), width)) or str(name)


def confusion_png(cm: np.ndarray, classes) -> bytes:
    """Counts and row-normalised (recall) heatmaps side by side; long names wrap. Evaluate's file and the report
    draw the same figure: it is drawn once (~1 s of matplotlib layout) and the bytes reused."""
    cm = np.asarray(cm)
    return _confusion_png(cm.tobytes(), cm.shape, cm.dtype.str, tuple(str(c) for c in classes))


@functools.lru_cache(maxsize=4)
def _confusion_png(cm_bytes: bytes, shape: tuple, dtype: str, classes: tuple) -> bytes:
    cm = np.frombuffer(cm_bytes, dtype=dtype).reshape(shape)
    plt = _plt()
    k = len(classes)
    size = max(4.0, 0.6 * k + 2.5) if k <= 20 else 0.3 * k + 8.5  # no numbers in the cells past 20: half the room
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), layout="constrained")
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    for ax, data, title, fmt in ((axes[0], cm, "Counts", "d"), (axes[1], norm, "Row-normalised (recall)", ".2f")):
        # Cells drawn as a mesh, not an image: imshow resampled and coloured every output pixel (4.9 s at 40
        # classes, 28 s at 100), a mesh costs per cell.
        im = ax.pcolormesh(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xlim(0, k)
        ax.set_ylim(k, 0)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xticks(np.arange(k) + 0.5, [_wrap(c) for c in classes], rotation=45 if k > 4 else 0,
                      ha="right" if k > 4 else "center")
        ax.set_yticks(np.arange(k) + 0.5, [_wrap(c) for c in classes])
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    v = data[i, j]
                    ax.text(j + 0.5, i + 0.5, format(v, fmt), ha="center", va="center", fontsize=9,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8)
    return _png(fig)


def reliability_png(table) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    t = table[table["count"] > 0]
    centers = (t["bin_low"] + t["bin_high"]) / 2
    ax.bar(centers, t["accuracy"], width=(t["bin_high"] - t["bin_low"]) * 0.9, color="#4C78A8", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(t["confidence"], t["accuracy"], "o", color="#E45756", label="mean confidence")
    ax.set_xlabel("Confidence of the top class")
    ax.set_ylabel("Accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def balance_png(counts) -> bytes:
    """Grouped bars: images per class in each split (DataFrame index=class, columns=split)."""
    plt = _plt()
    classes = list(counts.index)
    splits = list(counts.columns)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(classes) + 2), 3.6))
    w = 0.8 / max(len(splits), 1)
    for i, s in enumerate(splits):
        ax.bar(np.arange(len(classes)) + i * w - 0.4 + w / 2, counts[s], width=w, label=s)
    ax.set_xticks(range(len(classes)), [_wrap(c) for c in classes], rotation=45 if len(classes) > 6 else 0)
    ax.set_ylabel("images")
    ax.legend()
    return _png(fig)


def bar_png(names, values, lows=None, highs=None, *, xlabel="", title="") -> bytes:
    """Horizontal bars with optional CI whiskers (per-class or per-group metrics)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))
    err = None
    if lows is not None:
        err = np.vstack([np.asarray(values) - np.asarray(lows), np.asarray(highs) - np.asarray(values)])
        err = np.clip(np.nan_to_num(err), 0, None)
    ax.barh(y, values, xerr=err, color="#4C78A8", capsize=3)
    ax.set_yticks(y, [_wrap(n, 24) for n in names])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    return _png(fig)


def curves_png(curves: list[dict], marks: dict | None = None) -> bytes | None:
    """ROC and precision-recall curves per class (one-vs-rest); ``marks``: class -> (recall, precision, fpr)
    of the operating point, drawn as a dot."""
    rows = [c for c in curves if c.get("roc")]
    if not rows:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for c in rows[:12]:
        name = _wrap(c["class"], 24)
        a1.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=f"{name} (AUC {c['roc_auc']:.3f})")
        a2.plot(c["pr"]["recall"], c["pr"]["precision"], label=f"{name} (AP {c['average_precision']:.3f})")
    for cls, (rec, prec, fpr) in (marks or {}).items():
        a1.plot([fpr], [rec], "ko")
        a2.plot([rec], [prec], "ko")
    a1.plot([0, 1], [0, 1], color="#bbb", lw=1, ls="--")
    a1.set(xlabel="false alarm rate (other classes taken for it)", ylabel="recall (share of the class found)",
           title="ROC per class")
    a2.set(xlabel="recall (share of the class found)", ylabel="precision (share right when it says so)",
           title="Precision-recall per class", ylim=(0, 1.02))
    for a in (a1, a2):
        a.legend(fontsize=7, loc="lower right")
    return _png(fig)


def coverage_png(selective: list[dict], with_unknown: list[dict] | None = None) -> bytes | None:
    """Accuracy on the images kept vs the share kept (most usual first), with CIs."""
    if not selective:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    for rows, label in ((selective, "test images"), (with_unknown, "test + unknown images")):
        if not rows:
            continue
        cov = [r["coverage"] for r in rows]
        acc = [r["accuracy"] for r in rows]
        lo = [r["accuracy_ci"][0] for r in rows]
        hi = [r["accuracy_ci"][1] for r in rows]
        ax.plot(cov, acc, marker="o", label=label)
        ax.fill_between(cov, lo, hi, alpha=0.2)
    ax.set(xlabel="share of images kept (the most usual first)", ylabel="accuracy on the images kept",
           title="Accuracy vs coverage")
    ax.legend(fontsize=8)
    return _png(fig)


def learning_curve_png(n_train, series: dict, goals: dict | None = None) -> bytes | None:
    """Metric vs training images (refits of the head on 25/50/75/100 %); dashed lines at the goals."""
    if not n_train or not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for i, (name, vals) in enumerate(list(series.items())[:8]):
        pts = [(n, v) for n, v in zip(n_train, vals) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=_wrap(name, 30), color=f"C{i}")
            g = (goals or {}).get(name)
            if g is not None:
                ax.axhline(g, color=f"C{i}", ls="--", lw=1)
    ax.set(xlabel="training images used", ylabel="on the test images", title="Learning curve",
           ylim=(max(0.0, min(v for vs in series.values() for v in vs if v is not None) - 0.1), 1.01))
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)
