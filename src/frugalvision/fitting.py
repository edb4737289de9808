"""Fitting on embeddings: the dataset embedded and split, then the head stage (head, C, temperature, operating
point, "none of these", goals) that a frozen and a fine-tuned backbone share.

Below :mod:`frugalvision.training` (which chooses the path: frozen, fine-tuned, int8 or fp32) and
:mod:`frugalvision.finetune` (which fits the head stage on its own network's embeddings).
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .artifact import RejectInfo
from .data.discover import discover
from .data.split import assign_splits, together_groups
from .exceptions import DataError
from .features.extract import Extractor
from .heads import HEADS
from .model import Model
from .recipe import Recipe

if TYPE_CHECKING:
    from .decision import OperatingPoint

__all__ = ["TrainingData", "embed_dataset", "embed_views", "make_extractor", "HeadFit", "fit_head_stage",
           "fit_frozen", "assemble_model", "backbone_meta", "C_GRID", "MIN_REJECT_VALIDATION"]


class TrainingData:
    """A dataset table joined with its embeddings: rows that decoded, with their split."""

    def __init__(self, table: pd.DataFrame, X: np.ndarray, skipped: pd.DataFrame, extractor: Extractor):
        self.notes: list = []  # what a person should know about how the data was used
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
        from ._io import read_csv

        fixed = read_csv(split_file)[["path", "split"]]
        good = good.drop(columns="split").merge(fixed, on="path", how="left")
        good["split"] = good["split"].fillna("")
    X = emb.X
    # assign_splits sorts by path; keep X aligned by carrying the row number.
    good["_row"] = np.arange(len(good))
    # Copies of one image (same content) and near-duplicate groups found by prepare stay inside one split,
    # so that no test image is also a training image.
    good["_together"] = together_groups(good)
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


def make_extractor(recipe: Recipe, precision: str, *, engine="auto", cache_dir=None, progress=True,
                   ray_options: dict | None = None) -> Extractor:
    """The recipe's extractor; ``engine='ray'``: the same extractor whose calls run on Ray actors
    (:class:`~frugalvision.distributed.embed.RayExtractor`, options ``ray_options``: address, actors, cpus_per_actor,
    shard_size, object_store_mb)."""
    if engine == "ray":
        from .distributed import require_ray
        from .distributed.embed import RayExtractor

        require_ray()
        return RayExtractor(recipe.backbone, weights=recipe.weights, cache_dir=cache_dir, crop_pct=recipe.crop_pct,
                            progress=progress, precision=precision, features=recipe.features, **(ray_options or {}))
    return Extractor(recipe.backbone, weights=recipe.weights, engine=engine, cache_dir=cache_dir,
                     crop_pct=recipe.crop_pct, progress=progress, precision=precision, features=recipe.features)


@dataclass
class HeadFit:
    """What the head stage fits on embeddings, the same for a frozen and a fine-tuned backbone."""

    head: object
    temperature: float | None
    operating_point: OperatingPoint | None
    reject: RejectInfo | None
    ood_state: object
    goals: list
    C: float | None
    C_search: list
    notes: list
    #: "None of these" scores of every validation image when the threshold was placed on all of them (the summary's
    #: validation accuracy reuses them: at 50k images each scoring is ~2.5 s of kNN).
    val_ood_scores: np.ndarray | None = None


def fit_head_stage(X_tr, y_tr, X_va, y_va, recipe: Recipe, *, n_clean: int | None = None) -> HeadFit:
    """Head, temperature, operating point, "none of these" score and goals from train/validation embeddings.

    ``X_tr[:n_clean]`` are the clean training embeddings (the rest augmented views): the "none of these" score is
    fitted on what predict will see.
    """
    n_clean = len(y_tr) if n_clean is None else n_clean
    params = dict(recipe.head_params)
    C, c_curve, est = None, [], None
    if recipe.head == "linear":
        class_weight = params.pop("class_weight", recipe.class_weight)
        C, c_curve, path_head = _choose_C(params.pop("C", recipe.C), X_tr, y_tr, X_va, y_va, recipe.head,
                                          class_weight, recipe.seed)
        if not params:  # the path fitted this very head (same C, weighting and seed): no second fit
            est = path_head
        params = {"C": C, "class_weight": class_weight, **params}
    else:
        params.setdefault("class_weight", recipe.class_weight)
    if est is None:
        est = HEADS[recipe.head](**params, random_state=recipe.seed).fit(X_tr, y_tr)
    classes = [str(c) for c in est.classes_]
    known = np.isin(y_va, classes)
    temperature = None
    notes = []
    if recipe.calibrate:
        if known.sum() >= 10:
            from .evaluation.calibration import fit_temperature

            temperature = fit_temperature(est.logits(X_va[known]), [classes.index(c) for c in y_va[known]])
        else:
            notes.append(f"probabilities not calibrated: {int(known.sum())} validation images (needs 10)")
    goals = []
    if recipe.goals:
        from .reporting.verdict import parse_goal

        goals = [parse_goal(g, classes)["name"] for g in recipe.goals]
    op, reject, state, va_scores = _decision_fit(est, temperature, X_tr[:n_clean], y_tr[:n_clean], X_va[known],
                                                 y_va[known], recipe)
    if va_scores is not None and reject is not None and reject.threshold is not None:
        notes += swallowed_classes(va_scores, y_va[known], reject, est.logits(X_va[known]).argmax(axis=1),
                                   classes, "validation")
    return HeadFit(head=est, temperature=temperature, operating_point=op, reject=reject, ood_state=state,
                   goals=goals, C=C, C_search=c_curve, notes=notes,
                   val_ood_scores=va_scores if known.all() else None)


def fit_small_data_stage(X_tr, y_tr, recipe: Recipe, *, n_clean: int) -> tuple[HeadFit, dict]:
    """The head stage of the small-data path: the head chosen by cross-validation on every clean labelled image
    (refit with the augmented views when there are any), and the temperature, operating point and "none of these"
    threshold chosen on its out-of-fold predictions instead of a validation split."""
    from .decision import choose_operating_point
    from .heads import softmax
    from .heads.linear import LinearHead
    from .small_data import _fit, cv_ood_scores, fit_small_data

    classes = sorted(np.unique(y_tr[:n_clean]).astype(str))
    Xc, yc = X_tr[:n_clean], y_tr[:n_clean]
    sd = fit_small_data(Xc, yc, classes, class_weight=recipe.class_weight, seed=recipe.seed)
    W, b = sd.coef, sd.intercept
    if len(y_tr) > n_clean:  # the augmented views join the final fit (the estimate is from clean images only)
        W, b = _fit(sd.kind, sd.C, np.asarray(X_tr, np.float64), np.array([classes.index(v) for v in y_tr]),
                    len(classes), recipe.class_weight, recipe.seed)
    head = LinearHead.from_state({"C": sd.C or 1.0, "class_weight": recipe.class_weight},
                                 {"coef": W, "intercept": b}, classes)
    y_idx = np.array([classes.index(v) for v in yc])
    notes, temperature, op, reject, state = [], None, None, None, None
    if sd.oof_logits is not None and recipe.calibrate:
        from .evaluation.calibration import fit_temperature

        temperature = fit_temperature(sd.oof_logits, y_idx)
    elif recipe.calibrate:
        notes.append("probabilities not calibrated: no cross-validation possible with a single image of a class")
    goals = []
    if recipe.goals:
        from .reporting.verdict import parse_goal

        goals = [parse_goal(g, classes)["name"] for g in recipe.goals]
    if recipe.reject:
        from .ood import fit_ood, knn_settings

        # kNN in the folds and in the final scorer alike: the threshold from the folds then holds for new images.
        hyper = knn_settings(len(yc))
        state = fit_ood(np.asarray(Xc, np.float32), yc, head.logits(Xc).astype(np.float32), **hyper)
        oof = functools.cache(lambda: cv_ood_scores(Xc, yc, classes, sd, seed=recipe.seed, hyper=hyper))

        def scores():  # out-of-fold scores, each row's class the most probable out of fold
            s = oof()
            return None if s is None or sd.oof_logits is None else (s, sd.oof_logits.argmax(axis=1))

        reject = _reject_info(state, len(yc), recipe, "out-of-fold training", scores, classes)
        if reject.threshold is not None:  # oof() ran for it: the cached scores
            notes += swallowed_classes(oof(), yc, reject, sd.oof_logits.argmax(axis=1), classes,
                                       "out-of-fold training")
    if recipe.targets:
        if sd.oof_logits is None:
            raise DataError("Targets (--target) need at least 2 images of every class to choose a threshold on "
                            "out-of-fold predictions; label more images.")
        proba = softmax(sd.oof_logits / (temperature or 1.0))
        out = rejected_by(reject, oof() if reject is not None and reject.threshold is not None else None,
                        sd.oof_logits.argmax(axis=1), classes)
        op = _with_intervals(choose_operating_point(proba, yc, classes, list(recipe.targets), rejected=out),
                             "out-of-fold (cross-validation)")
    fit = HeadFit(head=head, temperature=temperature, operating_point=op, reject=reject, ood_state=state,
                  goals=goals, C=sd.C, C_search=[], notes=notes)
    return fit, sd.summary()


#: Fewest in-distribution validation images a "none of these" threshold is placed from: the 95th percentile of fewer
#: is the largest score or close to it, and on tiny sets the score's own scale is unstable (seen: thresholds in the
#: thousands where normal scores are ~1, which rejected training images).
MIN_REJECT_VALIDATION = 20


def _decision_fit(est, temperature, X_tr, y_tr, X_va, y_va, recipe: Recipe):
    """The operating point (targets met on validation), the fitted "none of these" score with its threshold, and the
    validation images' scores when the threshold needed them (else None)."""
    from .heads import softmax

    classes = [str(c) for c in est.classes_]
    op = reject = state = None
    scored = []
    if recipe.reject:
        from .ood import fit_ood, ood_score

        state = fit_ood(X_tr, y_tr, est.logits(X_tr))

        def scores():
            logits_va = est.logits(X_va)
            scored.append(ood_score(state, X_va, logits_va))
            return scored[0], logits_va.argmax(axis=1)

        reject = _reject_info(state, len(y_va), recipe, "validation", scores, classes)
    if recipe.targets:
        from .decision import choose_operating_point

        logits_va = est.logits(X_va)
        proba_va = softmax(logits_va / (temperature or 1.0))
        out = rejected_by(reject, scored[0] if scored else None, logits_va.argmax(axis=1), classes)
        op = _with_intervals(choose_operating_point(proba_va, y_va, classes, list(recipe.targets), rejected=out),
                             "validation")
    return op, reject, state, (scored[0] if scored else None)


