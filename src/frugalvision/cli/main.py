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

from ._common import echo, secho

from . import backbones, cache, compare, data, demo, evaluate, explain, export, predict, report, serve, train, tune
from . import label, review

_default_show = warnings.showwarning


def _show_warning(message, category, *args, **kw):
    """Data warnings are messages for people (one line), not code locations."""
    from ..exceptions import DataWarning

    if issubclass(category, DataWarning):
        secho(f"Warning: {message}", err=True, fg="yellow")
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
for module in (demo, data, review, label, train, predict, evaluate, report, explain, tune, compare, export, serve, backbones,
               cache):
    module.register(app)


def os_error_paragraph(exc: OSError) -> str:
    """What went wrong with which path, and what to do, for the operating-system errors a run meets."""
    import errno

    where = f"'{exc.filename}'" if exc.filename else "a file"
    what = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        todo = ("The disk is full. Free some space (or point --out / --cache-dir at another disk) and run the same "
                "command again: writes are atomic, so nothing half-written is left to block the rerun.")
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        todo = ("The folder is read-only or not writable by you. Choose another --out (or --cache-dir, or "
                "$FRUGALVISION_CACHE) that you can write to.")
    else:
        todo = "Check that the path exists and is readable, then run the command again."
    return f"cannot use {where}: {what}. {todo}"


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
        secho(f"Error: {exc}", err=True, fg="red")
        echo("(Set FRUGALVISION_DEBUG=1 to see the full traceback.)", err=True)
        return 1
    except OSError as exc:  # a full disk, a read-only folder, a permission: one paragraph, not a traceback
        if os.environ.get("FRUGALVISION_DEBUG"):
            raise
        secho(f"Error: {os_error_paragraph(exc)}", err=True, fg="red")
        return 1
    except KeyboardInterrupt:
        echo("Interrupted. Work done so far is cached; run the same command again to resume.", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
