"""Honest evaluation: metrics with CIs, confusion, bias audit, calibration, mistakes: the code behind
``frugalvision.evaluation`` (its docstring says more).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from ..exceptions import DataError
from .bootstrap import bootstrap_indices, wilson_ci
from .groups import MIN_GROUP_SIZE, class_gap, group_audit
from .metrics import expected_calibration_error, headline_metrics, per_class_table, reliability_table
from .paired import PairedDifference, paired_difference
from .result import EvaluationResult

__all__ = ["evaluate", "evaluate_predictions", "EvaluationResult", "expected_calibration_error", "paired_difference",
           "PairedDifference", "compare_models", "CI_METHODS"]

#: Which interval each number of an evaluation carries.
CI_METHODS = {
    "accuracy": "Wilson", "per-class recall": "Wilson", "group accuracy": "Wilson",
    "per-group class recall/precision": "Wilson", "operating point value": "Wilson",
    "accuracy at a coverage": "Wilson", "unknown rejected / known kept": "Wilson",
    "class recall gap": "Newcombe (from two Wilson intervals)",
    "group accuracy gap": "Newcombe (from two Wilson intervals)",
    "per-group class gap": "Newcombe (from two Wilson intervals)", "ROC AUC / average precision": "bootstrap",
    "unknown AUROC / FPR at 95 % TPR": "bootstrap", "paired difference of two models": "paired bootstrap",
    "any bootstrap interval on fewer than 30 images": "none (too few to tell)",
}

_BASE_COLUMNS = {"path", "label", "split", "hash", "status", "reason"}


def evaluate(model, data=None, *, group_by=None, split: str = "test", n_boot: int = 1000, seed: int = 0,
             min_group_size: int = MIN_GROUP_SIZE, progress: bool = True, engine: str = "auto",
             cache_dir=None, unknown=None) -> EvaluationResult:
    """Evaluate ``model`` on its held-out split, or on any labelled folder/CSV.

    Parameters
    ----------
    model : Model
    data : path, optional
        Labelled folder or manifest. Default: the ``split`` rows of the model's ``split.csv``.
    group_by : str or list of str, optional
        Manifest columns to audit by (e.g. ``source``, ``country``).
    n_boot : int
        Bootstrap resamples for the intervals that are not a single proportion (seeded by ``seed``); single
        proportions get Wilson intervals.
    unknown : path, optional
        Images of none of the classes (a folder or files): how well the "none of these" score tells them
        from the evaluated images (AUROC, FPR at 95 % TPR, share rejected, accuracy-coverage with them).
    """
    table, balance = _rows(model, data, split)
    return _evaluate_rows(model, table, balance, group_by=group_by, n_boot=n_boot, seed=seed,
                          min_group_size=min_group_size, progress=progress, engine=engine, cache_dir=cache_dir,
                          unknown=unknown)


def _rows(model, data, split: str):
    """The labelled rows to evaluate on: ``data``, or the model's own held-out ``split``."""
    if data is None:
        return _held_out(model, split)
    from ..data.discover import discover

    table = discover(data)
    return table, table.groupby(["label"]).size().to_frame("evaluated")


def _evaluate_rows(model, table, balance, *, group_by=None, n_boot=1000, seed=0, min_group_size=MIN_GROUP_SIZE,
                   progress=True, engine="auto", cache_dir=None, unknown=None) -> EvaluationResult:
    from ..inference import decisions, probabilities, unusualness

    emb = model.embed(table["path"].tolist(), progress=progress, engine=engine, cache_dir=cache_dir)
    table = table[emb.ok].reset_index(drop=True)
    logits, proba = probabilities(model, emb.X)
    op = model.operating_point
    result = evaluate_predictions(table, proba, model.classes, group_by=group_by, n_boot=n_boot, seed=seed,
                                  min_group_size=min_group_size, balance=balance,
                                  proba_uncalibrated=_softmax(logits), decisions=decisions(model, proba, emb.X, logits))
    result.skipped = [{"path": p, "reason": r} for p, r in emb.failures]
    result.settings["precision_check"] = model.info.training.get("precision_check")
    scores, score_name = unusualness(model, emb.X, logits, proba)
    threshold = model.reject_thresholds  # one per class: an image meets that of its most probable class
    result.open_world.update(_open_world(result, op, scores, score_name, threshold, n_boot, seed))
    if unknown is not None:
        result.open_world["unknown"] = _unknown(model, unknown, scores, threshold, result, n_boot, seed,
                                                progress=progress, engine=engine, cache_dir=cache_dir)
    return result


