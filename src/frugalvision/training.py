"""``train``: folder or manifest -> cached embeddings -> fitted head -> saved model."""

from __future__ import annotations

import contextlib
import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import run_folder, write_json, write_text
from .backbones.registry import DEFAULT_BACKBONE
from .data.discover import discover
from .data.split import assign_splits
from .exceptions import DataError
from .features.extract import Extractor
from .heads import HEADS
from .model import Model

__all__ = ["train", "TrainingData", "embed_dataset"]


class TrainingData:
    """A dataset table joined with its embeddings: rows that decoded, with their split."""

    def __init__(self, table: pd.DataFrame, X: np.ndarray, skipped: pd.DataFrame, extractor: Extractor):
        self.table = table.reset_index(drop=True)
        self.X = X
        self.skipped = skipped
        self.extractor = extractor

    def part(self, split: str):
        m = (self.table["split"] == split).to_numpy()
        return self.X[m], self.table.loc[m, "label"].to_numpy(dtype=str), self.table[m]


def embed_dataset(data, extractor: Extractor, *, split_file=None, val_size=0.15, test_size=0.15, seed=0,
                  require_labels=True) -> TrainingData:
    """Discover ``data``, embed every file (cache first), and attach a reproducible split.

    ``split_file`` (a ``split.csv`` from an earlier run) fixes the split instead of drawing one.
    """
    df = data if isinstance(data, pd.DataFrame) else discover(data, require_labels=require_labels)
    emb = extractor(df["path"].tolist())
    skipped = pd.DataFrame(emb.failures, columns=["path", "reason"])
    good = df[emb.ok].copy()
    good["hash"] = [h for h, k in zip(emb.hashes, emb.ok) if k]
    if split_file is not None:
        fixed = pd.read_csv(split_file, dtype=str, keep_default_na=False)[["path", "split"]]
        good = good.drop(columns="split").merge(fixed, on="path", how="left")
        good["split"] = good["split"].fillna("")
    X = emb.X
    # assign_splits sorts by path; keep X aligned by carrying the row number.
    good["_row"] = np.arange(len(good))
    # Copies of one image (same content) and near-duplicate groups found by prepare stay inside one split,
    # so that no test image is also a training image.
    dup = good["duplicate_group"].astype(str) if "duplicate_group" in good.columns else pd.Series("", index=good.index)
    good["_together"] = dup.where(dup != "", "content:" + good["hash"].astype(str))
    good = assign_splits(good, val_size=val_size, test_size=test_size, seed=seed, group_col="_together")
    X = X[good["_row"].to_numpy()]
    good = good.drop(columns=["_row", "_together"])
    return TrainingData(good, X, skipped, extractor)


def embed_views(ex: Extractor, table: pd.DataFrame, policy: str, views: int, balance: bool = False):
    """Augmented-view embeddings for the rows of ``table``: ``(X_aug, y_aug, source_row)``.

    ``source_row`` indexes ``table`` (0..len-1), so callers keep views with their source image.
    """
    from .features.augment import augmented_decoder, view_name, views_per_class

    labels = table["label"].to_numpy(dtype=str)
    paths = table["path"].tolist()
    per_class = views_per_class(labels, views, balance)
    Xs, ys, src = [], [], []
    for k in range(max(per_class.values(), default=0)):
        rows = [i for i, lab in enumerate(labels) if per_class[lab] > k]
        emb = ex([paths[i] for i in rows], view=view_name(policy, k),
                 decoder=augmented_decoder(ex.preprocessing, policy, k, ex.max_pixels))
        ok_rows = np.asarray(rows)[emb.ok]
        Xs.append(emb.X)
        ys.append(labels[ok_rows])
        src.append(ok_rows)
    if not Xs:
        return np.zeros((0, ex.spec.embed_dim), np.float32), np.array([], dtype=str), np.array([], dtype=int)
    return np.vstack(Xs), np.concatenate(ys), np.concatenate(src)