def rejected_by(reject: RejectInfo | None, scores, most_probable, classes):
    """Which of the scored images the "none of these" thresholds answer unknown (None when nothing is)."""
    if reject is None or reject.threshold is None or scores is None:
        return None
    thr = reject.thresholds(classes).astype(np.float32)
    return np.asarray(scores, np.float32) > thr[np.asarray(most_probable)]


def swallowed_classes(scores, labels, reject: RejectInfo, most_probable, classes, where: str) -> list[str]:
    """Notes on the classes the "none of these" thresholds answer unknown far more often than they promised
    (more than twice the promised share, at least 10 %, at least 2 images, and beyond chance). A class's own
    threshold (``class_thresholds``) keeps its promise for the images predicted as it; a class with too few
    images for one shares the threshold placed on all, which falls hardest on a rare or spread-out class, and
    true images of one class predicted as another meet the other's threshold."""
    from scipy.stats import binom

    accept_rate = reject.accept_rate
    s, y = np.asarray(scores, dtype=np.float32), np.asarray(labels).astype(str)
    thr = reject.thresholds(classes).astype(np.float32)[np.asarray(most_probable)]
    limit, notes = max(2 * (1 - accept_rate), 0.10), []
    for c in sorted(set(y)):
        m = y == c
        r = int((s[m] > thr[m]).sum())
        # ... and more than chance would put on one class: a one-sided binomial test at the promised share,
        # Bonferroni over the classes (2 of 10 images of one of 10 balanced classes happens by chance ~70 % of
        # the time; 4 of 14 defects does not)
        if r >= 2 and r / m.sum() > limit and binom.sf(r - 1, int(m.sum()), 1 - accept_rate) < 0.05 / len(classes):
            notes.append(f"'none of these' answers unknown for {r} of {int(m.sum())} {where} images of '{c}' "
                         f"({100 * r / m.sum():.0f} %, against {100 * (1 - accept_rate):g} % promised): that class "
                         f"looks unusual to the score and many of its images would be answered unknown. Label more "
                         f"images of '{c}', or train with --no-reject")
    return notes


