"""Options shared by several commands (one definition each)."""

from __future__ import annotations

import typer

Engine = typer.Option("auto", "--engine", help="Backbone runtime: auto (ONNX Runtime if available), onnx, torch.")
CacheDir = typer.Option(None, "--cache-dir", help="Embedding cache folder (default ~/.cache/frugalvision or $FRUGALVISION_CACHE).")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bars.")
Overwrite = typer.Option(False, "--overwrite", help="Allow replacing files frugalvision wrote before.")


def echo_paths(title: str, paths) -> None:
    typer.echo(title)
    for p in paths:
        typer.echo(f"  {p}")


def fmt_pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f} %"