def train(data, *, backbone: str = DEFAULT_BACKBONE, weights=None, out=None, head: str = "linear",
          head_params: dict | None = None, views: int = 0, augment: str = "default",
          balance_by_augmentation: bool = False, C="auto", class_weight=None, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0,
          engine: str = "auto", cache_dir=None, crop_pct: float | None = None, split_file=None,
          calibrate: bool = True, targets=None, reject: bool = True, accept_rate: float = 0.95,
          precision: str = "fp32", goals=None,
          progress: bool = True, overwrite: bool = False,
          extractor: Extractor | None = None) -> Model:
    """Train a classifier on a folder of class sub-folders or a CSV manifest.

    Parameters
    ----------
    data : path or DataFrame
        See :func:`frugalvision.data.discover`.
    backbone : str
        Registry name (``efficientnet_lite0`` default; ``frugalvision backbones`` lists them)
        or ``timm:<name>``.
    weights : path, optional
        Local backbone weights (.safetensors / .pth), for offline use of timm backbones.
    out : path, optional
        Run folder to write ``model.safetensors``, ``split.csv``, ``skipped.csv`` and
        ``training.json`` into. Existing files are never overwritten unless ``overwrite``.
    head : {'linear', 'mlp'}
    head_params : dict, optional
        Parameters of the head (``MLPHead(hidden=..., dropout=...)``; for linear, ``C`` below).
    views : int
        Augmented views per training image (cached like clean images); validation/test stay clean.
    augment : {'light', 'default', 'strong'}
        Augmentation policy of the views.
    balance_by_augmentation : bool
        Give minority classes more views, up to about the size of the largest class.
    C : float or 'auto'
        Inverse regularisation strength of the linear head; ``'auto'`` picks it from
        :data:`C_GRID` by validation log-loss.
    class_weight : {'balanced'} or None
    val_size, test_size : float
        Fractions held out (stratified, seeded). An existing ``train/``+``test/`` layout
        keeps its test set; validation then comes out of ``train/``.
    engine : {'auto', 'onnx', 'torch'}
    calibrate : bool
        Fit a softmax temperature on the validation split so probabilities mean what they say.
    precision : {'fp32', 'int8', 'auto'}
        ``int8`` runs the shipped quantized backbone (1.8x the images per second on an AVX2 CPU, ~2.3x with VNNI); ``auto`` uses it only when,
        on a sample of your images, its embeddings stay close to fp32 (cosine) and the validation accuracy
        of the fitted head does not drop by more than 0.5 point; else it keeps fp32 and says why
        (``model.training_["precision_check"]``).
    goals : list of str, optional
        What "good enough" means (``"accuracy>=0.9"``, ``"defective:recall>=0.9"``), stored with the model;
        the report gives its verdict against them unless told other goals.
    targets : list of str, optional
        Operating points, e.g. ``["defective:recall>=0.9"]``: per-class thresholds chosen on the validation
        split (see :mod:`frugalvision.decision`); predictions then follow them instead of the arg-max.
    reject : bool
        Fit the "none of these" score (:mod:`frugalvision.ood`) and label images beyond its threshold
        ``unknown``.
    accept_rate : float
        Share of in-distribution validation images the reject threshold keeps (0.95: 5 % of normal images
        are expected to come out ``unknown``).
    cache_dir : path, optional
        Embedding cache root (default ``~/.cache/frugalvision``).

    Returns
    -------
    Model
        With ``model.training_`` (summary: counts, validation accuracy per class, skipped files).

    Examples
    --------
    >>> model = frugalvision.train("data/", backbone="efficientnet_lite0", out="runs/first")  # doctest: +SKIP
    >>> model.predict(["new/photo.jpg"])  # doctest: +SKIP
    """
    C_requested = C
    if head not in ("linear", "mlp"):
        raise DataError(f"Unknown head '{head}'. Choose one of linear, mlp.")
    # One run at a time per folder, and nothing in it replaced unless asked (checked before any work).
    folder = run_folder(out, RUN_FILES, overwrite=overwrite) if out is not None else contextlib.nullcontext()
    with folder:
        t0 = _dt.datetime.now(_dt.timezone.utc)
        check = None
        if precision == "auto" and extractor is None:
            precision, check = _int8_drift_check(data, backbone, weights, engine, cache_dir, crop_pct, seed)
        elif precision not in ("fp32", "int8"):
            raise DataError(f"precision must be fp32, int8 or auto, got {precision!r}.")
        ex = extractor or Extractor(backbone, weights=weights, engine=engine, cache_dir=cache_dir, crop_pct=crop_pct,
                                    progress=progress, precision=precision)
        td = embed_dataset(data, ex, split_file=split_file, val_size=val_size, test_size=test_size, seed=seed)
        X_tr, y_tr, tr_table = td.part("train")
        if len(np.unique(y_tr)) < 2:
            raise DataError("The training split has fewer than 2 classes after skipping unreadable files.")
        n_aug = 0
        if views:
            Xa, ya, _ = embed_views(ex, tr_table, augment, views, balance_by_augmentation)
            X_tr, y_tr, n_aug = np.vstack([X_tr, Xa]), np.concatenate([y_tr, ya]), len(ya)
        X_va, y_va, _ = td.part("val")
        params = dict(head_params or {})
        c_curve = []
        if head == "linear":
            C, c_curve = _choose_C(params.pop("C", C), X_tr, y_tr, X_va, y_va, head, class_weight, seed)
            params = {"C": C, "class_weight": params.pop("class_weight", class_weight), **params}
        else:
            params.setdefault("class_weight", class_weight)
        est = HEADS[head](**params, random_state=seed).fit(X_tr, y_tr)
        summary = _summary(td, est, data)
        summary["C"] = params.get("C")
        summary["C_search"] = c_curve
        if check is not None and ex.precision == "int8":
            check.update(_int8_accuracy_check(ex, td, est, Extractor(backbone, weights=weights, engine=engine,
                                                                     cache_dir=cache_dir, crop_pct=crop_pct,
                                                                     progress=False)))
            if check["val_accuracy_drop"] > 0.005:  # more than half a point: keep fp32, and say why
                check.update(chosen="fp32", reason=f"int8 lost {100 * check['val_accuracy_drop']:.1f} points of "
                                                   f"validation accuracy (more than 0.5)")
                model = train(data, backbone=backbone, weights=weights, head=head, head_params=head_params,
                              views=views, augment=augment, balance_by_augmentation=balance_by_augmentation,
                              C=C_requested, class_weight=class_weight, val_size=val_size, test_size=test_size,
                              seed=seed, engine=engine, cache_dir=cache_dir, crop_pct=crop_pct,
                              split_file=split_file, calibrate=calibrate, targets=targets, reject=reject,
                              accept_rate=accept_rate, precision="fp32", progress=progress)
                model.training_["precision_check"] = model.info.training["precision_check"] = check
                if out is not None:
                    save_run(model, model.data_, Path(out), overwrite=overwrite)
                return model
        summary["precision_check"] = check
        summary["augmentation"] = {"policy": augment if views else None, "views": views,
                                   "balance_by_augmentation": balance_by_augmentation, "augmented_rows": n_aug}
        temperature = None
        if calibrate and len(y_va) >= 10:
            from .evaluate.calibration import fit_temperature

            classes = list(est.classes_)
            known = np.isin(y_va, classes)
            temperature = fit_temperature(est.logits(X_va[known]), [classes.index(c) for c in y_va[known]])
        if goals:
            from .report.verdict import parse_goal

            goals = [parse_goal(g, est.classes_)["name"] for g in ([goals] if isinstance(goals, str) else goals)]
        decisions = _decision_meta(est, temperature, X_tr[:len(tr_table)], y_tr[:len(tr_table)], X_va, y_va,
                                   targets=targets, reject=reject, accept_rate=accept_rate)
        meta = {
            "backbone": {"name": ex.spec.name, "timm_name": ex.spec.timm_name, "weights_id": ex.weights_id,
                         "weights_source": ex.spec.weights, "weights_file": str(weights) if weights else None,
                         "embed_dim": ex.spec.embed_dim, "cam_layer": ex.spec.cam_layer,
                         "pooled_is_plain_avg": ex.spec.pooled_is_plain_avg, "license": ex.spec.license,
                         "precision": ex.precision},
            "preprocessing": ex.preprocessing,
            "temperature": temperature,
            "training": {**summary, "started": t0.isoformat(timespec="seconds"),
                         "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         "settings": {"head": head, "head_params": params, "C_requested": C_requested,
                                      "class_weight": class_weight, "views": views,
                                      "augment": augment if views else None, "val_size": val_size,
                                      "test_size": test_size, "seed": seed},
                         "goals": list(goals or [])},
            "operating_point": decisions["operating_point"],
            "reject": decisions["reject"],
        }
        model = Model(est, meta)
        model.ood_state = decisions["ood_state"]
        model.training_ = summary
        model.data_ = td
        if out is not None:
            save_run(model, td, Path(out), overwrite=overwrite)
        return model