def _reject_info(state, n: int, recipe: Recipe, where: str, scores, classes) -> RejectInfo:
    """The "none of these" thresholds keeping ``recipe.accept_rate`` of ``n`` normal ``where`` images (``scores()``:
    their scores and most probable class indices into ``classes``): one on all of them, and one of its own for
    each class predicted for enough of them; or no threshold with the reason when they are too few."""
    from .ood import class_thresholds, threshold_for_accept_rate

    if n < MIN_REJECT_VALIDATION:
        note = (f"not set: {n} {where} images are too few to place a threshold that keeps "
                f"{100 * recipe.accept_rate:g} % of normal images (needs {MIN_REJECT_VALIDATION}); every image gets a "
                f"class. Label more images")
        return RejectInfo(params=state.params(), accept_rate=recipe.accept_rate, n_validation=int(n), note=note)
    got = scores()
    if got is None:  # out-of-fold scores need every class in two folds: one image of a class gives none
        return RejectInfo(params=state.params(), accept_rate=recipe.accept_rate, n_validation=0,
                          note=f"not set: a class has a single image, so there are no {where} scores to place a "
                               f"threshold on; every image gets a class. Label more images of every class")
    s, top = got
    return RejectInfo(params=state.params(), threshold=float(threshold_for_accept_rate(s, recipe.accept_rate)),
                      accept_rate=recipe.accept_rate, n_validation=int(n), note=f"chosen on {where} images",
                      class_thresholds=class_thresholds(s, top, classes, recipe.accept_rate,
                                                        min_images=MIN_REJECT_VALIDATION))


