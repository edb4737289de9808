"""``frugalvision export``: one ONNX file with preprocessing, probabilities and CAMs inside."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import Overwrite, echo


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="ONNX file to write."),
        fmt: str = typer.Option("onnx", "--format", help="Only 'onnx' for now."),
        input_size: Optional[int] = typer.Option(None, "--input-size", help="Square input side (default: the network's)."),
        overwrite: bool = Overwrite,
    ):
        """Export for onnxruntime alone: uint8 images in; probabilities and per-class CAMs out."""
        from ..export import export_onnx_model
        from ..model import load_model

        if fmt != "onnx":
            raise typer.BadParameter(f"--format supports 'onnx' only, got {fmt!r}.")
        path = export_onnx_model(load_model(model), out, input_size=input_size, overwrite=overwrite)
        echo(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB). See the README for a 10-line onnxruntime example.")
