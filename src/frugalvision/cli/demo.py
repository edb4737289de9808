"""``frugalvision demo``: the whole pipeline, offline, on the embedded Fashion-MNIST sample."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import CacheDir, Engine, Quiet, echo, echo_paths


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("frugalvision-demo"), "--out", "-o", help="Folder for the demo data and run."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet,
    ):
        """Train, evaluate, explain and report on 600 embedded product photos (no network needed)."""
        import time

        t0 = time.perf_counter()  # before the imports: they are part of what a user waits for (~1.5 s)
        from ..data.demo import write_demo_dataset
        from ..evaluation import evaluate
        from ..reporting import write_report
        from ..training import train
        from .train import print_training

        data = write_demo_dataset(out / "data")
        echo(f"Demo data (Fashion-MNIST sample, MIT licence): {data}")
        run = out / "run"
        model = train(data, out=run, engine=engine, cache_dir=cache_dir, progress=not quiet, overwrite=True)
        print_training(model, time.perf_counter() - t0)
        result = evaluate(model, progress=not quiet)
        echo(result.summary())
        written = result.save(run / "evaluation", overwrite=True)
        report = write_report(model, run / "report.html", evaluation=result, overwrite=True, progress=not quiet)
        echo_paths("Wrote:", [run / "model.safetensors", *written, report])
        echo(f"Demo finished in {time.perf_counter() - t0:.0f} s. Open {report} in a browser.")