def _decision_meta(est, temperature, X_tr, y_tr, X_va, y_va, *, targets, reject: bool, accept_rate: float) -> dict:
    """The operating point (targets met on validation) and the fitted "none of these" score with its threshold.

    ``X_tr`` holds the clean training embeddings only (augmented views are not what predict will see).
    """
    from .heads import softmax

    if not 0 < accept_rate <= 1:
        raise DataError(f"accept_rate must be in (0, 1], got {accept_rate!r}: the share of normal images to keep.")
    classes = [str(c) for c in est.classes_]
    known = np.isin(y_va, classes)
    t = temperature or 1.0
    out = {"operating_point": None, "reject": None, "ood_state": None}
    if targets:
        from .decision import choose_operating_point

        proba_va = softmax(est.logits(X_va[known]) / t)
        out["operating_point"] = choose_operating_point(proba_va, y_va[known], classes, list(targets)).to_json()
    if reject:
        from .ood import fit_ood, ood_score, threshold_for_accept_rate

        state = fit_ood(X_tr, y_tr, est.logits(X_tr))
        threshold = None
        if known.sum():
            scores = ood_score(state, X_va[known], est.logits(X_va[known]))
            threshold = float(threshold_for_accept_rate(scores, accept_rate))
        out["ood_state"] = state
        out["reject"] = {"params": state.params(), "threshold": threshold, "accept_rate": accept_rate,
                         "n_validation": int(known.sum())}
    return out


