"""Would more images help? Refit the head on 25/50/75/100 % of the training set and extrapolate.

The embeddings are cached, so a refit costs only the head (a fraction of a second for a linear head).
Each fraction is drawn per class (stratified) ``repeats`` times; every refit predicts the same test
images, so any metric (accuracy, a class's recall or precision) can be traced against the number of
training images, and resampling the test rows gives its uncertainty.

The extrapolation fits a power law with a floor, ``error = c + a * n ** -b`` (Hestness et al. 2017), to the mean
error at each fraction, and solves it for the number of images that reaches a goal (none when the floor is above
the goal). Repeating the fit on bootstrap resamples of the test images gives an interval for that number. Checked
against the truth (bench/learning_curve_check.py, fashion4): from curves at 5-50 images per class it predicted the
accuracy of the full 1,600-image set within -1.5 to +0.5 points on average (the plain power law: +1.6 to +5.0).
A law fitted on four points within a factor of four of data is a rough guide, and is reported as one.
"""

from __future__ import annotations

import numpy as np

from ..evaluation.bootstrap import MIN_BOOTSTRAP_N, percentile_ci

__all__ = ["refit_predictions", "metric_curve", "extrapolate", "learning_curve"]

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
#: Beyond this multiple of the current data, an extrapolation is not worth a number.
MAX_MULTIPLE = 10.0


def _subsample(y, frac, rng, min_per_class=2):
    idx = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        k = min(len(rows), max(min_per_class, int(round(frac * len(rows)))))
        idx.append(rng.choice(rows, k, replace=False))
    return np.sort(np.concatenate(idx))


def refit_predictions(X_tr, y_tr, X_te, make_head, *, fractions=FRACTIONS, repeats: int = 2, seed: int = 0,
                      decide_fn=None) -> dict:
    """Predicted test labels of heads refitted on stratified fractions of the training rows.

    ``make_head()`` returns a fresh unfitted estimator; ``decide_fn(head, X_te)`` gives the decided labels
    (default: the head's most probable class). Returns ``{"fractions", "n_train": [...],
    "preds": [array (repeats_f, n_test) of labels, one per fraction]}``.
    """
    y_tr = np.asarray(y_tr).astype(str)
    rng = np.random.default_rng(seed)
    n_train, preds, kept = [], [], []
    for f in fractions:
        reps = 1 if f >= 1 else repeats
        rows, ns = [], []
        for _ in range(reps):
            idx = _subsample(y_tr, f, rng) if f < 1 else np.arange(len(y_tr))
            if len(np.unique(y_tr[idx])) < len(np.unique(y_tr)):
                continue
            head = make_head().fit(X_tr[idx], y_tr[idx])
            rows.append(np.asarray(head.predict(X_te) if decide_fn is None else decide_fn(head, X_te)).astype(str))
            ns.append(len(idx))
        if rows and (not n_train or np.mean(ns) > n_train[-1] + 0.5):  # distinct sizes only (tiny classes)
            preds.append(np.stack(rows))
            n_train.append(float(np.mean(ns)))
            kept.append(f)
    return {"fractions": kept, "n_train": n_train, "preds": preds}


def _metric(target, y, pred):
    """accuracy / balanced_accuracy, or a class's recall / precision; None when undefined."""
    if target.get("cls") is None:
        if target["metric"] == "balanced_accuracy":
            recalls = [np.mean(pred[y == c] == c) for c in np.unique(y)]
            return float(np.mean(recalls)) if recalls else None
        return float(np.mean(pred == y)) if len(y) else None
    c = target["cls"]
    hit = (pred == c) & (y == c)
    den = (y == c).sum() if target["metric"] == "recall" else (pred == c).sum()
    return float(hit.sum() / den) if den else None


