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
        head: str = typer.Option("linear", "--head", help="linear (exact CAM) or mlp (one hidden layer; Grad-CAM)."),
        augment: Optional[str] = typer.Option(None, "--augment", help="Augmentation policy: light, default, strong (default: 'default' for --views, 'light' for --finetune)."),
        views: int = typer.Option(0, "--views", help="Augmented views per training image (embeddings cached)."),
        balance_by_augmentation: bool = typer.Option(False, "--balance-by-augmentation", help="More views for minority classes."),
        finetune: Optional[str] = typer.Option(None, "--finetune", help="'last-stage' or 'N-stages': also train the backbone's last stage(s)."),
        epochs: int = typer.Option(24, "--epochs", help="Fine-tuning epochs (with early stopping)."),
        val_size: float = typer.Option(0.15, help="Validation fraction (stratified, seeded)."),
        test_size: float = typer.Option(0.15, help="Test fraction when the data has no test/ folder."),
        seed: int = typer.Option(0, help="Seed for the split."),
        goal: Optional[list[str]] = typer.Option(None, "--goal", help="What good enough means, e.g. 'accuracy>=0.9' or 'defective:recall>=0.9' (repeatable); stored with the model, the report gives its verdict."),
        precision: str = typer.Option("fp32", "--precision", help="fp32, int8 (the shipped quantized backbone, 1.8x faster on AVX2, ~2.3x with VNNI) or auto (int8 only when a check on your images allows it)."),
        target: Optional[list[str]] = typer.Option(None, "--target", help="Operating point, e.g. 'defective:recall>=0.9' or 'ok:precision>=0.95' (repeatable); thresholds are chosen on the validation split."),
        accept_rate: float = typer.Option(0.95, "--accept-rate", help="Share of normal (validation) images the 'none of these' threshold keeps; the rest of what looks unusual is labelled 'unknown'."),
        no_reject: bool = typer.Option(False, "--no-reject", help="Never label an image 'unknown' (no 'none of these' score)."),
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
        if finetune:
            from ..finetune import finetune as run_finetune

            model = run_finetune(data, backbone=backbone, weights=weights, stages=finetune, out=out, epochs=epochs,
                                 views=views or 8, augment=augment or "light", seed=seed, engine=engine,
                                 cache_dir=cache_dir, progress=not quiet, overwrite=overwrite)
            f = model.finetune_
            typer.echo(f"Fine-tuned {', '.join(f['trainable'])} for {f['epochs_run']} epochs (best epoch "
                       f"{f['best_epoch']}, val loss {f['best_val_loss']:.4f}) in {f['seconds']:.0f} s"
                       + (f"; resumed after epoch {f['resumed_from_epoch']}" if f['resumed_from_epoch'] else ""))
            echo_paths("Wrote:", [out / "model.safetensors", out / "finetune_checkpoint.safetensors"])
            return
        model = train(data, backbone=backbone, weights=weights, out=out, C=C_value, class_weight=class_weight,
                      head=head, views=views, augment=augment or "default", balance_by_augmentation=balance_by_augmentation,
                      val_size=val_size, test_size=test_size, seed=seed, engine=engine, cache_dir=cache_dir,
                      targets=target, reject=not no_reject, accept_rate=accept_rate, precision=precision, goals=goal,
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
    settings = model.info.training["settings"]
    if settings["head"] == "linear":
        typer.echo(f"Head: linear, C={s['C']:g}" + (" (chosen on validation log-loss)" if s.get("C_search") else ""))
    else:
        typer.echo(f"Head: {settings['head']} {settings['head_params']}")
    if s.get("augmentation", {}).get("augmented_rows"):
        a = s["augmentation"]
        typer.echo(f"Augmentation: {a['policy']}, {a['views']} views/image -> {a['augmented_rows']} extra training rows")
    pc = s.get("precision_check")
    if pc:
        typer.echo(f"Precision: {pc['chosen']} ({pc['reason']})")
    op = model.info.operating_point
    for goal, got in (op or {}).get("validation", {}).items():
        typer.echo(f"Operating point {goal}: threshold {got['threshold']:.3f}, reached {fmt_pct(got['value'])} on "
                   f"{got['n']} validation images")
    rej = model.info.reject
    if rej and rej.get("threshold") is not None:
        typer.echo(f"'None of these': images scoring above {rej['threshold']:.3f} are labelled unknown (keeps "
                   f"{fmt_pct(rej['accept_rate'])} of normal validation images; --no-reject turns it off)")
    v = s.get("validation") or {}
    if v:
        typer.echo(f"Validation accuracy {fmt_pct(v['accuracy'])}")
        for c, acc in v["per_class"].items():
            typer.echo(f"  {c:<24} {fmt_pct(acc)}")
