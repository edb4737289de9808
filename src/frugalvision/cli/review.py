"""``frugalvision review``: the review page of a ``prepare`` folder (127.0.0.1 by default)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import echo


def register(app: typer.Typer) -> None:
    @app.command("review")
    def review_cmd(
        prepared: Path = typer.Argument(..., help="The folder 'frugalvision prepare' wrote (holds manifest.csv)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 127.0.0.1 keeps it on this machine."),
        port: int = typer.Option(8765, "--port"),
        allow_host: list[str] = typer.Option(
            [], "--allow-host", metavar="NAME",
            help="Also answer requests for this host name or IP (repeatable); as for 'frugalvision serve'."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the page in a web browser."),
    ):
        """Review the audit in the browser: accept suggested labels, keep or exclude images, by keyboard.

        Decisions are saved as you make them to PREPARED/manifest.reviewed.csv (train on it) and
        PREPARED/review_decisions.json (run review again to resume); manifest.csv and your images are never
        changed. Keys: j/k move, a accept the suggestion, o keep, x exclude, u undo, ? help.
        """
        import contextlib

        from .._io import run_folder
        from ..exceptions import DataError
        from ..review import create_app
        from ..review.decisions import REVIEWED_NAME
        from ..serve._server import run_server
        from ..serve.guard import allowed_hosts

        try:
            hosts = allowed_hosts(allow_host, bind=host)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--allow-host") from None
        folder = prepared.parent if prepared.is_file() and prepared.name == "manifest.csv" else prepared
        if not (folder / "manifest.csv").is_file():
            raise DataError(f"No manifest.csv in '{folder}'. Run 'frugalvision prepare DATA --out {folder}' first, "
                            f"then review that folder.")
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
        # One review per folder at a time: two servers would overwrite each other's decisions.
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(run_folder(folder, ()))
            except DataError:
                raise DataError(f"'{folder}' is open in another 'frugalvision review' (or another run is writing "
                                f"to it). Use that page, or stop it first.") from None
            app_ = create_app(folder, allowed_hosts=hosts)
            echo(f"Reviewing {folder} on {url}  (Ctrl-C to stop)\n"
                       f"Decisions go to {folder / REVIEWED_NAME}; then: frugalvision train {folder / REVIEWED_NAME}")
            if not no_browser:
                _open_when_up(url, host, port)
            run_server(app_, host=host, port=port)


def _open_when_up(url: str, host: str, port: int) -> None:
    """Open ``url`` in the default browser once the server accepts connections (a daemon thread)."""
    import socket
    import threading
    import time
    import webbrowser

    def wait_then_open():
        target = "127.0.0.1" if host in ("0.0.0.0", "::") else host.strip("[]")
        for _ in range(100):
            try:
                with socket.create_connection((target, port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            return
        webbrowser.open(url)

    threading.Thread(target=wait_then_open, daemon=True).start()