def _open_world(result, op, scores, score_name, threshold, n_boot, seed) -> dict:
    from .open_world import class_curves, operating_point_report, selective_curve

    p = result.predictions
    y = p["true"].to_numpy()
    proba = np.stack([p[f"p_{c}"] for c in result.classes], 1) if len(p) else np.zeros((0, len(result.classes)))
    idx = bootstrap_indices(len(p), min(n_boot, 400), seed)
    out = {"unusualness_score": score_name,
           "curves": class_curves(y, proba, result.classes, idx),
           "operating_point": operating_point_report(op, y, p["pred"].to_numpy(), result.classes, idx),
           "selective": selective_curve(p["correct"].to_numpy(), -scores, idx)}
    if threshold is not None and len(p):
        kept = (p["pred"] != "unknown").to_numpy()  # the decision's own rejection, not a second reading of it
        out["rejection"] = {"threshold": dict(zip(result.classes, map(float, threshold))),
                            "rejected_share": float(1 - kept.mean()),
                            "accuracy_on_kept": float(p["correct"].to_numpy()[kept].mean()) if kept.any() else None,
                            "n": int(len(p))}
    return out


def _unknown(model, unknown, scores_known, threshold, result, n_boot, seed, **kw) -> dict:
    """Images of none of the classes against the evaluated ones."""
    from ..data.discover import list_image_files
    from ..inference import probabilities, unusualness
    from .open_world import selective_curve, unknown_detection

    emb = model.embed(list_image_files(unknown), **kw)
    if not emb.ok.any():
        raise DataError(f"None of the --unknown images under '{unknown}' could be read.")
    logits, proba = probabilities(model, emb.X)
    scores_unknown, _ = unusualness(model, emb.X, logits, proba)
    rows = None
    if threshold is not None:  # each image meets the threshold of its most probable class
        top_known = [list(model.classes).index(c) for c in result.predictions["most_probable"].astype(str)]
        rows = (threshold[top_known], threshold[proba.argmax(axis=1)])
    det = unknown_detection(scores_known, scores_unknown, rows, n_boot=min(n_boot, 400), seed=seed)
    if threshold is not None:
        det["threshold"] = dict(zip(model.classes, map(float, threshold)))
    # Accuracy-coverage with them mixed in: an unknown image kept is a mistake whatever its label.
    correct = np.r_[result.predictions["correct"].to_numpy(), np.zeros(len(scores_unknown), bool)]
    idx = bootstrap_indices(len(correct), min(n_boot, 400), seed)
    det["selective_with_unknown"] = selective_curve(correct, -np.r_[scores_known, scores_unknown], idx)
    det["skipped"] = len(emb.failures)
    return det


def _softmax(z):
    from ..heads import softmax

    return softmax(z)


def _split_table(model):
    """The model's train/val/test table (in memory, or its run's split.csv), or None when unknown."""
    in_memory = getattr(model, "data_", None)  # trained in this session without out=
    if in_memory is not None:
        return in_memory.table.astype({"split": str, "label": str})
    if model.run_dir is not None and (model.run_dir / "split.csv").exists():
        from .._io import read_csv

        return read_csv(model.run_dir / "split.csv")
    return None


def _held_out(model, split: str):
    df = _split_table(model)
    if df is None:
        raise DataError(
            "This model has no split.csv beside it, so its held-out test set is unknown. Pass a labelled folder "
            "or CSV to evaluate on (frugalvision evaluate MODEL --data DATA)."
        )
    balance = df.groupby(["label", "split"]).size().unstack(fill_value=0)
    balance = balance[[c for c in ("train", "val", "test") if c in balance.columns]]
    part = df[df["split"] == split].reset_index(drop=True)
    small = model.info.training.get("small_data")
    if part.empty and small:
        est = small.get("estimate") or {}
        said = (f"its cross-validated estimate is {100 * est['accuracy']:.1f} % (95 % Wilson CI "
                f"{100 * est['ci'][0]:.1f}-{100 * est['ci'][1]:.1f} %) on {est['n']} images"
                if est.get("accuracy") is not None else "no estimate was possible")
        raise DataError(f"This model was trained on the small-data path on every labelled image (--test-size 0), so it "
                        f"has no held-out {split} images; {said}. Evaluate it on other labelled images "
                        f"(frugalvision evaluate MODEL --data DIR), or train without --test-size 0.")
    if part.empty:
        raise DataError(f"split.csv has no '{split}' rows; splits present: {sorted(df['split'].unique())}.")
    return part, balance