#: ``precision='auto'``: int8 is used when, on up to this many of your images, the embeddings stay this close to fp32.
#: Measured on fashion4's 400 test images (bench/int8.py): the shipped graph (7-bit weights) gives the same integers on
#: every CPU, cosine mean 0.975, 1st percentile 0.913, and the same probe accuracy as fp32; an 8-bit-weight graph on a
#: CPU without VNNI (int16 saturation) gave mean 0.886, 1st percentile 0.70. The thresholds pass the first and stop
#: the second; the paired validation-accuracy check (0.5 point) then guards what matters.
INT8_SAMPLE, INT8_MIN_MEAN_COSINE, INT8_MIN_P1_COSINE = 200, 0.96, 0.88


def _int8_drift_check(data, backbone, weights, engine, cache_dir, crop_pct, seed) -> tuple[str, dict]:
    """``(precision, check)``: int8 unless its embeddings drift from fp32 on a sample of the images."""
    from .backbones.shipped import shipped_graph

    spec_name = Extractor(backbone, weights=weights, cache_dir=cache_dir).spec.name
    if weights is not None or shipped_graph(f"{spec_name}.int8") is None:
        return "fp32", {"chosen": "fp32", "reason": f"no int8 graph ships for '{spec_name}'" +
                        (" with your own weights" if weights is not None else "")}
    df = data if isinstance(data, pd.DataFrame) else discover(data)
    paths = df["path"].sample(n=min(INT8_SAMPLE, len(df)), random_state=seed).tolist()
    kw = dict(weights=weights, engine=engine, cache_dir=cache_dir, crop_pct=crop_pct, progress=False)
    a, b = Extractor(backbone, **kw)(paths), Extractor(backbone, precision="int8", **kw)(paths)
    both = a.ok & b.ok
    fa, fb = a.X[both[a.ok]], b.X[both[b.ok]]
    cos = (fa * fb).sum(1) / np.maximum(np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1), 1e-12)
    check = {"sample": int(len(cos)), "cosine_mean": float(cos.mean()) if len(cos) else None,
             "cosine_p1": float(np.quantile(cos, 0.01)) if len(cos) else None}
    if not len(cos) or check["cosine_mean"] < INT8_MIN_MEAN_COSINE or check["cosine_p1"] < INT8_MIN_P1_COSINE:
        return "fp32", {**check, "chosen": "fp32", "reason": "int8 embeddings drift from fp32 on your images "
                        f"(cosine mean {check['cosine_mean']}, 1st percentile {check['cosine_p1']}; needs "
                        f">= {INT8_MIN_MEAN_COSINE} and >= {INT8_MIN_P1_COSINE})"}
    return "int8", {**check, "chosen": "int8", "reason": "int8 embeddings stay close to fp32 on your images"}