def metric_curve(lc: dict, target: dict, y_te, rows=None) -> list:
    """Mean metric over repeats at each fraction (on test ``rows``, default all)."""
    y = np.asarray(y_te).astype(str)
    if rows is not None:
        y = y[rows]
    out = []
    for P in lc["preds"]:
        vals = [_metric(target, y, p if rows is None else p[rows]) for p in P]
        vals = [v for v in vals if v is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


#: A rise from the smallest refit to the full training set whose 95 % interval stays below this many points is "flat".
FLAT_BELOW = 0.02


def trend(lc: dict, target: dict, y_te, *, n_boot: int = 400, seed: int = 0) -> dict:
    """Does the curve still rise? The change from the smallest refit to the full set, with a paired bootstrap over
    the test images (both ends are judged on the same images): ``rising`` when the interval is above 0, ``flat`` when
    it stays below :data:`FLAT_BELOW`, else ``unclear`` (too few test images to tell; a curve of 65 → 80 → 75 → 85 %
    on 20 images was called rising)."""
    y = np.asarray(y_te).astype(str)
    vals = metric_curve(lc, target, y)
    if len(vals) < 2 or vals[0] is None or vals[-1] is None or not len(y):
        return {"state": None, "change": None, "ci": [float("nan"), float("nan")], "n": int(len(y))}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot if len(y) >= MIN_BOOTSTRAP_N else 0):
        v = metric_curve(lc, target, y, rng.integers(0, len(y), len(y)))
        if v[0] is not None and v[-1] is not None:
            diffs.append(v[-1] - v[0])
    # no interval on fewer than 30 test images (the project's rule for a bootstrap): then it cannot tell
    lo, hi = percentile_ci(diffs, n=len(y)) if diffs else (float("nan"), float("nan"))
    state = "rising" if lo > 0 else "flat" if hi < FLAT_BELOW else "unclear"
    return {"state": state, "change": vals[-1] - vals[0], "ci": [lo, hi], "n": int(len(y))}


def fit_saturating(n, err, floor) -> tuple[float, float, float]:
    """``(c, a, b)`` of ``err = c + a * n**-b`` (a power law with a floor ``c >= 0``, Hestness et al. 2017):
    non-negative least squares for ``(c, a)`` at each exponent of a grid, the best exponent kept. Without the floor
    the law predicts error 0 with enough data (measured: +4 to +5 points too optimistic at 1,600 images from
    curves at 5-20 per class, bench/learning_curve_check.py)."""
    from scipy.optimize import nnls

    n, err = np.asarray(n, float), np.clip(np.asarray(err, float), floor, 1.0)
    best = None
    for b in np.linspace(0.1, 1.5, 29):
        A = np.c_[np.ones_like(n), n ** -b]
        coef, resid = nnls(A, err)
        if best is None or resid < best[0] - 1e-12:
            best = (resid, float(coef[0]), float(coef[1]), float(b))
    return best[1], best[2], best[3]


def predicted_value(c: float, a: float, b: float, n: float) -> float:
    """The metric the fitted saturating law predicts at ``n`` training images."""
    return float(1.0 - (c + a * float(n) ** -b))


def extrapolate(lc: dict, target: dict, goal: float, y_te, *, n_boot: int = 200, seed: int = 0) -> dict:
    """How many training images (all classes, in the current proportions) until ``target`` reaches ``goal``.

    Returns the curve, the power-law exponent, and ``multiple`` (needed / current, with an 80 % interval
    over test resamples). ``multiple`` is ``inf`` when the curve is flat or falling, ``<= 1`` when the goal
    is already reached at 100 %.
    """
    y = np.asarray(y_te).astype(str)
    n = np.asarray(lc["n_train"], float)
    n_now = float(n[-1]) if len(n) else float("nan")
    floor = 0.5 / max(len(y), 1)
    goal_err = max(1.0 - goal, floor)

    def needed(rows=None):
        vals = metric_curve(lc, target, y, rows)
        if any(v is None for v in vals) or len(vals) < 2:
            return None, vals, None
        err = [1.0 - v for v in vals]
        c, a, b = fit_saturating(n, err, floor)
        fitted.append((c, a, b))
        if vals[-1] >= goal:
            return 1.0, vals, b
        if a <= 0 or goal_err <= c:  # flat, or its floor is above the goal: more of the same data will not do
            return float("inf"), vals, b
        return float((a / (goal_err - c)) ** (1.0 / b)) / n_now, vals, b

    fitted: list = []
    point, vals, b = needed()
    ab = fitted[0] if fitted else None
    rng = np.random.default_rng(seed)
    sims = []
    for _ in range(n_boot):
        m, _, _ = needed(rng.integers(0, len(y), len(y)))
        if m is not None:
            sims.append(min(m, 1e6))
    lo, hi = (np.quantile(sims, [0.1, 0.9]).tolist() if len(sims) >= 20 else (float("nan"), float("nan")))
    rising = bool(ab is not None and ab[1] > 0 and vals and vals[-1] is not None and vals[0] is not None
                  and vals[-1] > vals[0])
    return {"target": target.get("name"), "goal": goal, "n_train": lc["n_train"], "values": vals,
            "exponent": b, "rising": rising, "saturating_law": ab,
            "predicted_at_10x": None if ab is None else predicted_value(*ab, 10 * n_now), "multiple": point, "multiple_interval": [lo, hi],
            "n_now": n_now,
            "images_needed": None if point is None or not np.isfinite(point) else float(point * n_now)}