def evaluate_predictions(table: pd.DataFrame, proba: np.ndarray, classes, *, group_by=None, n_boot: int = 1000,
                         seed: int = 0, min_group_size: int = MIN_GROUP_SIZE, balance=None,
                         proba_uncalibrated=None, decisions=None) -> EvaluationResult:
    """Every metric from a table (``path``, ``label``, metadata), its class probabilities and the model's
    :class:`~frugalvision.decision.Decisions` (default: the most probable class).

    ``pred`` is the decided label, ``unknown`` included: an image the model answered "none of these" counts as
    not correct, and ``per_class["unknown"]`` says how many of each class it answered so.
    """
    from ..decision import UNKNOWN, decide

    classes = [str(c) for c in classes]
    y = table["label"].astype(str).to_numpy()
    unknown = sorted(set(y) - set(classes))
    if unknown:
        raise DataError(f"Labels {unknown} are not classes of this model ({classes}); evaluate on the same classes.")
    dec = decide(proba, classes) if decisions is None else decisions
    pred = np.asarray(dec.names(), dtype=object).astype(str)
    head = headline_metrics(y, pred, proba, classes)
    correct = pred == y
    acc_ci = wilson_ci(int(correct.sum()), len(y))
    per_class = per_class_table(y, pred, classes)
    per_class["unknown"] = [int(((y == c) & (pred == UNKNOWN)).sum()) for c in classes]
    gap = class_gap(y, pred, classes)
    per_class["recall_ci_low"] = [gap["recall_ci"].get(c, (np.nan, np.nan))[0] for c in classes]
    per_class["recall_ci_high"] = [gap["recall_ci"].get(c, (np.nan, np.nan))[1] for c in classes]
    cm = confusion_matrix(y, pred, labels=classes)
    # "of": every test image of the class, those answered "unknown" too (the matrix's row leaves them out)
    of = [int((y == c).sum()) for c in classes]
    pairs = [{"true": classes[i], "predicted": classes[j], "count": int(cm[i, j]), "of": of[i],
              "rate": float(cm[i, j] / max(of[i], 1))}
             for i in range(len(classes)) for j in range(len(classes)) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda p: (-p["count"], -p["rate"]))
    preds = pd.DataFrame({
        "path": table["path"].to_numpy(), "true": y, "pred": pred,
        **{k: v for k, v in dec.columns().items() if k not in ("label", "ood_score")},
        "p_true": proba[np.arange(len(y)), [classes.index(t) for t in y]],
        "correct": correct,
        **{f"p_{c}": proba[:, k] for k, c in enumerate(classes)},
    })
    extra = [c for c in table.columns if c not in _BASE_COLUMNS]
    for c in extra:
        preds[c] = table[c].to_numpy()
    groups = {}
    for col in [group_by] if isinstance(group_by, str) else (group_by or []):
        if col not in table.columns:
            raise DataError(f"--group-by '{col}' is not a column of the data (columns: {extra or 'none beyond path,label'}). "
                            f"Add it to the CSV manifest.")
        groups[col] = group_audit(y, pred, table[col], classes, min_group_size=min_group_size)
    rel = reliability_table(y, proba, classes)
    calib = {"ece": expected_calibration_error(y, proba, classes)}
    if proba_uncalibrated is not None:
        calib["ece_uncalibrated"] = expected_calibration_error(y, proba_uncalibrated, classes)
    if balance is None:
        balance = table.groupby("label").size().to_frame("evaluated")
    return EvaluationResult(
        classes=classes, headline=head, accuracy_ci=acc_ci, per_class=per_class, confusion=cm,
        confused_pairs=pairs, predictions=preds, class_gap={k: v for k, v in gap.items() if k != "recall_ci"},
        calibration=calib, reliability=rel, balance=balance, groups=groups,
        settings={"n_boot": n_boot, "seed": seed, "min_group_size": min_group_size, "ci_level": 0.95,
                  "ci_methods": CI_METHODS},
    )


def compare_models(model_a, model_b, data=None, *, split: str = "test", n_boot: int = 2000, seed: int = 0,
                   progress: bool = True, engine: str = "auto", cache_dir=None):
    """Evaluate two models on the same images and compare them, paired.

    The images are ``data`` or, by default, model A's held-out ``split``. Refused when either model
    was trained or validated on any of them (by path, and by content hash where both tables have one),
    since that model's score would be optimistic. Returns ``(result_a, result_b, PairedDifference)``.
    """
    table, balance = _rows(model_a, data, split)
    for name, model in (("A", model_a), ("B", model_b)):
        seen = _split_table(model)
        if seen is None:
            continue
        seen = seen[seen["split"].isin(["train", "val"])]
        used = table["path"].astype(str).isin(set(seen["path"].astype(str)))
        if "hash" in table and "hash" in seen:
            used |= table["hash"].astype(str).isin(set(seen["hash"].astype(str)) - {""})
        if used.any():
            raise DataError(f"Model {name} was trained or validated on {int(used.sum())} of these {len(table)} images "
                            f"(e.g. {table.loc[used, 'path'].iloc[0]}), so its score there would be optimistic. "
                            f"Compare on images neither model learned from (--data), or train both on the same split.")
    kw = dict(n_boot=n_boot, seed=seed, progress=progress, engine=engine, cache_dir=cache_dir)
    ra, rb = (_evaluate_rows(m, table, balance, **kw) for m in (model_a, model_b))
    return ra, rb, paired_difference(ra, rb, n_boot=n_boot, seed=seed)
