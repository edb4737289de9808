"""``frugalvision train``: folder/manifest -> model file + split + summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import (CacheDir, Overwrite, Quiet, RayActors, RayAddress, RayCpus, RayShard, TrainEngine, echo,
                      echo_paths, fmt_pct, secho)


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
        val_size: Optional[float] = typer.Option(None, help="Validation fraction (stratified, seeded; default 0.15, none on the small-data path)."),
        test_size: Optional[float] = typer.Option(None, help="Test fraction when the data has no test/ folder (default 0.15; 0 fits on every labelled image)."),
        few_shot: Optional[bool] = typer.Option(None, "--few-shot/--no-few-shot", help="The small-data path: every labelled image fits the head, chosen by cross-validation (default: used when the smallest class has fewer than 20 images)."),
        seed: int = typer.Option(0, help="Seed for the split."),
        goal: Optional[list[str]] = typer.Option(None, "--goal", help="What good enough means, e.g. 'accuracy>=0.9' or 'defective:recall>=0.9' (repeatable); stored with the model, the report gives its verdict."),
        precision: Optional[str] = typer.Option(None, "--precision", help="int8 (the shipped quantized backbone, 1.7x faster on AVX2; the default where it can run: efficientnet_lite0 with its shipped weights, not fine-tuned), fp32 (the full-precision network; the default elsewhere), or auto (the int8 model when it loses at most 0.5 point against the fp32 model on your validation images)."),
        features: str = typer.Option("last", "--features", help="last (the pooled last layer) or multi (plus the average- and max-pooled intermediate stages, same pass: pays on data unlike ImageNet, e.g. textures, defects, digits; maps at stride 16)."),
        target: Optional[list[str]] = typer.Option(None, "--target", help="Operating point, e.g. 'defective:recall>=0.9' or 'ok:precision>=0.95' (repeatable); thresholds are chosen on the validation split."),
        accept_rate: float = typer.Option(0.95, "--accept-rate", help="Share of normal (validation) images the 'none of these' threshold keeps; the rest of what looks unusual is labelled 'unknown'."),
        no_reject: bool = typer.Option(False, "--no-reject", help="Never label an image 'unknown' (no 'none of these' score)."),
        engine: str = TrainEngine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
        address: Optional[str] = RayAddress, actors: Optional[int] = RayActors, cpus_per_actor: float = RayCpus,
        shard_size: int = RayShard,
    ):
        """Train a classifier from a folder of labelled images (embeddings are cached).

        Every option composes with every other, --finetune included; a combination that cannot work is refused
        with the reason before any work starts.
        """
        import time

        from ..recipe import Recipe
        from ..training import train

        recipe = Recipe(backbone=backbone, weights=str(weights) if weights else None, precision=precision,
                        features=features, finetune=finetune, epochs=epochs, head=head, C=C, class_weight=class_weight, views=views,
                        augment=augment, balance_by_augmentation=balance_by_augmentation, val_size=val_size,
                        test_size=test_size, few_shot=few_shot, seed=seed, goals=tuple(goal or ()),
                        targets=tuple(target or ()),
                        reject=not no_reject, accept_rate=accept_rate)
        t = time.perf_counter()
        ray_options = {"address": address, "actors": actors, "cpus_per_actor": cpus_per_actor,
                       "shard_size": shard_size} if engine == "ray" else None
        model = train(data, recipe, out=out, engine=engine, cache_dir=cache_dir, progress=not quiet,
                      overwrite=overwrite, ray_options=ray_options)
        print_training(model, time.perf_counter() - t)
        files = ["model.safetensors", "split.csv", "skipped.csv", "training.json"]
        echo_paths("Wrote:", [out / n for n in files + (["finetune_checkpoint.safetensors"] if finetune else [])])
        echo(f"Next: frugalvision evaluate {out}   |   frugalvision report {out}")


def print_training(model, seconds: float) -> None:
    s = model.training_
    counts = s["counts"]
    echo(f"Trained {model!r} in {seconds:.1f} s")
    recipe = s.get("recipe") or {}
    if not s.get("precision_check"):  # which backbone graph ran (auto's choice is said below, with its numbers)
        bb = model.info.backbone
        chosen = recipe.get("precision")
        why = ("" if bb.precision != "int8" else " (the shipped quantized graph" + (
            "; the default, within 0.5 point of fp32 on each data set we measured: --precision fp32 for the "
            "full-precision network, auto to compare both on your validation images)" if chosen is None else ")"))
        echo(f"Backbone: {bb.name}, {bb.precision}{why}")
    if s.get("ray"):
        from ..distributed.embed import job_summary

        for job in s["ray"]:
            echo(job_summary(job))
    echo("Images per split: " + ", ".join(f"{k} {sum(v.values())}" for k, v in counts.items()))
    if s["n_skipped"]:
        secho(f"Skipped {s['n_skipped']} unreadable files (see skipped.csv):", fg="yellow")
        for row in s["skipped"][:10]:
            echo(f"  {row['path']}: {row['reason']}")
    f = model.info.finetune
    if f:
        echo(f"Fine-tuned {', '.join(f['trainable'])} for {f['epochs_run']} epochs (best epoch "
                   f"{f['best_epoch']}, val loss {f['best_val_loss']:.4f}) in {f['seconds']:.0f} s"
                   + (f"; resumed after epoch {f['resumed_from_epoch']}" if f['resumed_from_epoch'] else ""))
    sd = s.get("small_data")
    if sd:
        echo(f"Small-data path: {sd['reason']}, so every training image fits the head (no validation split) "
                   f"and {sd['folds']}-fold cross-validation ({sd['repeats']} repeats) chose it: {sd['head']}.")
        for c in sd["candidates"]:
            echo(f"  {c['head']:<44} CV accuracy {fmt_pct(c['cv_accuracy'])}")
        est = sd["estimate"]
        if est.get("accuracy") is not None:
            lo, hi = est["ci"]
            echo(f"Expect about {fmt_pct(est['accuracy'])} accuracy on new images like these (95 % Wilson CI "
                       f"{fmt_pct(lo)} to {fmt_pct(hi)}, out-of-fold on {est['n']} images; chosen among "
                       f"{len(sd['candidates'])} heads on the same folds, so slightly optimistic).")
        else:
            secho(f"No accuracy estimate: {est['reason']}. Label more images.", fg="yellow")
        if "test" not in counts:
            echo("No test images were held out (--test-size 0): evaluate on other labelled images with "
                       "'frugalvision evaluate RUN --data DIR', or label more and train again.")
        else:
            echo(f"{sum(counts['test'].values())} test images were held out for evaluate and report "
                       f"(--test-size 0 fits on every labelled image instead).")
    elif recipe.get("head", "linear") == "linear":
        echo(f"Head: linear, C={s['C']:g}" + (" (chosen on validation log-loss)" if s.get("C_search") else ""))
    else:
        echo(f"Head: {recipe['head']} {recipe.get('head_params') or {}}")
    for note in s.get("notes") or []:
        secho(f"Note: {note}", fg="yellow")
    if s.get("augmentation", {}).get("augmented_rows"):
        a = s["augmentation"]
        echo(f"Augmentation: {a['policy']}, {a['views']} views/image -> {a['augmented_rows']} extra training rows")
    pc = s.get("precision_check")
    if pc:
        echo(f"Precision: {pc['chosen']} ({pc['reason']})")
    op = model.info.operating_point
    for goal, got in (op.validation if op is not None else {}).items():
        lo, hi = got.get("ci", (None, None))
        echo(f"Operating point {goal}: threshold {got['threshold']:.3f}, reached {fmt_pct(got['value'])} on "
                   f"{got['n']} {got.get('judged_on', 'validation')} images"
                   + (f" (95 % Wilson CI {fmt_pct(lo)} to {fmt_pct(hi)})" if lo is not None else ""))
        if got.get("note"):
            secho(f"  Note: {got['note']}", fg="yellow")
    rej = model.info.reject
    if rej is not None and rej.threshold is not None:
        from ..decision import reject_rule

        rule = reject_rule(dict(zip(model.classes, model.reject_thresholds)))
        echo(f"'None of these': {rule} are labelled unknown (keeps "
                   f"{fmt_pct(rej.accept_rate)} of normal images, {rej.note}: {rej.n_validation}; --no-reject turns "
                   f"it off)")
    elif rej is not None:
        secho(f"'None of these': {rej.note}", fg="yellow")
    v = s.get("validation") or {}
    if v:
        unknown = v.get("unknown_share") or 0
        echo(f"Validation accuracy {fmt_pct(v['accuracy'])} on {v.get('n', '?')} images (the model's decisions"
                   + (f"; {fmt_pct(unknown)} answered unknown, counted as not correct)" if unknown else ")"))
        for c, acc in v["per_class"].items():
            echo(f"  {c:<24} {fmt_pct(acc)}")
