"""``frugalvision evaluate``: metrics with CIs, confusion, bias audit, calibration; ``compare-models``: two models, paired."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo, echo_paths


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        data: Optional[Path] = typer.Option(None, "--data", help="Labelled folder/CSV (default: the model's test split)."),
        group_by: Optional[List[str]] = typer.Option(None, "--group-by", help="Manifest column to audit by (repeatable)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for metrics.json, CSVs and PNGs (default RUN/evaluation)."),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the intervals of gaps and AUCs (single proportions such as accuracy and recall get Wilson intervals)."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        min_group_size: int = typer.Option(30, "--min-group-size", help="Groups with fewer test images are flagged, not judged."),
        unknown: Optional[Path] = typer.Option(None, "--unknown", help="Folder of images of none of the classes: how well are they told apart (AUROC, FPR at 95 % TPR, accuracy-coverage)?"),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Evaluate on the held-out split (or any labelled data): per-class metrics with 95 % CIs (Wilson for proportions)."""
        from ..evaluation import evaluate
        from ..model import load_model

        from ..evaluation.result import check_can_save

        m = load_model(model)
        target = out or (m.run_dir / "evaluation")
        check_can_save(target, overwrite)  # before the work, not after it
        result = evaluate(m, data, group_by=group_by or None, n_boot=n_boot, seed=seed, min_group_size=min_group_size, progress=not quiet,
                          engine=engine, cache_dir=cache_dir, unknown=unknown)
        echo(result.summary())
        echo_paths("Wrote:", result.save(target, overwrite=overwrite))

    @app.command("compare-models")
    def compare_models_cmd(
        model_a: Path = typer.Argument(..., help="Model A: model file or run folder (the reference)."),
        model_b: Path = typer.Argument(..., help="Model B: model file or run folder."),
        data: Optional[Path] = typer.Option(None, "--data", help="Labelled folder/CSV (default: A's test split)."),
        n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples of the paired difference."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet,
    ):
        """Is B really more accurate than A? Both on the same images, with a paired bootstrap CI of B - A."""
        from ..evaluation import compare_models
        from ..model import load_model

        ra, rb, d = compare_models(load_model(model_a), load_model(model_b), data, n_boot=n_boot, seed=seed,
                                   progress=not quiet, engine=engine, cache_dir=cache_dir)
        for name, path, r in (("A", model_a, ra), ("B", model_b, rb)):
            lo, hi = r.accuracy_ci
            echo(f"{name}: {100 * r.headline['accuracy']:.2f} % (95 % Wilson CI {100 * lo:.2f}-{100 * hi:.2f})  {path}")
        echo(f"B - A: {d}")
        verdict = ("B is more accurate" if d.ci[0] > 0 else "A is more accurate" if d.ci[1] < 0 else
                   "no difference can be claimed at 95 % on these images")
        echo(f"=> {verdict}.")