#: Fewest images a target's recall or precision is judged on before the operating point is said to rest on too few.
MIN_TARGET_IMAGES = 20


def _with_intervals(op, where: str):
    """Each target's value on ``where`` with its Wilson interval, and a note when it rests on too few images."""
    from .evaluation.bootstrap import wilson_ci

    for name, v in op.validation.items():
        n = int(v["n"])
        lo, hi = wilson_ci(int(round(v["value"] * n)), n)
        v.update(ci=[lo, hi], ci_method="Wilson", judged_on=where)
        if n < MIN_TARGET_IMAGES:
            v["note"] = (f"judged on {n} {where} image(s), too few to trust (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %; "
                         f"needs {MIN_TARGET_IMAGES}): label more images of this class")
    return op


def backbone_meta(ex: Extractor, recipe: Recipe) -> dict:
    return {"name": ex.spec.name, "timm_name": ex.spec.timm_name, "weights_id": ex.weights_id,
            "weights_source": ex.spec.weights, "weights_file": recipe.weights, "embed_dim": ex.embed_dim,
            "features": ex.features,
            "cam_layer": ex.spec.cam_layer, "pooled_is_plain_avg": ex.spec.pooled_is_plain_avg,
            "license": ex.spec.license, "precision": ex.precision}


def assemble_model(fit: HeadFit, *, backbone: dict, preprocessing: dict, recipe: Recipe, summary: dict,
                   td: "TrainingData", backbone_tensors: dict | None = None, finetune: dict | None = None) -> Model:
    """The Model of a head stage: typed metadata, the "none of these" state and the training data it came from."""
    training = {**summary, "C": fit.C, "C_search": fit.C_search, "notes": fit.notes, "goals": fit.goals,
                "recipe": recipe.to_json()}
    meta = {"backbone": backbone, "preprocessing": preprocessing, "temperature": fit.temperature,
            "training": training}
    model = Model(fit.head, meta, backbone_tensors=backbone_tensors, ood_state=fit.ood_state, training_data=td)
    model.info.operating_point = fit.operating_point
    model.info.reject = fit.reject
    if finetune is not None:
        from .artifact import FinetuneInfo

        problems: list = []
        model.info.finetune = FinetuneInfo.from_json(finetune, "finetune", problems)
        if problems:  # our own summary: a wrong type here is a bug, said plainly
            raise TypeError("; ".join(problems))
    return model


