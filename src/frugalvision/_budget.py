"""``tune --budget``: the search's frozen winner against fine-tuning the last stage(s), inside a wall-clock budget.

Every candidate is trained with the same recipe and judged on the same images, paired per image, and a fine-tuned
model is kept only when it beats the frozen one by more than :data:`KEEP_SE` standard errors of the paired
difference. Where it is judged depends on the size of the validation split:

* ``CV_BELOW`` validation images or more: on the validation split (each candidate trained once, on the split). A
  model's "none of these" threshold and operating point were fitted on those same images, which pins what they
  control: every candidate rejects exactly the same share there (split-conformal), so a fine-tune that rejects fewer
  images could not show it. Each half of the split is therefore decided with thresholds fitted again on the other
  half (cross-fitting, the same halves for every candidate: paired);
* fewer: by k-fold cross-validation over the train + validation images (k = ``cv``). Each fold trains the candidate from
  scratch on the other folds (its own inner validation split for C, the operating point and, fine-tuning, the
  epoch) and predicts the held-out fold; the frozen model's folds are head refits on cached embeddings, a
  fine-tuning candidate's are k fine-tunes. Its first fold prices the rest: a candidate whose folds (and refit)
  would overrun the budget stops and is reported not finished. The winner is then refit on the usual split.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import numpy as np
import pandas as pd

__all__ = ["within_budget", "paired_gain", "CV_BELOW", "KEEP_SE", "MIN_FINETUNE_SECONDS"]

#: Below this many validation images the candidates are judged by k-fold CV over train + validation. The standard
#: error of a paired difference on n images is about sqrt(p / n) for a share p of images on which the two models
#: disagree; with p = 10 % (fine-tuning against frozen on our sets) 60 images give 4 points, 300 give 1.8: from
#: 300 the split resolves a 2-point gain, and a set that large (2,000 images at 15 %) could not pay k fine-tunes
#: inside a budget of minutes anyway.
CV_BELOW = 300

#: A fine-tuned model is kept only when its paired gain in balanced accuracy over the frozen one is more than this
#: many standard errors: about 1 chance in 40 that a candidate no better than frozen passes (1 in 6 at one SE, and
#: two candidates are tried). Fine-tuning costs 10-30x the CPU of the frozen model at every retraining, so it should
#: earn its place clearly. Measured: on the planted defects a 2-stage fine-tune at +3.9 +- 3.1 (1.3 SE) was kept at
#: one SE and gained -0.2 points (-4.7 to +4.3) on the 400 test images; on the digits 2 stages at +1.8 +- 0.7 (2.6 SE,
#: 5 folds) and, trained again, +2.0 (+0.7 to +3.3) on the 898 test images.
KEEP_SE = 2.0

#: A fine-tuning candidate is tried only with at least this many seconds left (its prefix pass and a few epochs).
MIN_FINETUNE_SECONDS = 60.0

#: Time kept for the refit on the usual split, in folds, per image it trains on more than a fold does (k / (k - 1)
#: times a fold's images: 1.25 with 5 folds, 1.5 with 3). It early-stops on its own (measured on the planted
#: defects, 5 folds, last stage: 126 s against 71 s a fold, 1.8 = 1.2 x 1.25 + noise). It is also limited to the time
#: left, so a short reserve shortens its training rather than overrunning the budget.
REFIT_PER_IMAGE = 1.2


def _refit_folds(k: int) -> float:
    return REFIT_PER_IMAGE * k / (k - 1)

#: A fine-tuning candidate's folds all get the same time limit for their training loop: this share of their part of
#: the time left (k folds and a refit). The rest of a fold runs after the limit: the head stage on the tuned
#: network's embeddings and the held-out fold's predictions (measured: 50 s after a 157 s limit, 2 stages on 272
#: defect images). Every fold the same limit: the candidate judged is one recipe.
FOLD_SHARE = 0.7

_clock = time.perf_counter  # one clock for every time check (a test skews it to play a slow fold)


def paired_gain(right, base_right, y) -> tuple[float, float]:
    """``(gain, standard error)`` in balanced accuracy of ``right`` over ``base_right`` (per image: is the decision
    right), paired on the same images with true labels ``y``.

    Balanced accuracy (the mean of the classes' recalls), not accuracy: with a minority class (a defect) its recall
    is what a fine-tuned model should buy, and accuracy counts a defect found as much as one good part more called
    good. Weighting image i by n / (k n_class(i)) makes the mean of the per-image paired differences the balanced
    accuracy difference, so the standard error stays per image; on balanced classes every weight is 1 (accuracy).
    """
    y = np.asarray(y)
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    w = len(y) / (len(counts) * counts[inv])
    d = w * (np.asarray(right, float) - np.asarray(base_right, float))
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")


def within_budget(data, recipe, *, budget: float, t_start: float, stages, cv: int, out, overwrite, options=None,
                  **run):
    """The search winner (frozen) against fine-tuning candidates, inside ``budget`` seconds since ``t_start``:
    ``(kept model, candidate rows)``; ``cv``: folds when the validation split is small."""
    from ._optional import has_torch
    from .training import train

    def left():
        return budget - (_clock() - t_start)

    t = _clock()
    frozen = train(data, recipe, out=None, **run)
    frozen_seconds = _clock() - t
    rows = [_row(f"frozen ({recipe.features} features, {recipe.head} head)", frozen, frozen_seconds)]
    table = frozen.training_data.table
    val = table[table["split"] == "val"]
    use_cv = len(val) < CV_BELOW
    pool = table[table["split"].isin(["train", "val"])].reset_index(drop=True)
    folds = _folds(pool, cv, recipe.seed) if use_cv else None
    ref = None  # the frozen model's per-image correctness, computed when the first candidate is tried
    opts = dict(options or {})
    ft_params = opts.pop("finetune_params", {})
    base = recipe.replace(precision="fp32" if recipe.precision == "int8" else recipe.precision,
                          balance_by_augmentation=False)
    best, best_i, best_recipe, reserve = frozen, 0, None, 0.0
    for st in stages:
        name = f"fine-tune {st}"
        need = max(MIN_FINETUNE_SECONDS, 3 * frozen_seconds)
        if not has_torch():
            rows.append(_row(name, None, 0.0, "not tried: fine-tuning needs PyTorch (pip install 'frugalvision[torch]')"))
            continue
        if left() - reserve < need:
            rows.append(_row(name, None, 0.0, f"not tried: {left() - reserve:.0f} s left of the budget, needs at "
                                              f"least {need:.0f} s"))
            continue
        if ref is None:
            t = _clock()
            if use_cv:
                ref, _ = _cross_validate(pool, recipe, folds, run, left=left, reserve=0.0)
                y = pool["label"].to_numpy(dtype=str)
                rows[0].update(_judged(f"{len(folds)}-fold CV", ref, ref, y),
                               folds_run=f"{len(folds)} of {len(folds)}")
                rows[0]["seconds"] += round(_clock() - t, 1)
            else:
                y = val["label"].to_numpy(dtype=str)
                halves = _halves(y, recipe.seed)
                notes = []
                ref = _decided(frozen, val["path"], run, y=y, halves=halves, notes=notes)
                rows[0].update(_judged("validation (thresholds cross-fitted on its halves)", ref, ref, y))
                rows[0]["note"] = "; ".join([rows[0]["note"], *notes]).strip("; ")
        cand = base.replace(finetune=st, finetune_params={**ft_params}, **opts)
        t = _clock()
        if use_cv:
            pred, info = _cross_validate(pool, cand, folds, run, left=left, reserve=reserve)
            rows.append(_row(name, None, _clock() - t, info.pop("note", "")))
            rows[-1].update(info)
            if pred is None:
                continue
        else:
            cand = cand.replace(finetune_params={**ft_params, "max_seconds": 0.8 * (left() - reserve)})
            model = train(data, cand, out=None, **run)
            rows.append(_row(name, model, _clock() - t))
            notes = []
            pred = _decided(model, val["path"], run, y=y, halves=halves, notes=notes)
            rows[-1]["note"] = "; ".join([rows[-1]["note"], *notes]).strip("; ")
        rows[-1].update(_judged(rows[0]["judged_on"], pred, ref, y))
        if rows[-1]["gain_vs_frozen"] > KEEP_SE * rows[-1]["gain_se"] and \
                rows[-1]["gain_vs_frozen"] > (rows[best_i].get("gain_vs_frozen") or 0.0):
            best_i, best_recipe = len(rows) - 1, cand
            if use_cv:  # refit after the last candidate: its time is kept aside from now on
                best, reserve = None, _refit_folds(len(folds)) * rows[-1]["seconds"] / len(folds)
            else:
                best = model
    if best is None:  # a candidate judged by CV won: refit it on the usual split, with the time that is left
        t = _clock()
        params = {**best_recipe.finetune_params, "max_seconds": max(left(), 1.0)}
        best = train(data, best_recipe.replace(finetune_params=params), out=None, **run)
        rows[best_i].update(refit_seconds=round(_clock() - t, 1), **_full_split(best))
    for i, r in enumerate(rows):
        r["chosen"] = i == best_i
    if out is not None:
        from pathlib import Path

        from ._io import run_folder
        from .training import RUN_FILES, save_run

        with run_folder(out, RUN_FILES, overwrite=overwrite, finished="model.safetensors"):
            save_run(best, best.training_data, Path(out), overwrite=overwrite)
    return best, rows


def _row(name, model, seconds, note=""):
    ft = model.info.finetune if model is not None else None
    return {"candidate": name, "judged_on": None, "n_images": None, "accuracy": None, "balanced_accuracy": None,
            "most_probable_accuracy": None, "gain_vs_frozen": None, "gain_se": None, "kept_above": None,
            "accuracy_gain": None,
            "seconds": round(seconds, 1),
            "folds_run": None, "epochs_run": ft.epochs_run if ft else None, "best_epoch": ft.best_epoch if ft else None,
            "stopped_by_budget": bool(ft.stopped_by_budget) if ft else False, **_full_split(model), "note": note}


def _full_split(model) -> dict:
    """The validation accuracy of a model trained on the usual split (the saved model's), and when it finished
    training (what the report matches the saved model by)."""
    v = model.info.training.validation if model is not None else {}
    return {"validation_accuracy": v.get("accuracy"), "n_validation": v.get("n"),
            "model_finished": model.info.training.finished if model is not None else None}


def _judged(on: str, pred, base_pred, y) -> dict:
    """A candidate's row entries from its ``(decisions, most probable classes)`` and the frozen model's decisions.
    The most probable class's accuracy is shown, not judged: it ignores the operating point and "none of these"."""
    right, base_right = pred[0] == y, base_pred[0] == y
    gain, se = paired_gain(right, base_right, y)
    acc = float(np.mean(right))
    return {"judged_on": on, "n_images": int(len(y)), "accuracy": acc,
            "balanced_accuracy": float(np.mean([np.mean(right[y == c]) for c in np.unique(y)])),  # unknown: wrong
            "most_probable_accuracy": float(np.mean(pred[1] == y)),
            "gain_vs_frozen": gain, "gain_se": se, "kept_above": KEEP_SE * se,
            "accuracy_gain": acc - float(np.mean(base_right))}


def _halves(y, seed: int) -> np.ndarray:
    """0/1 per image: two halves of the validation split, each class dealt alternately in a seeded random order."""
    y = np.asarray(y)
    order = np.random.default_rng(seed).permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]
    half = np.empty(len(y), int)
    half[order] = np.arange(len(y)) % 2
    return half


def _folds(pool: pd.DataFrame, k: int, seed: int) -> list:
    """Stratified folds of the train + validation rows; copies of one image (and prepare's near-duplicate groups)
    stay in one fold, as they stay in one split."""
    from sklearn.model_selection import StratifiedGroupKFold

    from .data.split import together_groups

    groups = together_groups(pool)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [te for _, te in splitter.split(pool, pool["label"].astype(str), groups)]


def _cross_validate(pool: pd.DataFrame, recipe, folds: list, run: dict, *, left, reserve: float):
    """Out-of-fold decisions of ``recipe`` over ``pool`` (None when the budget stops it) and a summary dict.

    Fold f: its rows are the held-out 'test' split, the others are split into train and validation in the usual
    proportion (the recipe's sizes, seed and grouping), and the model is trained from scratch on them.
    """
    from .training import train

    k, n = len(folds), len(pool)
    inner_val = (pool["split"] == "val").mean()
    pred = (np.full(n, "", dtype=object), np.full(n, "", dtype=object))
    seconds, epochs, best_epochs, stopped, limit = [], [], [], False, None
    if recipe.finetune:
        limit = max(FOLD_SHARE * (left() - reserve) / (k + _refit_folds(k)), 1.0)
        recipe = recipe.replace(finetune_params={**recipe.finetune_params, "max_seconds": limit})
    cols = [c for c in ("path", "label", "duplicate_group") if c in pool.columns]
    from tqdm.auto import tqdm

    bar = tqdm(total=k, unit="fold", desc=f"{'Fine-tune ' + str(recipe.finetune) if recipe.finetune else 'Frozen'} CV",
               disable=not run.get("progress", True), dynamic_ncols=True)
    for f, te in enumerate(folds):
        r = recipe.replace(val_size=float(inner_val))
        if seconds and recipe.finetune:  # the folds so far price the rest, and the refit should it win
            per = float(np.mean(seconds))
            need = (k - f) * per + max(reserve, _refit_folds(k) * per)
            if need > left():
                bar.close()
                return None, _cv_info(k, f, seconds, epochs, best_epochs, stopped, limit,
                                      note=f"not finished: {f} of {k} folds took {sum(seconds):.0f} s; the other "
                                           f"{k - f} and a refit need about {need:.0f} s, {max(left(), 0):.0f} s "
                                           f"left of the budget")
        split = np.where(np.isin(np.arange(n), te), "test", "")
        t = _clock()
        model = train(pool[cols].assign(split=split), r, out=None, **{**run, "progress": False})
        pred[0][te], pred[1][te] = _decided(model, pool["path"].iloc[te], run)
        seconds.append(_clock() - t)
        if model.info.finetune:
            ft = model.info.finetune
            epochs.append(ft.epochs_run)
            best_epochs.append(ft.best_epoch)
            stopped |= bool(ft.stopped_by_budget)
        bar.set_postfix_str(f"last fold {seconds[-1]:.0f} s", refresh=False)
        bar.update()
    bar.close()
    return pred, _cv_info(k, k, seconds, epochs, best_epochs, stopped, limit)


def _cv_info(k, done, seconds, epochs, best_epochs, stopped, limit, note="") -> dict:
    info = {"folds_run": f"{done} of {k}", "stopped_by_budget": stopped,
            "fold_time_limit": round(limit, 1) if limit is not None else None,
            "epochs_run": "/".join(map(str, epochs)) or None, "best_epoch": "/".join(map(str, best_epochs)) or None}
    return {**info, "note": note} if note else info


def _decided(model, paths, run, *, y=None, halves=None, notes=None) -> tuple[np.ndarray, np.ndarray]:
    """``(decision, most probable class)`` of the model for each image ('' where unreadable; unknown is never right).

    With ``halves`` (0/1 per image) and the true labels ``y``, each half is decided with the model's "none of these"
    threshold and operating point fitted again on the other half's images of known classes, as training fits them
    on validation images. Where the other half cannot place them (fewer than 20 images, a target it cannot meet),
    the model's own are used and ``notes`` (a list) says so.
    """
    from .decision import choose_operating_point
    from .exceptions import DataError
    from .fitting import MIN_REJECT_VALIDATION, rejected_by
    from .inference import decisions, probabilities, unusualness
    from .ood import class_thresholds, threshold_for_accept_rate

    paths = list(paths)
    emb = model.embed(paths, progress=False, engine=run.get("engine", "auto"), cache_dir=run.get("cache_dir"))
    logits, proba = probabilities(model, emb.X)
    out, top = np.full(len(paths), "", dtype=object), np.full(len(paths), "", dtype=object)
    if halves is None:
        d = decisions(model, proba, emb.X, logits)
        out[emb.ok], top[emb.ok] = d.names(), d.names("most_probable")
        return out, top
    ok = np.flatnonzero(emb.ok)
    y_ok = np.asarray(y, dtype=str)[ok]
    known = np.isin(y_ok, list(model.classes))
    reject = model.info.reject
    scores = (unusualness(model, emb.X, logits, proba)[0]
              if model.ood_state is not None and reject is not None and reject.threshold is not None and len(ok)
              else None)
    targets = list(model.operating_point.targets) if model.operating_point is not None else []
    for h in (0, 1):
        mine, fit = halves[ok] == h, (halves[ok] != h) & known
        refit = {}
        if scores is not None:
            if fit.sum() >= MIN_REJECT_VALIDATION:
                # as training places them: on all the images, and per most probable class with enough of them
                refit["reject"] = replace(
                    reject, threshold=threshold_for_accept_rate(scores[fit], reject.accept_rate),
                    class_thresholds=class_thresholds(scores[fit], proba[fit].argmax(axis=1), model.classes,
                                                      reject.accept_rate, min_images=MIN_REJECT_VALIDATION))
            elif notes is not None:
                notes.append(f"'none of these' threshold not cross-fitted on half {h + 1}: {int(fit.sum())} images")
        if targets:
            used = refit.get("reject", reject)  # the operating point counts what "none of these" rejects, as training
            set_aside = rejected_by(used, None if scores is None else scores[fit], proba[fit].argmax(axis=1),
                                    model.classes)
            try:
                refit["operating_point"] = choose_operating_point(proba[fit], y_ok[fit], model.classes, targets,
                                                                  rejected=set_aside)
            except DataError as exc:
                if notes is not None:
                    notes.append(f"operating point not cross-fitted on half {h + 1}: {exc}")
        # The model as training would have left it with these thresholds, decided on the one inference path.
        other = copy.copy(model)
        other.info = replace(model.info, **refit)
        d = decisions(other, proba[mine], emb.X[mine], logits[mine])
        out[ok[mine]], top[ok[mine]] = d.names(), d.names("most_probable")
    return out, top
