"""``frugalvision serve``: the web page and JSON API for a model (127.0.0.1 by default)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import echo


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 127.0.0.1 keeps it on this machine."),
        port: int = typer.Option(8000, "--port"),
        max_upload_mb: int = typer.Option(20, "--max-upload-mb", help="Largest accepted file."),
        allow_host: list[str] = typer.Option(
            [], "--allow-host", metavar="NAME",
            help="Also answer requests for this host name or IP (repeatable). 127.0.0.1, localhost and [::1] are "
                 "always allowed, and so is --host unless it is 0.0.0.0 or ::; other Host headers get 400 "
                 "(stops DNS rebinding), and browser POSTs from other origins get 403."),
        workers: int = typer.Option(0, "--workers", min=0,
                                    help="Threads doing the image work (0: one per core)."),
        queue: int = typer.Option(-1, "--queue", min=-1,
                                  help="Requests allowed to wait for a worker; beyond that the answer is "
                                       "503 with Retry-After (-1: 4 per worker)."),
        api_docs: bool = typer.Option(
            False, "--api-docs",
            help="Serve a self-contained API page at /docs (off by default: FastAPI's Swagger UI and ReDoc load "
                 "from a CDN). The OpenAPI schema is always at /openapi.json."),
    ):
        """Open http://HOST:PORT/ : drop images, see labels and the CAMs of the top-2 classes.

        The JSON API is POST /predict (field 'files') and POST /explain (field 'file'); its schema is at
        /openapi.json, and a readable page at /docs with --api-docs.
        """
        from ..model import load_model
        from ..serve import Limits, allowed_hosts, create_app
        from ..serve._server import run_server

        try:
            hosts = allowed_hosts(allow_host, bind=host)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--allow-host") from None
        app_ = create_app(load_model(model), limits=Limits(max_upload_bytes=max_upload_mb * 1024 * 1024),
                          allowed_hosts=hosts, workers=workers or None, queue=None if queue < 0 else queue,
                          api_docs=api_docs)
        shown = f"[{host}]" if ":" in host else host
        echo(f"Serving on http://{shown}:{port}/  (API schema: /openapi.json"
                   f"{', docs: /docs' if api_docs else ''}; Ctrl-C to stop)")
        if host in ("0.0.0.0", "::") and not allow_host:
            echo("Bound to all interfaces, but only 127.0.0.1, localhost and [::1] are answered: add "
                       "--allow-host NAME for the name or address other machines use.")
        run_server(app_, host=host, port=port)
