"""``frugalvision collect`` and ``frugalvision prepare``: build and audit the data set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo_paths


def register(app: typer.Typer) -> None:
    @app.command("collect")
    def collect_cmd(
        csv: Path = typer.Argument(..., help="CSV with columns url,label (extra columns are kept)."),
        out: Path = typer.Option(Path("collected"), "--out", "-o", help="Folder for images, manifest.csv, collect_log.csv."),
        workers: int = typer.Option(8, "--workers", help="Concurrent downloads."),
        retries: int = typer.Option(3, "--retries", help="Attempts per URL (timeouts, 429, 5xx), with back-off."),
        timeout: float = typer.Option(15.0, "--timeout", help="Seconds per request."),
        max_mb: float = typer.Option(20.0, "--max-mb", help="Largest accepted file."),
        quiet: bool = Quiet,
    ):
        """Download images listed in a CSV; re-running resumes and downloads nothing twice."""
        from ..data.collect import collect

        res = collect(csv, out, workers=workers, retries=retries, timeout=timeout, max_bytes=int(max_mb * 1024 * 1024),
                      progress=not quiet)
        log = res.log
        typer.echo(f"{res.n_downloaded} downloaded, {res.n_skipped} already there, "
                   f"{int((log['status'] == 'duplicate').sum())} duplicates, {int((log['status'] == 'failed').sum())} failed")
        for r in log[log["status"] == "failed"].head(20).itertuples():
            typer.echo(f"  failed {r.url}: {r.reason}")
        echo_paths("Wrote:", [out / "manifest.csv", out / "collect_log.csv"])

    @app.command("prepare")
    def prepare_cmd(
        data: Path = typer.Argument(..., help="Folder of class sub-folders or CSV manifest (with --suggest: the labelled examples)."),
        out: Path = typer.Option(Path("prepared"), "--out", "-o", help="Folder for manifest.csv, audit.json, audit.html."),
        copy_clean: Optional[Path] = typer.Option(None, "--copy-clean", help="Also copy the kept files here."),
        suggest: Optional[Path] = typer.Option(None, "--suggest", help="Folder of unlabelled images to rank for labelling."),
        backbone: str = typer.Option("efficientnet_lite0", "--backbone", "-b"),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Audit the data (duplicates, leaks, balance, quality, label errors) into a clean manifest; never touches your files."""
        from .._io import refuse_overwrite, write_text

        if suggest is not None:
            from ..data.prepare import suggest_labels

            target = out / "suggestions.csv"
            refuse_overwrite(target, overwrite, "suggestions file")
            table = suggest_labels(data, suggest, backbone=backbone, engine=engine, cache_dir=cache_dir,
                                   progress=not quiet)
            write_text(target, table.to_csv(index=False, float_format="%.4f"))
            typer.echo(table.head(15).to_string(index=False))
            typer.echo(f"Wrote {target}: label the top rows first (most uncertain).")
            return
        from ..data.prepare import prepare

        res = prepare(data, out, backbone=backbone, engine=engine, cache_dir=cache_dir, copy_clean=copy_clean,
                      overwrite=overwrite, progress=not quiet)
        typer.echo(res.text())
        echo_paths("Wrote:", [out / "manifest.csv", out / "audit.json", out / "audit.html"]
                   + ([copy_clean] if copy_clean else []))
        typer.echo(f"Next: frugalvision train {out / 'manifest.csv'} --out runs/clean")