class _SmallDataHead:
    """A small-data head (:mod:`frugalvision.small_data`) as an estimator for the refits."""

    def __init__(self, kind, C, classes, class_weight, seed):
        self.kind, self.C, self.classes_, self.class_weight, self.seed = kind, C, np.asarray(classes), class_weight, seed

    def fit(self, X, y):
        from ..small_data import _fit

        idx = np.array([list(self.classes_).index(v) for v in np.asarray(y).astype(str)])
        self.W, self.b = _fit(self.kind, self.C, np.asarray(X, np.float64), idx, len(self.classes_),
                              self.class_weight, self.seed)
        return self

    def logits(self, X):
        return np.asarray(X, np.float64) @ self.W.T + self.b

    def predict(self, X):
        return self.classes_[self.logits(X).argmax(1)]


def learning_curve(model, ev, *, engine: str = "auto", cache_dir=None, repeats: int = 2, seed: int = 0) -> dict | None:
    """Refits of ``model``'s head on its own training split, predicting the evaluated images.

    Returns None (with nothing computed) when the training split is unknown or its files cannot be read.
    """
    from ..evaluation._evaluate import _split_table
    from ..heads import HEADS

    table = _split_table(model)
    if table is None or ev.predictions.empty:
        return None
    tr = table[(table["split"].astype(str) == "train") & table["label"].astype(str).isin(model.classes)]
    if tr.empty:
        return None
    kw = {"progress": False, "engine": engine, "cache_dir": cache_dir}
    emb_tr = model.embed(tr["path"].tolist(), **kw)
    emb_te = model.embed(ev.predictions["path"].tolist(), **kw)
    if not emb_tr.ok.any() or emb_te.ok.sum() != len(ev.predictions):
        return None
    y_tr = tr["label"].astype(str).to_numpy()[emb_tr.ok]
    training = model.info.training
    recipe = training.get("recipe") or {}
    kind = recipe.get("head", "linear")
    params = dict(recipe.get("head_params") or {})
    if kind not in ("linear", "mlp"):
        return None
    if kind == "linear":
        params = {"C": training.get("C") or 0.01, "class_weight": recipe.get("class_weight"), **params}
    small = training.get("small_data")

    def make_head():
        if small:  # the small-data path's own head kind, refitted as it was chosen
            return _SmallDataHead(small["kind"], small["C"], model.classes, recipe.get("class_weight"), seed)
        return HEADS[kind](**params, random_state=seed)

    def decide_fn(head, X):
        # The model's own decision rule (temperature, "none of these", operating point) on the refit's scores, so
        # the curve measures what the verdict above it measures.
        from ..decision import decide
        from ..heads import softmax
        from ..ood import ood_score

        logits = head.logits(X)
        threshold = model.reject_thresholds
        scores = (ood_score(model.ood_state, np.asarray(X, np.float32), np.asarray(logits, np.float32))
                  if model.ood_state is not None and threshold is not None else None)
        return decide(softmax(logits / model.temperature), model.classes, operating_point=model.operating_point,
                      ood_scores=scores, reject_threshold=threshold).names()

    lc = refit_predictions(emb_tr.X, y_tr, emb_te.X, make_head, repeats=repeats, seed=seed, decide_fn=decide_fn)
    lc["y_test"] = ev.predictions["true"].astype(str).to_numpy()
    lc["head"] = kind
    lc["finetuned"] = bool(model.meta.get("finetune"))
    lc["augmented"] = bool((recipe.get("views") or 0) > 0)
    lc["class_counts"] = {str(c): int((y_tr == c).sum()) for c in model.classes}
    lc["X_test"] = emb_te.X  # reused by the data map (not written to JSON)
    return lc
