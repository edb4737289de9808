"""``frugalvision collect`` and ``frugalvision prepare``: build and audit the data set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo, echo_paths


def register(app: typer.Typer) -> None:
    @app.command("collect")
    def collect_cmd(
        csv: Path = typer.Argument(..., help="CSV with columns url,label (extra columns are kept)."),
        out: Path = typer.Option(Path("collected"), "--out", "-o", help="Folder for images, manifest.csv, collect_log.csv."),
        workers: int = typer.Option(8, "--workers", min=1, help="Concurrent downloads."),
        retries: int = typer.Option(3, "--retries", min=1,
                                    help="Attempts per URL (timeouts, 429, 5xx), with back-off."),
        timeout: float = typer.Option(15.0, "--timeout", min=0.1,
                                      help="Seconds one connect or read may stall before the attempt is retried."),
        deadline: float = typer.Option(60.0, "--deadline", min=0.1,
                                       help="Seconds per URL for the whole transfer, all attempts included."),
        min_rate: float = typer.Option(4.0, "--min-rate", min=0.0,
                                       help="KB/s an attempt must average after --rate-grace seconds (0: no minimum)."),
        rate_grace: float = typer.Option(10.0, "--rate-grace", min=0.0,
                                         help="Seconds from the first byte before --min-rate applies."),
        max_mb: float = typer.Option(20.0, "--max-mb", min=0.001, help="Largest accepted file."),
        allow_private: bool = typer.Option(False, "--allow-private", help="Also fetch from loopback, private and "
                                           "link-local addresses (intranets); refused by default."),
        quiet: bool = Quiet,
    ):
        """Download images listed in a CSV; re-running resumes and downloads nothing twice."""
        from ..data.collect import collect, printable

        res = collect(csv, out, workers=workers, retries=retries, timeout=timeout, max_bytes=int(max_mb * 1024 * 1024),
                      deadline=deadline, min_rate=min_rate * 1024, rate_grace=rate_grace, progress=not quiet,
                      allow_private=allow_private)
        log = res.log
        counts = {s: int((log["status"] == s).sum()) for s in ("duplicate", "conflict", "failed")}
        echo(f"{res.n_downloaded} downloaded, {res.n_skipped} already there, {counts['duplicate']} duplicates, "
                   f"{counts['conflict']} label conflicts, {counts['failed']} failed")
        # URLs and reasons come from strangers: printable() escapes terminal control characters.
        for r in log[log["status"].isin(["failed", "conflict"])].head(20).itertuples():
            echo(f"  {r.status} row {r.row} {printable(r.url, 100)}: {r.reason}")
        echo_paths("Wrote:", [out / "manifest.csv", out / "collect_log.csv"])

    @app.command("prepare")
    def prepare_cmd(
        data: Path = typer.Argument(..., help="Folder of class sub-folders or CSV manifest (with --suggest: the labelled examples)."),
        out: Path = typer.Option(Path("prepared"), "--out", "-o", help="Folder for manifest.csv, audit.json, audit.html."),
        copy_clean: Optional[Path] = typer.Option(None, "--copy-clean", help="Also copy the kept files here."),
        suggest: Optional[Path] = typer.Option(None, "--suggest", help="Folder of unlabelled images to rank for labelling."),
        backbone: str = typer.Option("efficientnet_lite0", "--backbone", "-b"),
        exclude_test_duplicates: bool = typer.Option(
            False, "--exclude-test-duplicates",
            help="Also exclude extra copies inside the test split (by default test rows are never excluded: "
                 "they go to review, and a train/test leak removes the train copy)."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Audit the data (duplicates, leaks, balance, quality, label errors) into a clean manifest; never touches your files."""
        from .._io import csv_text, refuse_overwrite, write_text

        if suggest is not None:
            from ..curate import suggest_labels

            target = out / "suggestions.csv"
            refuse_overwrite(target, overwrite, "suggestions file")
            table = suggest_labels(data, suggest, backbone=backbone, engine=engine, cache_dir=cache_dir,
                                   progress=not quiet)
            write_text(target, csv_text(table, float_format="%.4f"))
            echo(table.head(15).to_string(index=False))
            echo(f"Wrote {target}: label the top rows first (most uncertain).")
            return
        from ..curate import prepare

        res = prepare(data, out, backbone=backbone, engine=engine, cache_dir=cache_dir, copy_clean=copy_clean,
                      exclude_test_duplicates=exclude_test_duplicates, overwrite=overwrite, progress=not quiet)
        echo(res.text())
        echo_paths("Wrote:", [out / "manifest.csv", out / "audit.json", out / "audit.html"]
                   + ([copy_clean] if copy_clean else []))
        echo(f"Next: frugalvision review {out}   (decide on the flagged images; writes manifest.reviewed.csv)")
        echo(f"Then: frugalvision train {out / 'manifest.reviewed.csv'} --out runs/clean   "
                   f"(or {out / 'manifest.csv'} to take the audit's decisions as they are)")
