"""Hyper-parameter search on cached embeddings: stratified k-fold CV on non-test rows only.

Each configuration is a plain dict, e.g. ``{"head": "linear", "C": 0.01, "class_weight": None}``
or ``{"head": "mlp", "hidden": 256, "dropout": 0.2, "weight_decay": 1e-3, "lr": 1e-3,
"batch_size": 256}``; ``tune`` adds ``views`` (augmented views per training image) and
``backbone``. Test rows never enter the search. On each fold, all configurations of one head kind
are fitted together by the heads' ``fit_many`` (MLPs share one first-layer product, linear heads a
warm-started C path), so a 50-configuration grid costs seconds per fold.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold

from .backbones.stages import FEATURES
from .exceptions import DataError
from .heads import HEADS
from .heads._threads import run_each
from .recipe import Recipe

__all__ = ["default_grid", "tune_embeddings", "tune", "TuneResult", "make_head", "select_config", "SELECT_RULES",
           "SCORINGS", "parse_budget"]

SELECT_RULES = ("one-se", "best")
#: What the search ranks by. Balanced accuracy (the mean of the classes' recalls) by default: it is what ``--budget``
#: judges fine-tuning by, and on a set with a rare class (a defect) plain accuracy ranks first a timid head that
#: calls nearly everything the common class (on the planted defects: C = 0.001, accuracy 71.8 %, balanced 48.6 %).
#: On balanced classes the two agree.
SCORINGS = ("balanced_accuracy", "accuracy")

_HEAD_KEYS = {"linear": ("C", "class_weight"),
              "mlp": ("hidden", "dropout", "weight_decay", "lr", "batch_size", "class_weight")}


def make_head(config: dict, seed: int = 0):
    """An unfitted head estimator from a config dict."""
    kind = config.get("head", "linear")
    if kind not in HEADS:
        raise ValueError(f"Unknown head '{kind}'. Choose one of {sorted(HEADS)}.")
    params = {k: config[k] for k in _HEAD_KEYS[kind] if k in config}
    return HEADS[kind](**params, random_state=seed)


def default_grid(n_configs: int | None = None) -> list[dict]:
    """Linear heads over a C path (x class weighting) and small MLPs over dropout/decay/lr/batch."""
    grid = [{"head": "linear", "C": float(c), "class_weight": cw}
            for cw in (None, "balanced") for c in np.geomspace(1e-3, 1.0, 13)]
    grid += [{"head": "mlp", "hidden": 256, "dropout": d, "weight_decay": wd, "lr": lr, "batch_size": bs,
              "class_weight": None}
             for d, wd, lr, bs in itertools.product((0.2, 0.5), (1e-4, 1e-2), (1e-3, 3e-3), (128, 512))]
    grid += [{"head": "mlp", "hidden": 512, "dropout": d, "weight_decay": wd, "lr": 1e-3, "batch_size": 256,
              "class_weight": cw} for d, wd, cw in itertools.product((0.2, 0.5), (1e-4, 1e-2), (None, "balanced"))]
    return grid[:n_configs] if n_configs else grid


@dataclass
class TuneResult:
    """``table``: one row per configuration (mean ± std accuracy, balanced accuracy and log-loss), best ``scoring``
    first; its ``chosen`` column marks the configuration in ``best`` (see :func:`select_config`)."""

    table: pd.DataFrame
    best: dict
    seconds: float
    model: object = None
    folds: list = field(default_factory=list)
    select: str = "one-se"
    candidates: list = field(default_factory=list)  # with a budget: frozen winner vs fine-tuning, one dict each
    scoring: str = "balanced_accuracy"

    def summary(self, n: int = 10) -> str:
        other = "accuracy" if self.scoring == "balanced_accuracy" else "balanced_accuracy"
        name = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc."}
        lines = [f"{'rank':>5}  {name[self.scoring]:>15}  {name[other]:>15}  {'log-loss':>15}  folds  config"]
        rows = self.table.head(n)
        if "chosen" in self.table and not rows["chosen"].any():  # the chosen row is always shown
            rows = pd.concat([rows, self.table[self.table["chosen"]]])
        for i, r in zip(rows.index, rows.itertuples()):
            mark = "*" if getattr(r, "chosen", False) else " "
            bb = f"{r.backbone}, " if "backbone" in self.table else ""
            lines.append(f"{i + 1:>4}{mark}  {getattr(r, 'mean_' + self.scoring):.4f} ± "
                         f"{getattr(r, 'std_' + self.scoring):.4f}  {getattr(r, 'mean_' + other):.4f} ± "
                         f"{getattr(r, 'std_' + other):.4f}  {r.mean_log_loss:.4f} ± {r.std_log_loss:.4f}  "
                         f"{r.folds:>5}  {bb}{r.config}")
        if "chosen" in self.table:
            lines.append("* chosen: " + ("the top score" if self.select == "best" else
                                         "the simplest configuration within one standard error of the top score"))
        return "\n".join(lines)


def _param(row, name, default):
    v = row.get(f"p_{name}", default)
    return default if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _complexity(row, cost: dict) -> tuple:
    """Smaller is simpler: cheaper backbone, fewer views, linear before MLP, then stronger regularisation
    (smaller C; smaller hidden layer, more weight decay and dropout), unweighted classes before balanced."""
    if _param(row, "head", "linear") == "linear":
        reg = (0, _param(row, "C", 1.0))
    else:
        reg = (1, _param(row, "hidden", 0), -_param(row, "weight_decay", 0.0), -_param(row, "dropout", 0.0))
    return (cost.get(row.get("backbone"), 0.0), row.get("features", "last") == "multi", _param(row, "views", 0), reg,
            _param(row, "class_weight", None) is not None)


def select_config(table: pd.DataFrame, rule: str = "one-se", cost: dict | None = None,
                  scoring: str = "balanced_accuracy") -> int:
    """Position (in ``table``, sorted best score first) of the configuration to refit.

    ``"best"``: the top mean score (``scoring``, one of :data:`SCORINGS`). ``"one-se"`` (default): the
    one-standard-error rule (Hastie, Tibshirani & Friedman, *Elements of Statistical Learning*, 7.10): among
    configurations scored on every fold whose mean score is within one standard error (std / sqrt(folds)) of the best, the
    simplest (see ``_complexity``; ``cost`` maps backbone -> GFLOPs). Differences inside that band are
    noise of the fold draw; a simpler model there is as good on average and cheaper and steadier.
    """
    _check_select(rule)
    _check_scoring(scoring)
    top = table.iloc[0]
    if rule == "best" or not top["folds"] > 1:
        return 0
    mean, std = f"mean_{scoring}", f"std_{scoring}"
    se = top[std] / np.sqrt(top["folds"])
    band = [i for i in range(len(table)) if table.iloc[i]["folds"] == top["folds"]
            and table.iloc[i][mean] >= top[mean] - se - 1e-12]
    return min(band, key=lambda i: (_complexity(table.iloc[i], cost or {}), i))


def _key(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


_RACE_FACTOR = 3
#: Parameters of the heads fitted during the search (not of the refit): an MLP stops after 2 epochs without a
#: better validation loss instead of 6. Its best epoch is kept either way, so a head scores the same unless
#: its validation loss improves again after 2 flat epochs: on the 24 MLPs of ``default_grid`` on 10,000
#: Fashion-MNIST embeddings (bench/head_search.py) patience 3 took a third less time than 6 with every score
#: within noise, and patience 2 gave every head of two folds the very same accuracy as patience 3 with 15 % fewer
#: epochs (171 -> 147 and 148 -> 124).
#: Then checks twice per epoch (patience 2 = one epoch without improvement): on the same 10k search, 57-60 ->
#: 51-52 s with the MLPs' mean CV accuracy unchanged (88.18 %, per config -0.8 to +0.5 points: the noise of
#: where early stopping lands).
_SEARCH_PARAMS = {"mlp": {"patience": 2, "checks_per_epoch": 2}}


def _search_head(config: dict, seed: int):
    head = make_head(config, seed)
    return head.set_params(**_SEARCH_PARAMS.get(config.get("head", "linear"), {}))


def tune_embeddings(X: np.ndarray, y, grid: list[dict], *, cv: int = 5, views: dict | None = None, seed: int = 0,
                    racing: bool = False, select: str = "one-se", scoring: str = "balanced_accuracy",
                    progress: bool = True) -> TuneResult:
    """Cross-validate every config on ``(X, y)``.

    Parameters
    ----------
    views : dict, optional
        ``{n_views: (X_aug, y_aug, source_row)}``: augmented embeddings and the row of ``X`` each comes
        from; a config's ``views`` key selects one. Only views of training-fold rows are used; held-out
        folds are scored on clean images.
    racing : bool, default=False
        Successive halving over folds (factor 3, as scikit-learn's ``HalvingGridSearchCV``): after each
        fold but the last, only the best third of the configurations (by mean score so far, then
        log-loss) go on to the next fold. The winner and every finalist are still scored on all ``cv``
        folds; the table's ``folds`` column says how many folds each row was scored on (its ``std`` is
        over those folds, NaN for one). With 3 folds it fits about half of the full grid's models.
    select : {'one-se', 'best'}
        Which configuration ``best`` is: see :func:`select_config`.
    scoring : {'balanced_accuracy', 'accuracy'}
        What ranks the configurations (see :data:`SCORINGS`); the table has both, and the log-loss.
    """
    from tqdm.auto import tqdm

    y = np.asarray(y)
    _check_cv(cv)
    _check_select(select)
    _check_scoring(scoring)
    at = {"accuracy": 0, "balanced_accuracy": 1}[scoring]  # its place in a fold's score tuple
    t0 = time.perf_counter()
    folds = list(StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed).split(X, y))
    scores = {i: [] for i in range(len(grid))}
    alive = list(range(len(grid)))
    planned, n = 0, len(grid)
    for _ in range(cv):
        planned, n = planned + n, (-(-n // _RACE_FACTOR) if racing else n)
    bar = tqdm(total=planned, unit="fit", desc="Tuning", disable=not progress, dynamic_ncols=True)

    def fold_jobs(tr, te):
        """Independent fits of one fold: ``(config indices, fn -> fitted heads, test rows)``."""
        jobs = []
        by_views: dict = {}
        for i in alive:
            by_views.setdefault(grid[i].get("views", 0), []).append(i)
        for n_views, idxs in by_views.items():
            # Configs of one head kind train together in the units their solver stacks (see heads).
            for kind in sorted({grid[i].get("head", "linear") for i in idxs}):
                mine = [i for i in idxs if grid[i].get("head", "linear") == kind]
                built = [(i, _search_head(grid[i], seed)) for i in mine]
                index_of = {id(h): i for i, h in built}
                for rank, unit in enumerate(HEADS[kind].fit_units([h for _, h in built])):
                    jobs.append((rank, [index_of[id(h)] for h in unit],
                                 lambda unit=unit, kind=kind, n_views=n_views: HEADS[kind].fit_many(
                                     unit, *fold_rows(tr, n_views)), te))
        return jobs

    def fold_rows(tr, n_views):
        """A fold's training rows, made by the job that needs them (all folds' copies at once would hold the
        data several times over)."""
        X_tr, y_tr = X[tr], y[tr]
        if n_views:
            Xa, ya, src = views[n_views]
            keep = np.isin(src, tr)
            X_tr, y_tr = np.vstack([X_tr, Xa[keep]]), np.concatenate([y_tr, ya[keep]])
        return X_tr, y_tr

    def run(jobs):
        # Each kind's units come costliest first: start every fold's costliest units, then the next ones.
        jobs = [j[1:] for j in sorted(jobs, key=lambda j: j[0])]
        # One single-threaded fit per core (heads._threads).
        for (idxs, _, te), heads in zip(jobs, run_each(lambda fn: fn(), [fn for _, fn, _ in jobs])):
            for i, head in zip(idxs, heads):
                scores[i].append(_score(head, X[te], y[te]))
            bar.update(len(idxs))

    if racing:
        for f, (tr, te) in enumerate(folds):
            run(fold_jobs(tr, te))
            if f < cv - 1:
                ranked = sorted(alive, key=lambda i: (-np.mean([s[at] for s in scores[i]]),
                                                      np.mean([s[2] for s in scores[i]])))
                alive = sorted(ranked[:-(-len(alive) // _RACE_FACTOR)])
    else:  # every fold's fits at once: the threads stay busy to the end
        run([job for tr, te in folds for job in fold_jobs(tr, te)])
    bar.close()
    rows = []
    for i, cfg in enumerate(grid):
        acc, bal, ll = (np.array([s[j] for s in scores[i]]) for j in range(3))
        rows.append({"config": _key(cfg), "mean_accuracy": acc.mean(), "std_accuracy": _std(acc),
                     "mean_balanced_accuracy": bal.mean(), "std_balanced_accuracy": _std(bal),
                     "mean_log_loss": ll.mean(), "std_log_loss": _std(ll), "folds": len(acc),
                     **{f"p_{k}": v for k, v in cfg.items()}, "_i": i})
    # Rows scored on every fold come first: a config that was raced out cannot win on a lucky single fold.
    table = _ranked(pd.DataFrame(rows), scoring)
    chosen = select_config(table, select, scoring=scoring)
    table["chosen"] = np.arange(len(table)) == chosen
    best = grid[int(table.iloc[chosen]["_i"])]
    return TuneResult(table.drop(columns="_i"), dict(best), time.perf_counter() - t0,
                      folds=[(len(a), len(b)) for a, b in folds], select=select, scoring=scoring)


def _ranked(table: pd.DataFrame, scoring: str) -> pd.DataFrame:
    return table.sort_values(["folds", f"mean_{scoring}", "mean_log_loss"],
                             ascending=[False, False, True]).reset_index(drop=True)


def _check_select(select) -> None:
    if select not in SELECT_RULES:
        raise DataError(f"select must be one of {', '.join(SELECT_RULES)}, got {select!r}.")


def _check_scoring(scoring) -> None:
    if scoring not in SCORINGS:
        raise DataError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}.")


def _check_cv(cv) -> None:
    if not (isinstance(cv, (int, np.integer)) and cv >= 2):
        raise DataError(f"cv must be a whole number of folds >= 2, got {cv!r}.")


def parse_budget(text) -> float | None:
    """``'20m'``, ``'90s'``, ``'1.5h'`` or a number of seconds -> seconds (None for nothing)."""
    if text is None or text == "":
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    t = str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t[-1] in units else float(t)
    except (ValueError, IndexError):
        raise DataError(f"A budget is a duration such as '20m', '90s' or '1h', got {text!r}.") from None
    if not value > 0:
        raise DataError(f"A budget must be positive, got {text!r}.")
    return value


def _search_extractor(backbone: str, features: tuple, **kw):
    """One extractor for the search (multi when asked: it holds the last layer too) and the feature kinds it can
    give; a backbone whose graph has no stages to pool is searched on its last layer, with a warning."""
    from .features.extract import Extractor

    if "multi" in features:
        ex = Extractor(backbone, features="multi", **kw)
        try:
            ex.embed_dim  # builds the graph with its stage outputs
            return ex, features
        except (ValueError, DataError) as exc:
            import warnings

            warnings.warn(f"Backbone '{backbone}': no multi-stage features ({exc}); searching its last layer only.")
    return Extractor(backbone, **kw), ("last",)


def _gflops(backbone: str) -> float:
    from .backbones.registry import get_spec

    return get_spec(backbone).gflops or float("inf")  # unknown cost: not preferred as "simpler"


def _std(a: np.ndarray) -> float:
    return float(a.std()) if len(a) > 1 else float("nan")


def _score(head, X, y):
    """``(accuracy, balanced accuracy, log-loss)`` of one fitted head on a held-out fold."""
    import warnings

    p = head.predict_proba(X)
    pred = head.classes_[p.argmax(1)]
    with warnings.catch_warnings():  # a class the head predicts but the fold lacks is no reason to warn
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(y, pred)
    return accuracy_score(y, pred), bal, log_loss(y, p, labels=head.classes_)


def tune(data, recipe=None, *, backbones=("efficientnet_lite0",), features=("last", "multi"), views=(0,),
         policy: str = "default",
         balance_by_augmentation: bool = False, grid: list[dict] | None = None, cv: int = 5, seed: int = 0,
         racing: bool = False, select: str = "one-se", scoring: str = "balanced_accuracy",
         out=None, engine: str = "auto", cache_dir=None, progress: bool = True, overwrite: bool = False,
         refit: bool = True, budget: float | None = None, finetune=("last-stage", "2-stages"),
         finetune_options: dict | None = None) -> TuneResult:
    """Grid search over heads, their hyper-parameters, augmented views and backbones, then refit the best.

    Cross-validation uses every non-test row (train + validation); the test split is untouched. The
    best configuration is re-trained with :func:`frugalvision.train` on the training split (saved to
    ``out`` when given), so evaluation and reports work as for any model. Which configuration is
    refit: ``select`` (default: the simplest within one standard error of the best, see
    :func:`select_config`; backbones are compared by GFLOPs), by ``scoring`` (default balanced accuracy, what the
    budget judges by too; see :data:`SCORINGS`). ``recipe`` (a :class:`~frugalvision.recipe.Recipe`)
    carries everything the search does not choose (targets, goals, "none of these", precision, splits) into the refit.
    ``features`` compares the pooled last layer with multi-stage features (``--features multi``); one pass gives
    both, since the multi embedding starts with the last layer's.

    ``budget`` (seconds of wall-clock time, search included) also tries fine-tuning the last stage(s) of the backbone
    (``finetune``, in order, with PyTorch) while time is left, each with the search winner's recipe and a time limit.
    The frozen winner and each fine-tuned model are judged on the same images, paired, in balanced accuracy: on the
    validation split (each half decided with its "none of these" threshold and operating point fitted again on the
    other half: fitted on the images that judge them they would pin what they control), or, when it has fewer than
    :data:`frugalvision._budget.CV_BELOW` images, by ``cv``-fold cross-validation over the train + validation images (each fold trains the candidate from scratch, its C,
    operating point or epoch chosen inside the fold). A fine-tuned model is kept only when it beats the frozen one
    by more than two standard errors of the difference (:data:`frugalvision._budget.KEEP_SE`; otherwise the frozen,
    cheaper model); a cross-validated
    winner is then refit on the usual split. ``result.candidates`` lists each with how it was judged, its gain and
    time (see :mod:`frugalvision._budget`). ``finetune_options``: recipe fields for the fine-tuning candidates
    (``{"epochs": 12, "views": 4}``).
    """
    from .fitting import embed_dataset, embed_views

    _check_cv(cv)  # before any extraction
    _check_select(select)
    _check_scoring(scoring)
    grid = grid or default_grid()
    results, t0 = [], time.perf_counter()
    features = tuple(features)
    if not features or set(features) - set(FEATURES):
        raise DataError(f"features must be among {', '.join(FEATURES)}, got {features!r}.")
    base = recipe or Recipe()
    precisions = {bb: Recipe(backbone=bb, weights=base.weights, precision=base.precision,
                             finetune=base.finetune).precision_in_effect(engine) for bb in backbones}
    if base.precision == "int8":  # refused before any extraction, not after the first backbone's
        from .backbones.shipped import int8_backbones

        missing = [bb for bb in backbones if bb not in int8_backbones()]
        if missing:
            raise DataError(f"--precision int8 runs the shipped quantized graph, and none ships for "
                            f"{', '.join(missing)}. Leave --precision out (int8 where it ships, fp32 elsewhere).")
    for bb in backbones:
        # Searched in the precision the refit will run (auto compares both at the refit: search fp32).
        precision = precisions[bb]
        ex, kinds = _search_extractor(bb, features, engine=engine, cache_dir=cache_dir, progress=progress,
                                      precision="fp32" if precision == "auto" else precision)
        td = embed_dataset(data, ex, seed=seed)
        pool = td.table["split"].isin(["train", "val"]).to_numpy()
        X, y, table = td.X[pool], td.table.loc[pool, "label"].to_numpy(dtype=str), td.table[pool]
        view_sets = {v: embed_views(ex, table, policy, v, balance_by_augmentation) for v in views if v}
        full = [{**cfg, "views": v} for v in views for cfg in grid]
        for kind in kinds:  # the last layer is the first embed_dim numbers of the multi embedding
            cut = slice(None) if kind == ex.features else slice(0, ex.spec.embed_dim)
            vs = {v: (Xa[:, cut], ya, src) for v, (Xa, ya, src) in view_sets.items()}
            res = tune_embeddings(X[:, cut], y, full, cv=cv, views=vs, seed=seed, racing=racing, scoring=scoring,
                                  progress=progress)
            res.table.insert(0, "features", kind)
            res.table.insert(0, "backbone", bb)
            results.append(res)
    table = _ranked(pd.concat([r.table for r in results]).drop(columns="chosen"), scoring)
    chosen = select_config(table, select, cost={bb: _gflops(bb) for bb in backbones}, scoring=scoring)
    table["chosen"] = np.arange(len(table)) == chosen
    top = table.iloc[chosen]
    best = {k[2:]: (None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v))
            for k, v in top.items() if k.startswith("p_")}
    best = {k: v for k, v in best.items() if v is not None or k == "class_weight"}
    best["backbone"] = top["backbone"]
    best["features"] = top["features"]
    result = TuneResult(table, best, time.perf_counter() - t0, select=select, scoring=scoring)
    if refit:
        from .training import train

        cfg = {k: v for k, v in best.items() if k not in ("backbone", "views", "features")}
        # The winner refit with the rest of the recipe (targets, goals, "none of these"), on the usual path.
        chosen_recipe = (recipe or Recipe()).replace(
            backbone=best["backbone"], features=best["features"], head=cfg.pop("head"), head_params=cfg, C="auto",
            views=int(best.get("views") or 0), augment=policy, balance_by_augmentation=balance_by_augmentation,
            seed=seed, few_shot=False)
        run = dict(engine=engine, cache_dir=cache_dir, progress=progress)
        if budget is None:
            result.model = train(data, chosen_recipe, out=out, overwrite=overwrite, **run)
        else:
            from ._budget import within_budget

            result.model, result.candidates = within_budget(data, chosen_recipe, budget=budget, t_start=t0, stages=finetune,
                                                            cv=cv, out=out, overwrite=overwrite,
                                                            options=finetune_options, **run)
            if out is not None:
                from ._io import csv_text, write_text

                write_text(f"{out}/tuning_budget.csv", csv_text(pd.DataFrame(result.candidates), float_format="%.5f"))
        if out is not None:
            from ._io import csv_text, write_text

            write_text(f"{out}/tuning.csv", csv_text(table, float_format="%.5f"))
    return result
