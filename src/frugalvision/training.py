"""``train``: folder or manifest -> cached embeddings -> fitted head -> saved model, following one recipe.

It chooses the path (frozen backbone, fine-tuning, or ``--precision auto``'s fp32-vs-int8 comparison) and writes
the run folder; the fitting itself is :mod:`frugalvision.fitting`'s, shared with :mod:`frugalvision.finetune`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import RUN_RECORD, csv_text, json_text, record_run_files, restore_on_error, run_folder, write_text
from .features.extract import Extractor
from .fitting import TrainingData, embed_dataset, fit_frozen, make_extractor
from .backbones.registry import DEFAULT_BACKBONE
from .model import Model
from .recipe import Recipe, as_recipe

__all__ = ["train", "finetune", "TrainingData", "embed_dataset", "compare_precisions", "save_run", "RUN_FILES"]


def train(data, recipe: Recipe | None = None, *, out=None, engine: str = "auto", cache_dir=None, split_file=None,
          progress: bool = True, overwrite: bool = False, extractor: Extractor | None = None,
          ray_options: dict | None = None, **options) -> Model:
    """Train a classifier on a folder of class sub-folders or a CSV manifest, following one :class:`Recipe`.

    Parameters
    ----------
    data : path or DataFrame
        See :func:`frugalvision.data.discover`.
    recipe : Recipe, optional
        Every training option (backbone, precision, fine-tuning, head, regularisation, views, splits, goals,
        targets, "none of these"), validated once; ``**options`` are its fields as keywords
        (``train("data/", backbone="efficientnet_lite1")``), applied on top of ``recipe``.
    out : path, optional
        Run folder to write ``model.safetensors``, ``split.csv``, ``skipped.csv`` and ``training.json`` into.
        A finished run (its model file) and files the user made are never overwritten unless ``overwrite``;
        the files of an interrupted run (recorded by the run, unchanged since, no model) are replaced.
    engine : {'auto', 'onnx', 'torch', 'ray'}
        ``'ray'``: the embeddings (clean and augmented views, fp32 and int8 for ``precision='auto'``) are extracted
        by Ray actors into the embedding cache, then the head is fitted here exactly as locally
        (:mod:`frugalvision.distributed.embed`); not with fine-tuning. The job summaries are in
        ``model.info.training['ray']``.
    cache_dir : path, optional
        Embedding cache root (default ``~/.cache/frugalvision``); with ``engine='ray'`` on several machines, a
        folder every node shares.
    ray_options : dict, optional
        With ``engine='ray'``: ``address``, ``actors``, ``cpus_per_actor``, ``shard_size``, ``object_store_mb``
        (see :func:`frugalvision.distributed.run_batch`).
    split_file : path, optional
        A ``split.csv`` from an earlier run: the same split instead of a new draw.

    Returns
    -------
    Model
        Its ``info.training`` holds the summary (counts, validation accuracy per class, skipped files, the recipe,
        the precision check).

    Examples
    --------
    >>> model = frugalvision.train("data/", backbone="efficientnet_lite0", out="runs/first")  # doctest: +SKIP
    >>> model = frugalvision.train("data/", frugalvision.Recipe(finetune="last-stage", targets=["bad:recall>=0.9"]))  # doctest: +SKIP
    """
    recipe = as_recipe(recipe, **options)
    _check_engine(engine, recipe)
    # One run at a time per folder, and nothing in it replaced unless asked (checked before any work).
    folder = run_folder(out, RUN_FILES, overwrite=overwrite, finished="model.safetensors") if out is not None else contextlib.nullcontext()
    run = dict(engine=engine, cache_dir=cache_dir, split_file=split_file, progress=progress)
    ray = dict(ray_options=ray_options) if engine == "ray" else {}
    with folder:
        t0 = _dt.datetime.now(_dt.timezone.utc)
        if recipe.finetune:
            from .finetune import finetune_model

            model = finetune_model(data, recipe, out=Path(out) if out is not None else None, **run)
        elif (precision := recipe.precision_in_effect(engine)) == "auto" and extractor is None:
            model = _train_auto_precision(data, recipe, **run, **ray)
        else:
            ex = extractor or make_extractor(recipe, precision, engine=engine,
                                             cache_dir=cache_dir, progress=progress, **ray)
            td, small = _embed(data, ex, recipe, split_file)
            model = fit_frozen(td, ex, recipe, data, small_data=small)
            if getattr(ex, "jobs", None):
                model.info.training["ray"] = list(ex.jobs)
        model.info.training.update(started=t0.isoformat(timespec="seconds"),
                                   finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        if out is not None:
            save_run(model, model.training_data, Path(out), overwrite=overwrite)
        return model


def _check_engine(engine: str, recipe: Recipe) -> None:
    """Refuse an engine ``train`` cannot run, with the reason, before any work."""
    from .exceptions import DataError
    from .features.engine import RUN_ENGINES

    if engine not in RUN_ENGINES:
        raise DataError(f"Unknown engine '{engine}'. Choose one of {', '.join(RUN_ENGINES)}.")
    if engine == "ray" and recipe.finetune:
        raise DataError("--engine ray extracts frozen-backbone embeddings on Ray actors and fits the head here; "
                        "--finetune trains the backbone itself (forward and backward passes through torch every "
                        "epoch, so there is no fixed embedding to extract once and reuse), which runs on one "
                        "machine. Drop --engine ray to fine-tune, or drop --finetune to train on Ray.")


def finetune(data, *, stages="last-stage", out=None, epochs: int = 24, views: int = 8, augment: str = "light",
             seed: int = 0, backbone: str = DEFAULT_BACKBONE, weights=None, engine: str = "auto", cache_dir=None,
             progress: bool = True, overwrite: bool = False, **finetune_params):
    """Fine-tune the last ``stages`` of the backbone: ``train(data, Recipe(finetune=stages, ...))`` in one call.

    ``finetune_params``: ``lr_backbone``, ``lr_head``, ``weight_decay``, ``batch_size``, ``patience``, ``schedule``
    (defaults :data:`frugalvision.recipe.FINETUNE_DEFAULTS`). For every other option (head, goals, targets,
    "none of these", splits) build a :class:`~frugalvision.recipe.Recipe` and call :func:`frugalvision.train`.
    """
    recipe = Recipe(backbone=backbone, weights=None if weights is None else str(weights), finetune=str(stages),
                    epochs=epochs, views=views, augment=augment, seed=seed, finetune_params=finetune_params)
    return train(data, recipe, out=out, engine=engine, cache_dir=cache_dir, progress=progress, overwrite=overwrite)


def _embed(data, ex: Extractor, recipe: Recipe, split_file):
    """Embed and split ``data``; returns ``(TrainingData, why)`` where ``why`` says why the small-data path runs
    (empty when it does not)."""
    from .data.discover import discover
    from .fitting import small_data_choice

    table = data if isinstance(data, pd.DataFrame) else discover(data)
    small, why = small_data_choice(table, recipe)
    val, test = recipe.split_sizes(small)
    td = embed_dataset(table, ex, split_file=split_file, val_size=val, test_size=test, seed=recipe.seed)
    if why and not small:
        td.notes.append(why)
    return td, why if small else ""


#: ``precision='auto'`` keeps int8 only when the int8 model loses at most this much against the fp32 model on the
#: same validation images: accuracy, and the recall or precision of every target.
INT8_MAX_LOSS = 0.005


def _train_auto_precision(data, recipe: Recipe, *, engine, cache_dir, split_file, progress,
                          ray_options: dict | None = None) -> Model:
    """Train the fp32 model and the int8 model on the same split, compare them on the same validation images, and
    keep int8 only when it loses at most half a point (accuracy and every target); the check is stored."""
    from .backbones.shipped import shipped_graph

    ray = dict(ray_options=ray_options) if engine == "ray" else {}
    fp = make_extractor(recipe, "fp32", engine=engine, cache_dir=cache_dir, progress=progress, **ray)
    td, small = _embed(data, fp, recipe, split_file)
    fp32_model = fit_frozen(td, fp, recipe, data, small_data=small)
    if getattr(fp, "jobs", None):
        fp32_model.info.training["ray"] = list(fp.jobs)
    if recipe.weights is not None or shipped_graph(f"{fp.spec.name}.int8") is None:
        why = f"no int8 graph ships for '{fp.spec.name}'" + (" with your own weights" if recipe.weights else "")
        fp32_model.info.training["precision_check"] = {"chosen": "fp32", "reason": why}
        return fp32_model
    q = make_extractor(recipe, "int8", engine=engine, cache_dir=cache_dir, progress=progress, **ray)
    # The same split: every row keeps the one it has, and nothing new is carved out.
    td8 = embed_dataset(td.table.drop(columns=["hash"]), q, val_size=0.0, test_size=0.0, seed=recipe.seed)
    td8.skipped = td.skipped  # the files fp32 could not read were never offered to int8: keep their reasons
    int8_model = fit_frozen(td8, q, recipe, data, small_data=small)
    check = compare_precisions(fp32_model, int8_model, td, td8)
    chosen = int8_model if check["chosen"] == "int8" else fp32_model
    chosen.info.training["precision_check"] = check
    if getattr(fp, "jobs", None):
        chosen.info.training["ray"] = list(fp.jobs) + list(getattr(q, "jobs", []))
    return chosen


def compare_precisions(fp32_model: Model, int8_model: Model, td: "TrainingData", td8: "TrainingData") -> dict:
    """Each model's decisions on the validation images both could read: accuracy and every target's value."""
    from .decision import decide
    from .inference import decisions, probabilities

    _, y_va, t32 = td.part("val")
    X8, y8, t8 = td8.part("val")
    X32 = td.part("val")[0]
    common = sorted(set(t32["path"]) & set(t8["path"]))
    i32 = pd.Index(t32["path"]).get_indexer(common)
    i8 = pd.Index(t8["path"]).get_indexer(common)
    y = np.asarray(y_va)[i32]
    out = {"n_validation": len(common), "max_loss": INT8_MAX_LOSS}
    losses = {}
    small = [m.info.training.get("small_data") for m in (fp32_model, int8_model)]
    if not len(common) and all(small):  # no validation split: each model's cross-validated estimate, same folds
        a32, a8 = (s["estimate"].get("accuracy") for s in small)
        out.update(judged_on="cross-validation", fp32={"accuracy": a32}, int8={"accuracy": a8},
                   n_validation=small[0]["estimate"]["n"])
        if a32 is None or a8 is None:
            return {**out, "chosen": "fp32", "reason": "no cross-validated estimate to compare int8 with: kept fp32"}
        if a32 - a8 > INT8_MAX_LOSS:
            return {**out, "chosen": "fp32", "reason": f"the int8 model lost {100 * (a32 - a8):.1f} points of "
                    f"cross-validated accuracy against the fp32 model (more than {100 * INT8_MAX_LOSS:.1f}): kept fp32"}
        return {**out, "chosen": "int8", "reason": f"the int8 model is within {100 * INT8_MAX_LOSS:.1f} point of the "
                f"fp32 model in cross-validation ({100 * a8:.1f} % vs {100 * a32:.1f} %)"}
    for name, model, X in (("fp32", fp32_model, X32[i32]), ("int8", int8_model, X8[i8])):
        logits, proba = probabilities(model, X)
        dec = decisions(model, proba, X, logits) if len(X) else decide(proba, model.classes)
        pred = np.asarray(dec.names(), dtype=object)
        row = {"accuracy": float(np.mean(pred == y)) if len(y) else None}
        for t in (model.operating_point.targets if model.operating_point else []):
            hit = (pred == t.cls) & (y == t.cls)
            denom = (y == t.cls).sum() if t.metric == "recall" else (pred == t.cls).sum()
            row[str(t)] = float(hit.sum() / denom) if denom else None
        out[name] = row
    for key, v32 in out["fp32"].items():
        v8 = out["int8"].get(key)
        if v32 is not None and v8 is not None:
            losses[key] = v32 - v8
    out["losses"] = losses
    worst = max(losses, key=losses.get) if losses else None
    if not len(common):
        out.update(chosen="fp32", reason="no validation image to compare int8 with fp32 on: kept fp32")
    elif worst is not None and losses[worst] > INT8_MAX_LOSS:
        out.update(chosen="fp32", reason=f"the int8 model lost {100 * losses[worst]:.1f} points of {worst} against "
                                         f"the fp32 model on {len(common)} validation images (more than "
                                         f"{100 * INT8_MAX_LOSS:.1f}): kept fp32")
    else:
        out.update(chosen="int8", reason=f"the int8 model is within {100 * INT8_MAX_LOSS:.1f} point of the fp32 "
                                         f"model on {len(common)} validation images (accuracy "
                                         f"{100 * out['int8']['accuracy']:.1f} % vs {100 * out['fp32']['accuracy']:.1f} %)")
    return out


#: What ``train`` writes into its ``out`` folder; all of it is checked before any work starts.
RUN_FILES = ("model.safetensors", "split.csv", "skipped.csv", "training.json")


def save_run(model: Model, td: TrainingData, out: Path, *, overwrite: bool):
    """Write the run folder atomically: the model last, so a folder with a model file is complete. When a write
    fails (a full disk, a read-only folder), every run file is put back as it was before this call (the previous
    run's files restored, new ones removed), so nothing half-written blocks the rerun or replaces a good run."""
    extra = {"finetune": model.info.finetune.to_json()} if model.info.finetune else {}
    texts = {"split.csv": csv_text(td.table), "skipped.csv": csv_text(td.skipped),
             "training.json": json_text({**model.info.training.to_json(), **extra})}
    with restore_on_error([out / RUN_RECORD, *(out / name for name in RUN_FILES)]):
        # Recorded before they are written: a rerun after a kill between them knows these files are its own.
        record_run_files(out, texts)
        for name, text in texts.items():
            write_text(out / name, text)
        model.save(out / "model.safetensors", overwrite=overwrite)


