"""``frugalvision evaluate``: metrics with CIs, confusion, bias audit, calibration."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo_paths


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        data: Optional[Path] = typer.Option(None, "--data", help="Labelled folder/CSV (default: the model's test split)."),
        group_by: Optional[List[str]] = typer.Option(None, "--group-by", help="Manifest column to audit by (repeatable)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for metrics.json, CSVs and PNGs (default RUN/evaluation)."),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the confidence intervals."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        min_group_size: int = typer.Option(30, "--min-group-size", help="Groups with fewer test images are flagged, not judged."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Evaluate on the held-out split (or any labelled data): per-class metrics with 95 % CIs."""
        from ..model import load_model

        m = load_model(model)
        result = m.evaluate(data, group_by=group_by or None, n_boot=n_boot, seed=seed, min_group_size=min_group_size, progress=not quiet,
                            engine=engine, cache_dir=cache_dir)
        typer.echo(result.summary())
        target = out or (m.run_dir / "evaluation")
        echo_paths("Wrote:", result.save(target, overwrite=overwrite))
