"""``frugalvision train``: folder/manifest -> model file + split + summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo_paths, fmt_pct


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        data: Path = typer.Argument(..., help="Folder of class sub-folders (optionally train/ test/), or a CSV manifest path,label."),
        out: Path = typer.Option(Path("runs/model"), "--out", "-o", help="Run folder to write the model into."),
        backbone: str = typer.Option("efficientnet_lite0", "--backbone", "-b", help="Registry name or timm:<name>."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Local backbone weights (.safetensors/.pth) for offline use."),
        C: str = typer.Option("auto", "--C", help="Inverse L2 regularisation of the linear head, or 'auto' (chosen on validation)."),
        class_weight: Optional[str] = typer.Option(None, "--class-weight", help="'balanced' to reweight rare classes."),
        val_size: float = typer.Option(0.15, help="Validation fraction (stratified, seeded)."),
        test_size: float = typer.Option(0.15, help="Test fraction when the data has no test/ folder."),
        seed: int = typer.Option(0, help="Seed for the split."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Train a classifier from a folder of labelled images (embeddings are cached)."""
        import time

        from ..training import train

        if class_weight not in (None, "balanced"):
            raise typer.BadParameter("--class-weight takes 'balanced' or nothing.")
        try:
            C_value = C if C == "auto" else float(C)
        except ValueError:
            raise typer.BadParameter(f"--C takes a positive number or 'auto', got {C!r}.") from None
        t = time.perf_counter()
        model = train(data, backbone=backbone, weights=weights, out=out, C=C_value, class_weight=class_weight,
                      val_size=val_size, test_size=test_size, seed=seed, engine=engine, cache_dir=cache_dir,
                      progress=not quiet, overwrite=overwrite)
        print_training(model, time.perf_counter() - t)
        echo_paths("Wrote:", [out / n for n in ("model.safetensors", "split.csv", "skipped.csv", "training.json")])
        typer.echo(f"Next: frugalvision evaluate {out}   |   frugalvision report {out}")


def print_training(model, seconds: float) -> None:
    s = model.training_
    counts = s["counts"]
    typer.echo(f"Trained {model!r} in {seconds:.1f} s")
    typer.echo("Images per split: " + ", ".join(f"{k} {sum(v.values())}" for k, v in counts.items()))
    if s["n_skipped"]:
        typer.secho(f"Skipped {s['n_skipped']} unreadable files (see skipped.csv):", fg="yellow")
        for row in s["skipped"][:10]:
            typer.echo(f"  {row['path']}: {row['reason']}")
    typer.echo(f"Head: linear, C={s['C']:g}" + (" (chosen on validation log-loss)" if s.get("C_search") else ""))
    v = s.get("validation") or {}
    if v:
        typer.echo(f"Validation accuracy {fmt_pct(v['accuracy'])}")
        for c, acc in v["per_class"].items():
            typer.echo(f"  {c:<24} {fmt_pct(acc)}")
