"""Honest evaluation: metrics with bootstrap CIs, confusion, bias audit, calibration, mistakes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from .bootstrap import bootstrap_indices, percentile_ci
from .groups import MIN_GROUP_SIZE, class_gap, group_audit
from .metrics import expected_calibration_error, headline_metrics, per_class_table, reliability_table
from .paired import PairedDifference, compare_models, paired_difference
from .result import EvaluationResult

__all__ = ["evaluate", "evaluate_predictions", "EvaluationResult", "expected_calibration_error", "paired_difference",
           "PairedDifference", "compare_models"]

_BASE_COLUMNS = {"path", "label", "split", "hash", "status", "reason"}


def evaluate(model, data=None, *, group_by=None, split: str = "test", n_boot: int = 1000, seed: int = 0,
             min_group_size: int = MIN_GROUP_SIZE, progress: bool = True, engine: str = "auto",
             cache_dir=None) -> EvaluationResult:
    """Evaluate ``model`` on its held-out split, or on any labelled folder/CSV.

    Parameters
    ----------
    model : Model
    data : path, optional
        Labelled folder or manifest. Default: the ``split`` rows of the model's ``split.csv``.
    group_by : str or list of str, optional
        Manifest columns to audit by (e.g. ``source``, ``country``).
    n_boot : int
        Bootstrap resamples for confidence intervals (seeded by ``seed``).
    """
    table, balance = _rows(model, data, split)
    return _evaluate_rows(model, table, balance, group_by=group_by, n_boot=n_boot, seed=seed,
                          min_group_size=min_group_size, progress=progress, engine=engine, cache_dir=cache_dir)


def _rows(model, data, split: str):
    """The labelled rows to evaluate on: ``data``, or the model's own held-out ``split``."""
    if data is None:
        return _held_out(model, split)
    from ..data.discover import discover

    table = discover(data)
    return table, table.groupby(["label"]).size().to_frame("evaluated")


def _evaluate_rows(model, table, balance, *, group_by=None, n_boot=1000, seed=0, min_group_size=MIN_GROUP_SIZE,
                   progress=True, engine="auto", cache_dir=None) -> EvaluationResult:
    emb = model.embed(table["path"].tolist(), progress=progress, engine=engine, cache_dir=cache_dir)
    table = table[emb.ok].reset_index(drop=True)
    from ..inference import probabilities

    logits, proba = probabilities(model, emb.X)
    result = evaluate_predictions(table, proba, model.classes, group_by=group_by, n_boot=n_boot, seed=seed,
                                  min_group_size=min_group_size, balance=balance,
                                  proba_uncalibrated=_softmax(logits))
    result.skipped = [{"path": p, "reason": r} for p, r in emb.failures]
    return result


def _softmax(z):
    from ..heads import softmax

    return softmax(z)


def _split_table(model):
    """The model's train/val/test table (in memory, or its run's split.csv), or None when unknown."""
    in_memory = getattr(model, "data_", None)  # trained in this session without out=
    if in_memory is not None:
        return in_memory.table.astype({"split": str, "label": str})
    if model.run_dir is not None and (model.run_dir / "split.csv").exists():
        return pd.read_csv(model.run_dir / "split.csv", dtype=str, keep_default_na=False)
    return None


def _held_out(model, split: str):
    df = _split_table(model)
    if df is None:
        from ..exceptions import DataError

        raise DataError(
            "This model has no split.csv beside it, so its held-out test set is unknown. Pass a labelled folder "
            "or CSV to evaluate on (frugalvision evaluate MODEL --data DATA)."
        )
    balance = df.groupby(["label", "split"]).size().unstack(fill_value=0)
    balance = balance[[c for c in ("train", "val", "test") if c in balance.columns]]
    part = df[df["split"] == split].reset_index(drop=True)
    if part.empty:
        from ..exceptions import DataError

        raise DataError(f"split.csv has no '{split}' rows; splits present: {sorted(df['split'].unique())}.")
    return part, balance


def evaluate_predictions(table: pd.DataFrame, proba: np.ndarray, classes, *, group_by=None, n_boot: int = 1000,
                         seed: int = 0, min_group_size: int = MIN_GROUP_SIZE, balance=None,
                         proba_uncalibrated=None) -> EvaluationResult:
    """Every metric from a table (``path``, ``label``, metadata) and its class probabilities."""
    classes = [str(c) for c in classes]
    y = table["label"].astype(str).to_numpy()
    unknown = sorted(set(y) - set(classes))
    if unknown:
        from ..exceptions import DataError

        raise DataError(f"Labels {unknown} are not classes of this model ({classes}); evaluate on the same classes.")
    order = np.argsort(-proba, axis=1)
    pred = np.asarray(classes)[order[:, 0]]
    head = headline_metrics(y, pred, proba, classes)
    idx = bootstrap_indices(len(y), n_boot, seed)
    correct = pred == y
    acc_ci = percentile_ci(correct[idx].mean(axis=1))
    per_class = per_class_table(y, pred, classes)
    gap = class_gap(y, pred, classes, idx)
    per_class["recall_ci_low"] = [gap["recall_ci"].get(c, (np.nan, np.nan))[0] for c in classes]
    per_class["recall_ci_high"] = [gap["recall_ci"].get(c, (np.nan, np.nan))[1] for c in classes]
    cm = confusion_matrix(y, pred, labels=classes)
    pairs = [{"true": classes[i], "predicted": classes[j], "count": int(cm[i, j]), "of": int(cm[i].sum()),
              "rate": float(cm[i, j] / max(cm[i].sum(), 1))}
             for i in range(len(classes)) for j in range(len(classes)) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda p: (-p["count"], -p["rate"]))
    preds = pd.DataFrame({
        "path": table["path"].to_numpy(), "true": y, "pred": pred,
        "probability": proba[np.arange(len(y)), order[:, 0]],
        "top2": np.asarray(classes)[order[:, 1]] if len(classes) > 1 else "",
        "top2_probability": proba[np.arange(len(y)), order[:, 1]] if len(classes) > 1 else np.nan,
        "p_true": proba[np.arange(len(y)), [classes.index(t) for t in y]],
        "correct": correct,
    })
    extra = [c for c in table.columns if c not in _BASE_COLUMNS]
    for c in extra:
        preds[c] = table[c].to_numpy()
    groups = {}
    for col in [group_by] if isinstance(group_by, str) else (group_by or []):
        if col not in table.columns:
            from ..exceptions import DataError

            raise DataError(f"--group-by '{col}' is not a column of the data (columns: {extra or 'none beyond path,label'}). "
                            f"Add it to the CSV manifest.")
        groups[col] = group_audit(y, pred, table[col], classes, n_boot=n_boot, seed=seed, min_group_size=min_group_size)
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
        settings={"n_boot": n_boot, "seed": seed, "min_group_size": min_group_size, "ci_level": 0.95},
    )
