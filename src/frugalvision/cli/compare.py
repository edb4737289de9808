"""``frugalvision compare-backbones``: accuracy vs speed vs size, measured on your data and machine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo, echo_paths


def register(app: typer.Typer) -> None:
    @app.command("compare-backbones")
    def compare_cmd(
        data: Path = typer.Argument(..., help="Folder or CSV manifest, as for train."),
        out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="Folder for comparison.csv and .png."),
        backbones: Optional[str] = typer.Option(None, "--backbones", help="Comma-separated (default: all registered)."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Train the default head on every backbone and chart test accuracy against ms/image and size."""
        from .._io import csv_text, refuse_overwrite, write_bytes, write_text
        from ..compare import compare_backbones, comparison_png

        targets = [out / "comparison.csv", out / "comparison.png"]
        for t in targets:
            refuse_overwrite(t, overwrite, "comparison file")
        table = compare_backbones(data, backbones=backbones.split(",") if backbones else None, engine=engine,
                                  cache_dir=cache_dir, progress=not quiet)
        echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        write_text(targets[0], csv_text(table, float_format="%.4f"))
        write_bytes(targets[1], comparison_png(table))
        echo_paths("Wrote:", targets)
