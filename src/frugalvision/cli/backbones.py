"""``frugalvision backbones``: list the registered backbones (no torch import)."""

from __future__ import annotations

import typer

from ._common import echo


def register(app: typer.Typer) -> None:
    @app.command("backbones")
    def backbones_cmd(pattern: str = typer.Argument("*", help="Wildcard filter, e.g. 'efficientnet*'.")):
        """List registered backbones: weights source, input size, embedding width, cost.

        Any timm model also works as --backbone timm:<name> (e.g. timm:convnext_tiny.fb_in1k).
        """
        from ..backbones import get_spec, list_backbones

        echo(f"{'name':<20} {'weights':<40} {'size':>4} {'dim':>5} {'params':>7} {'GFLOPs':>6}  offline")
        for name in list_backbones(pattern):
            s = get_spec(name)
            echo(f"{s.name:<20} {s.weights:<40} {s.input_size:>4} {s.embed_dim:>5} {s.params_m:>6.1f}M "
                       f"{s.gflops:>6.2f}  {'yes' if s.offline else 'no: download once, or --weights FILE'}")