def small_data_choice(table: pd.DataFrame, recipe: Recipe) -> tuple[bool, str]:
    """Whether the small-data path runs for ``table`` (labelled rows; test rows of a given layout not counted)."""
    from .small_data import FEW_SHOT_BELOW

    if recipe.few_shot is not None:
        return recipe.few_shot, "--few-shot" if recipe.few_shot else ""
    rows = table[table["split"].astype(str) != "test"] if "split" in table.columns else table
    counts = rows["label"].astype(str).value_counts()
    smallest = int(counts.min()) if len(counts) else 0
    if smallest >= FEW_SHOT_BELOW:
        return False, ""
    asks = [k for k, v in {"--finetune": recipe.finetune, "--head mlp": recipe.head != "linear",
                           "--C": recipe.C != "auto", "--val-size": recipe.val_size}.items() if v]
    why = f"the smallest class ('{counts.idxmin()}') has {smallest} labelled images (fewer than {FEW_SHOT_BELOW})"
    if asks:
        return False, f"{why}, but {', '.join(asks)} asks for the usual path"
    return True, why


def fit_frozen(td: "TrainingData", ex: Extractor, recipe: Recipe, source, *, small_data: str = "") -> Model:
    """The head stage on a frozen backbone's cached embeddings (plus augmented views when asked).

    ``small_data``: the reason the small-data path runs (empty: the usual path with a validation split).
    """
    X_tr, y_tr, tr_table = td.part("train")
    if len(np.unique(y_tr)) < 2:
        raise DataError("The training split has fewer than 2 classes after skipping unreadable files.")
    n_clean, n_aug = len(y_tr), 0
    if recipe.views:
        Xa, ya, _ = embed_views(ex, tr_table, recipe.augment_policy, recipe.views, recipe.balance_by_augmentation)
        X_tr, y_tr, n_aug = np.vstack([X_tr, Xa]), np.concatenate([y_tr, ya]), len(ya)
    X_va, y_va, _ = td.part("val")
    if small_data:
        fit, small = fit_small_data_stage(X_tr, y_tr, recipe, n_clean=n_clean)
        summary = _summary(td, fit, source, X_va)
        summary["small_data"] = {**small, "reason": small_data}
    else:
        fit = fit_head_stage(X_tr, y_tr, X_va, y_va, recipe, n_clean=n_clean)
        summary = _summary(td, fit, source, X_va)
    fit.notes.extend(td.notes)
    summary["augmentation"] = {"policy": recipe.augment_policy if recipe.views else None, "views": recipe.views,
                               "balance_by_augmentation": recipe.balance_by_augmentation, "augmented_rows": n_aug}
    summary["precision_check"] = None
    return assemble_model(fit, backbone=backbone_meta(ex, recipe), preprocessing=ex.preprocessing, recipe=recipe,
                          summary=summary, td=td)