def _int8_accuracy_check(ex_int8, td, est, ex_fp32) -> dict:
    """Validation accuracy of the int8-fitted head on int8 vs fp32 embeddings of the same images (paired)."""
    X_va, y_va, table = td.part("val")
    if not len(y_va):
        return {"val_accuracy_drop": 0.0, "val_n": 0}
    fp = ex_fp32(table["path"].tolist())
    X_fp = fp.X
    keep = fp.ok
    acc_int8 = float(np.mean(est.predict(X_va[keep]) == y_va[keep]))
    acc_fp32 = float(np.mean(est.predict(X_fp) == y_va[keep]))
    return {"val_accuracy_int8": acc_int8, "val_accuracy_fp32": acc_fp32,
            "val_accuracy_drop": acc_fp32 - acc_int8, "val_n": int(keep.sum())}


#: What ``train`` writes into its ``out`` folder; all of it is checked before any work starts.
RUN_FILES = ("model.safetensors", "split.csv", "skipped.csv", "training.json")


def save_run(model: Model, td: TrainingData, out: Path, *, overwrite: bool, extra_training: dict | None = None):
    """Write the run folder atomically: the model last, so a folder with a model file is complete."""
    write_text(out / "split.csv", td.table.to_csv(index=False))
    write_text(out / "skipped.csv", td.skipped.to_csv(index=False))
    write_json(out / "training.json", {**model.info.training, **(extra_training or {})})
    model.save(out / "model.safetensors", overwrite=overwrite)


#: Grid for ``C='auto'``; strong regularisation usually wins for linear probes on a few thousand images.
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
_DEFAULT_C = 0.01


def _choose_C(C, X_tr, y_tr, X_va, y_va, head, class_weight, seed):
    """``C='auto'``: the grid value with the lowest validation log-loss (the test split is never used)."""
    if C != "auto":
        if not isinstance(C, (int, float)) or C <= 0:
            raise DataError(f"C must be a positive number or 'auto', got {C!r}.")
        return float(C), []
    known = np.isin(y_va, np.unique(y_tr))
    if known.sum() < 10:
        return _DEFAULT_C, []
    from sklearn.metrics import log_loss

    curve = []
    heads = HEADS[head].fit_many([HEADS[head](C=c, class_weight=class_weight, random_state=seed) for c in C_GRID],
                                 X_tr, y_tr)
    for c, est in zip(C_GRID, heads):
        curve.append({"C": c, "val_log_loss": float(log_loss(y_va[known], est.predict_proba(X_va[known]),
                                                             labels=est.classes_))})
    best = min(curve, key=lambda r: r["val_log_loss"])
    return best["C"], curve


def _summary(td: TrainingData, est, source, val_pred=None) -> dict:
    """Counts, skipped files and validation accuracy; ``val_pred`` replaces ``est.predict`` on the frozen
    validation embeddings (a fine-tuned model predicts from its own network's embeddings)."""
    counts = td.table.groupby(["split", "label"]).size().unstack(fill_value=0)
    val = {}
    X_va, y_va, _ = td.part("val")
    if len(y_va):
        pred = est.predict(X_va) if val_pred is None else np.asarray(val_pred)
        val = {"accuracy": float(np.mean(pred == y_va)),
               "per_class": {c: float(np.mean(pred[y_va == c] == c)) for c in est.classes_ if (y_va == c).any()}}
    return {
        "source": str(source) if not isinstance(source, pd.DataFrame) else "<DataFrame>",
        "n_images": int(len(td.table)), "n_skipped": int(len(td.skipped)),
        "counts": {s: {str(k): int(v) for k, v in row.items()} for s, row in counts.iterrows()},
        "validation": val,
        "skipped": td.skipped.head(50).to_dict("records"),
    }
