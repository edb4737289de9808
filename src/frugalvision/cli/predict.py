"""``frugalvision predict``: label image files or folders -> CSV."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        paths: List[Path] = typer.Argument(..., help="Image files or folders."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV to write (default: print to the terminal)."),
        top_k: int = typer.Option(2, "--top-k", "-k", help="How many labels per image."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Predict labels: CSV path,label,probability,top2_label,top2_probability,...,error."""
        from .._io import refuse_overwrite, write_text
        from ..model import load_model

        if out is not None:
            refuse_overwrite(out, overwrite, "predictions file")
        m = load_model(model)
        table = m.predict(paths, top_k=top_k, progress=not quiet, engine=engine, cache_dir=cache_dir)
        csv = table.to_csv(index=False, float_format="%.4f")
        if out is None:
            typer.echo(csv, nl=False)
        else:
            write_text(out, csv)
            typer.echo(f"Wrote {len(table)} predictions to {out}")
        bad = table[table["error"] != ""]
        if len(bad):
            typer.secho(f"{len(bad)} files could not be read:", fg="yellow", err=True)
            for p, r in zip(bad["path"][:10], bad["error"][:10]):
                typer.echo(f"  {p}: {r}", err=True)
