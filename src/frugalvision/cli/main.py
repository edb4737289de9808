"""The ``frugalvision`` command: a thin layer over the Python API.

Each command parses its options, calls the same function a notebook would, and
prints a short summary and the paths it wrote. Heavy libraries (torch, timm) are
imported inside command bodies, so ``--help`` is instant. Known errors become a
one-paragraph message and exit code 1; ``FRUGALVISION_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from . import backbones, compare, data, demo, evaluate, explain, export, predict, report, serve, train, tune
from . import review

_default_show = warnings.showwarning


def _show_warning(message, category, *args, **kw):
    """Data warnings are messages for people (one line), not code locations."""
    from ..exceptions import DataWarning

    if issubclass(category, DataWarning):
        typer.secho(f"Warning: {message}", err=True, fg="yellow")
    else:
        _default_show(message, category, *args, **kw)


app = typer.Typer(
    name="frugalvision",
    help="Build a trustworthy image classifier on a laptop CPU: train, evaluate, explain, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
for module in (demo, data, review, train, predict, evaluate, report, explain, tune, compare, export, serve, backbones):
    module.register(app)


def main(argv=None) -> int:
    """Console-script entry point; returns the exit code (0 ok, 1 user error, 2 usage)."""
    from ..exceptions import FrugalVisionError

    warnings.showwarning = _show_warning
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    except (FrugalVisionError, FileExistsError, FileNotFoundError, ValueError) as exc:
        # ValueError: a bad argument found deep in a library (an unusual C, a split size) is still the user's.
        if os.environ.get("FRUGALVISION_DEBUG"):
            raise
        typer.secho(f"Error: {exc}", err=True, fg="red")
        typer.echo("(Set FRUGALVISION_DEBUG=1 to see the full traceback.)", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("Interrupted. Work done so far is cached; run the same command again to resume.", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
