"""``frugalvision tune``: cross-validated grid search on cached embeddings, best config refit and saved."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_cmd(
        data: Path = typer.Argument(..., help="Folder or CSV manifest, as for train."),
        out: Path = typer.Option(Path("runs/tuned"), "--out", "-o", help="Run folder for the refit best model and tuning.csv."),
        backbones: str = typer.Option("efficientnet_lite0", "--backbones", help="Comma-separated backbones to compare."),
        features: str = typer.Option("last,multi", "--features", help="Comma-separated feature kinds to compare: last (the pooled last layer), multi (plus pooled intermediate stages); one backbone pass gives both."),
        views: str = typer.Option("0", "--views", help="Comma-separated numbers of augmented views, e.g. 0,2,4."),
        augment: str = typer.Option("default", "--augment", help="Augmentation policy: light, default, strong."),
        balance_by_augmentation: bool = typer.Option(False, "--balance-by-augmentation"),
        cv: int = typer.Option(5, "--cv", help="Stratified folds (on non-test rows only)."),
        seed: int = typer.Option(0, help="Seed for folds and heads."),
        racing: bool = typer.Option(False, "--racing", help="Successive halving over folds: only the best third "
                                    "of the configs goes on to each next fold (about half the time with 3 folds)."),
        select: str = typer.Option("one-se", "--select", help="Which config to refit: 'one-se' (the simplest "
                                   "within one standard error of the best CV score) or 'best' (the top score)."),
        scoring: str = typer.Option("balanced_accuracy", "--scoring", help="What ranks the configs: "
                                    "'balanced_accuracy' (the mean of the classes' recalls: a rare class counts as "
                                    "much as a common one; what --budget judges by) or 'accuracy'."),
        budget: Optional[str] = typer.Option(None, "--budget", help="Wall-clock budget, e.g. 20m: within it, also try fine-tuning the last 1-2 stages (PyTorch) against the frozen winner, paired on the same images (the validation split, or k-fold CV when it has fewer than 300 images); fine-tuning is kept only when it wins by more than two standard errors."),
        target: Optional[list[str]] = typer.Option(None, "--target", help="Operating point of the refit winner, as for train (repeatable)."),
        goal: Optional[list[str]] = typer.Option(None, "--goal", help="What good enough means, as for train (repeatable)."),
        precision: Optional[str] = typer.Option(None, "--precision", help="int8, fp32 or auto, as for train (default: int8 where the shipped graph can run)."),
        accept_rate: float = typer.Option(0.95, "--accept-rate", help="Share of normal images the 'none of these' threshold keeps, as for train."),
        no_reject: bool = typer.Option(False, "--no-reject", help="Never label an image 'unknown', as for train."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Grid search over head type, C / weight decay, dropout, lr, batch size, class weighting, views, features, backbone.

        The winner is refit with the rest of the recipe (--target, --goal, --precision, 'none of these') as train
        would, on the usual path with a validation split."""
        from ..recipe import Recipe
        from ..tune import parse_budget, tune

        try:
            view_list = [int(v) for v in views.split(",")]
        except ValueError:
            raise typer.BadParameter(f"--views takes comma-separated integers, got {views!r}.") from None
        recipe = Recipe(precision=precision, goals=tuple(goal or ()), targets=tuple(target or ()),
                        reject=not no_reject, accept_rate=accept_rate)
        res = tune(data, recipe, backbones=tuple(backbones.split(",")), features=tuple(f.strip() for f in features.split(",")),
                   views=tuple(view_list), policy=augment,
                   balance_by_augmentation=balance_by_augmentation, cv=cv, seed=seed, racing=racing, select=select,
                   scoring=scoring, out=out, engine=engine,
                   cache_dir=cache_dir, progress=not quiet, overwrite=overwrite, budget=parse_budget(budget))
        echo(f"{len(res.table)} configurations x {cv} folds in {res.seconds:.1f} s")
        echo(res.summary())
        echo(f"Refit: {res.best}")
        from ..small_data import FEW_SHOT_BELOW

        smallest = _smallest_class(res.model)
        if smallest is not None and smallest[1] < FEW_SHOT_BELOW:
            echo(f"Note: the refit ran on the usual path (a validation split) with the searched head, though the "
                 f"smallest class ('{smallest[0]}') has {smallest[1]} training and validation images: train alone "
                 f"would use the small-data path. Compare the two on the same test images (frugalvision compare-models).")
        for c in res.candidates:
            echo(f"{'*' if c['chosen'] else ' '} {c['candidate']}: {_judged(c)}")
        echo(f"Wrote {out / 'model.safetensors'} and {out / 'tuning.csv'}. Next: frugalvision evaluate {out}")


def _smallest_class(model):
    """(class, labelled images in train + validation) of the refit model's smallest class, or None."""
    counts = ((getattr(model, "training_", None) or {}).get("counts") or {})
    total: dict = {}
    for split in ("train", "val"):
        for c, n in (counts.get(split) or {}).items():
            total[c] = total.get(c, 0) + int(n)
    return min(total.items(), key=lambda kv: kv[1]) if total else None


def _judged(c: dict) -> str:
    """One candidate of ``tune --budget``: how it was judged, its gain over the frozen model, its time."""
    if c["judged_on"] is None:
        return c["note"] or f"{c['seconds']:.0f} s"
    text = (f"{c['judged_on']} on {c['n_images']} images: balanced accuracy {100 * c['balanced_accuracy']:.1f} % "
            f"(accuracy {100 * c['accuracy']:.1f} %; most probable class right: "
            f"{100 * c['most_probable_accuracy']:.1f} %)")
    if c["gain_se"] is not None and c.get("kept_above") is not None and c["candidate"].startswith("fine-tune"):
        # The smallest gain that would be kept: on a few hundred images a real 1-point gain is not shown.
        text += (f", gain {100 * c['gain_vs_frozen']:+.1f} ± {100 * c['gain_se']:.1f} points (one SE; kept only "
                 f"above {100 * c['kept_above']:+.1f})")
    text += f", {c['seconds']:.0f} s"
    if c.get("refit_seconds") is not None:
        text += f" + refit {c['refit_seconds']:.0f} s"
    return text + (f"; {c['note']}" if c["note"] else "")
