"""``frugalvision report``: one self-contained HTML file for people who never read code."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import CacheDir, Engine, Overwrite, Quiet, echo


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default RUN/report.html)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Labelled folder/CSV (default: the model's test split)."),
        group_by: Optional[List[str]] = typer.Option(None, "--group-by", help="Manifest column to audit by (repeatable)."),
        unknown: Optional[Path] = typer.Option(None, "--unknown", help="Folder of images of none of the classes, to show how well they are rejected."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report's numbers as JSON here."),
        goal: Optional[List[str]] = typer.Option(None, "--goal", help='What "good enough" means, e.g. "accuracy>=0.9" or "defective:recall>=0.9" (repeatable): the summary opens with met / not met / cannot tell yet.'),
        faithfulness_images: Optional[int] = typer.Option(None, "--faithfulness-images", min=1, help="Correctly classified test images per class for the map faithfulness test (default 30, the fewest a bootstrap interval is given for; each costs 10 backbone passes, ~0.06 s on 2 cores in int8)."),
        no_explain: bool = typer.Option(False, "--no-explain", help="Skip CAM panels and faithfulness (faster)."),
        engine: str = Engine, cache_dir: Optional[Path] = CacheDir, quiet: bool = Quiet, overwrite: bool = Overwrite,
    ):
        """Write the HTML report: summary, data, metrics with CIs, confusion, bias, calibration, CAMs, model card."""
        from ..model import load_model
        from ..reporting import write_report

        m = load_model(model)
        target = out or (m.run_dir / "report.html")
        path = write_report(m, target, data=data, group_by=group_by or None, explain=not no_explain, unknown=unknown,
                        faithfulness=not no_explain, json_out=json_out, overwrite=overwrite, progress=not quiet,
                        engine=engine, cache_dir=cache_dir, goals=goal or None,
                        faithfulness_per_class=faithfulness_images)
        echo(f"Wrote {path}" + (f" and {json_out}" if json_out else ""))