#: Grid for ``C='auto'``; strong regularisation usually wins for linear probes on a few thousand images.
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
_DEFAULT_C = 0.01


def _choose_C(C, X_tr, y_tr, X_va, y_va, head, class_weight, seed):
    """``C='auto'``: the grid value with the lowest validation log-loss (the test split is never used), its curve
    and the head fitted at that value (None when C was given or too few validation images).

    The path runs from small to large C and stops once the validation log-loss has risen twice in a row: it is
    U-shaped in C, and the large values cost the most solver iterations (10k / 50k Fashion-MNIST images: the
    minimum at 0.01 / 0.003, then a steady rise to 1.0; stopping saved 2 / ~20 s)."""
    if C != "auto":
        if not isinstance(C, (int, float)) or C <= 0:
            raise DataError(f"C must be a positive number or 'auto', got {C!r}.")
        return float(C), [], None
    known = np.isin(y_va, np.unique(y_tr))
    if known.sum() < 10:
        return _DEFAULT_C, [], None
    from sklearn.metrics import log_loss

    curve, fitted = [], {}

    def scored(heads):
        for est in heads:
            curve.append({"C": est.C, "val_log_loss": float(log_loss(y_va[known], est.predict_proba(X_va[known]),
                                                                     labels=est.classes_))})
            fitted[est.C] = est
        losses = [r["val_log_loss"] for r in curve]
        return len(losses) >= 3 and losses[-1] > losses[-2] > losses[-3]

    HEADS[head].fit_many([HEADS[head](C=c, class_weight=class_weight, random_state=seed) for c in C_GRID],
                         X_tr, y_tr, until=scored)
    best = min(curve, key=lambda r: r["val_log_loss"])
    return best["C"], curve, fitted[best["C"]]


def _summary(td: TrainingData, fit: HeadFit, source, X_va, y_va=None) -> dict:
    """Counts, skipped files and validation accuracy of the model's decisions (operating point and "none of
    these" included) on ``X_va`` (the validation embeddings of the network the head reads)."""
    from .decision import decide
    from .heads import softmax

    counts = td.table.groupby(["split", "label"]).size().unstack(fill_value=0)
    val = {}
    y_va = td.part("val")[1] if y_va is None else y_va
    if len(y_va):
        est = fit.head
        logits = est.logits(X_va)
        scores = None
        if fit.ood_state is not None and fit.reject is not None and fit.reject.threshold is not None:
            from .ood import ood_score

            scores = (fit.val_ood_scores if fit.val_ood_scores is not None and len(fit.val_ood_scores) == len(y_va)
                      else ood_score(fit.ood_state, np.asarray(X_va, np.float32), np.asarray(logits, np.float32)))
        dec = decide(softmax(logits / (fit.temperature or 1.0)), est.classes_, operating_point=fit.operating_point,
                     ood_scores=scores, reject_threshold=fit.reject.thresholds(est.classes_) if fit.reject else None)
        pred = np.asarray(dec.names(), dtype=object)
        val = {"accuracy": float(np.mean(pred == y_va)), "n": int(len(y_va)),
               "unknown_share": float(dec.unknown.mean()),
               "per_class": {c: float(np.mean(pred[y_va == c] == c)) for c in est.classes_ if (y_va == c).any()}}
    return {
        "source": str(source) if not isinstance(source, pd.DataFrame) else "<DataFrame>",
        "n_images": int(len(td.table)), "n_skipped": int(len(td.skipped)),
        "counts": {s: {str(k): int(v) for k, v in row.items()} for s, row in counts.iterrows()},
        "validation": val,
        "skipped": td.skipped.head(50).to_dict("records"),
    }
