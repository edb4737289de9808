"""``frugalvision serve``: the web page and JSON API for a model (127.0.0.1 by default)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 127.0.0.1 keeps it on this machine."),
        port: int = typer.Option(8000, "--port"),
        max_upload_mb: int = typer.Option(20, "--max-upload-mb", help="Largest accepted file."),
    ):
        """Open http://HOST:PORT/ : drop images, see labels and the CAMs of the top-2 classes. API docs at /docs."""
        import uvicorn

        from ..model import load_model
        from ..serve import Limits, create_app

        app_ = create_app(load_model(model), limits=Limits(max_upload_bytes=max_upload_mb * 1024 * 1024))
        typer.echo(f"Serving on http://{host}:{port}/  (API: /docs; Ctrl-C to stop)")
        uvicorn.run(app_, host=host, port=port, log_level="warning")
