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
        fixed_input: Optional[str] = typer.Option(
            None, "--fixed-input", metavar="WIDTHxHEIGHT",
            help="Fix the input's size (e.g. 1920x1080) for runtimes that need static shapes; the graph still "
                 "crops and resizes inside. Default: any height and width."),
        input_size: Optional[int] = typer.Option(None, "--input-size", help="Same as --fixed-input SxS."),
        overwrite: bool = Overwrite,
    ):
        """Export for onnxruntime alone: the decoded image in; the decision, probabilities and CAMs out."""
        from ..export import export_onnx_model
        from ..model import load_model

        if fmt != "onnx":
            raise typer.BadParameter(f"--format supports 'onnx' only, got {fmt!r}.")
        fixed = None
        if fixed_input is not None:
            try:
                fixed = tuple(int(v) for v in fixed_input.lower().split("x"))
                assert len(fixed) == 2 and min(fixed) >= 1
            except (ValueError, AssertionError):
                raise typer.BadParameter(f"--fixed-input takes WIDTHxHEIGHT in pixels, e.g. 1920x1080; got "
                                         f"{fixed_input!r}.") from None
            if input_size is not None:
                raise typer.BadParameter("Give --fixed-input or --input-size, not both.")
        if input_size is not None and input_size < 1:
            raise typer.BadParameter(f"--input-size must be a positive number of pixels, got {input_size}.")
        path = export_onnx_model(load_model(model), out, fixed_input=fixed, input_size=input_size,
                                 overwrite=overwrite)
        echo(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB). Input: the decoded image, any size"
             + (f" (fixed: {fixed[0]}x{fixed[1]})" if fixed else "") + "; outputs: the decision, its runner-up, "
             "probabilities and maps. Client: examples/onnx_client.py")
