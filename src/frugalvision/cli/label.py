"""``frugalvision label``: the labelling loop in the browser (127.0.0.1 by default)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("label")
    def label_cmd(
        unlabelled: Path = typer.Argument(..., help="A folder of images (searched recursively) or one image file."),
        classes: str = typer.Option("", "--classes", help="The classes, comma-separated (e.g. cat,dog,bird); "
                                                          "default: the labels already in --out's manifest."),
        out: Path = typer.Option(..., "--out", help="Folder for manifest.csv (created; an existing one resumes)."),
        strategy: str = typer.Option("auto", "--strategy",
                                     help="auto (typical images first, then uncertain and diverse), typiclust, "
                                          "margin, margin_diverse or random."),
        goal: float = typer.Option(0.9, "--goal", help="Accuracy to reach; the page says stop once the estimate's "
                                                       "95 % interval is above it."),
        backbone: str = typer.Option("efficientnet_lite0", "--backbone"),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 127.0.0.1 keeps it on this machine."),
        port: int = typer.Option(8766, "--port"),
        allow_host: list[str] = typer.Option(
            [], "--allow-host", metavar="NAME",
            help="Also answer requests for this host name or IP (repeatable); as for 'frugalvision serve'."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the page in a web browser."),
    ):
        """Label images in the browser, the images that teach the model most first, by keyboard.

        Every decision is saved at once to OUT/manifest.csv (path,label,labelled_by,labelled_at,...); run the
        same command again to resume; then: frugalvision train OUT/manifest.csv. Your images are never moved or
        changed. Keys: Enter/Space confirm the guess, 1-9 pick a class, n none of these, s skip, u undo, ? help.
        """
        import contextlib

        import uvicorn

        from .._io import run_folder
        from ..exceptions import DataError
        from ..label import LabelSession
        from ..label.app import create_app
        from ..label.manifest import MANIFEST_NAME
        from ..serve.guard import allowed_hosts
        from .review import _open_when_up

        try:
            hosts = allowed_hosts(allow_host, bind=host)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--allow-host") from None
        if not unlabelled.exists():
            raise DataError(f"'{unlabelled}' does not exist. Pass a folder of images to label.")
        out.mkdir(parents=True, exist_ok=True)
        manifest = out / MANIFEST_NAME
        session = LabelSession(unlabelled, classes or None, manifest, backbone=backbone, strategy=strategy, goal=goal)
        if not session.paths:
            raise DataError(f"No images found in '{unlabelled}'.")
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
        with contextlib.ExitStack() as stack:
            try:  # one labelling page per folder: two would overwrite each other's manifest
                stack.enter_context(run_folder(out, ()))
            except DataError:
                raise DataError(f"'{out}' is open in another 'frugalvision label' (or another run is writing to "
                                f"it). Use that page, or stop it first.") from None
            app_ = create_app(session, allowed_hosts=hosts)
            typer.echo(f"Labelling {len(session.paths)} images as {', '.join(session.classes)} on {url}  "
                       f"(Ctrl-C to stop)\nDecisions go to {manifest}; then: frugalvision train {manifest}")
            if not no_browser:
                _open_when_up(url, host, port)
            uvicorn.run(app_, host=host, port=port, log_level="warning", server_header=False)
