"""``frugalvision predict``: label image files or folders -> CSV."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import (CacheDir, Overwrite, Quiet, RayActors, RayAddress, RayCpus, RayShard, RunEngine, echo,
                      ray_batch, secho)


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        paths: List[Path] = typer.Argument(..., help="Image files or folders."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV to write (default: print to the terminal)."),
        engine: str = RunEngine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
        address: Optional[str] = RayAddress, actors: Optional[int] = RayActors, cpus_per_actor: float = RayCpus,
        shard_size: int = RayShard,
        embeddings: bool = typer.Option(False, "--embeddings", help="With --engine ray: add each image's embedding."),
        cams: bool = typer.Option(False, "--cams", help="With --engine ray: also write a CAM panel PNG (top-1, top-2) per image."),
    ):
        """Predict labels: CSV path,label,probability,rule,most_probable,most_probable_probability,runner_up,
        runner_up_probability[,ood_score],error (see "How a decision is made" in the README).

        With --engine ray: Parquet shards in the --out folder (same columns, plus all probabilities,
        and embeddings / CAM PNGs when asked); a re-run skips finished shards.
        """
        from .._io import csv_text, refuse_overwrite, write_text
        from ..inference import predict
        from ..model import load_model

        if engine == "ray":
            if out is None:
                raise typer.BadParameter("--engine ray writes Parquet shards to a folder: pass --out FOLDER.")
            ray_batch(model, paths, out, address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                      shard_size=shard_size, engine_kw={"cache_dir": cache_dir}, embeddings=embeddings,
                      cams=("top2", "auto") if cams else None, progress=not quiet, overwrite=overwrite)
            return
        if embeddings or cams:
            raise typer.BadParameter("--embeddings and --cams go with --engine ray (Parquet output); locally, use "
                                     "frugalvision explain for CAMs and the Python API (Model.embed) for embeddings.")
        if out is not None:
            refuse_overwrite(out, overwrite, "predictions file")
        m = load_model(model)
        table = predict(m, paths, progress=not quiet, engine=engine, cache_dir=cache_dir)
        csv = csv_text(table, float_format="%.4f")
        if out is None:
            echo(csv, nl=False)
        else:
            write_text(out, csv, exclusive=not overwrite)  # two runs aimed at one file: the second one fails
            echo(f"Wrote {len(table)} predictions to {out}")
        unknown = int((table["label"] == "unknown").sum())
        if unknown:
            echo(f"{unknown} images look like none of the classes (label 'unknown', see ood_score); "
                       f"train with --no-reject to always get a class.", err=True)
        bad = table[table["error"] != ""]
        if len(bad):
            secho(f"{len(bad)} files could not be read:", fg="yellow", err=True)
            for p, r in zip(bad["path"][:10], bad["error"][:10]):
                echo(f"  {p}: {r}", err=True)
