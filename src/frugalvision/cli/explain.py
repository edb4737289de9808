"""``frugalvision explain``: readable CAM panels (image | top-1 | top-2 | why top-1, not top-2) for images.

The panels are the report's and the web page's rendering (:mod:`frugalvision.explanation.panels`): one colour
scale per image, no map for a class below p = 0.05.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import (CacheDir, Overwrite, RayActors, RayAddress, RayCpus, RayShard, RunEngine, echo, echo_paths,
                      ray_batch, secho)


def _methods() -> str:
    from ..explanation import METHODS  # the CLI's choices come from the registry

    return ", ".join(METHODS)


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain_cmd(
        model: Path = typer.Argument(..., help="Model file or run folder."),
        paths: List[Path] = typer.Argument(..., help="Image files or folders."),
        out: Path = typer.Option(Path("explanations"), "--out", "-o", help="Folder for the PNGs."),
        classes: str = typer.Option("top2", "--classes", help="top1, top2, topK, all, or comma-separated class names."),
        method: str = typer.Option("auto", "--method", help="auto (cam for linear heads, gradient for other heads: both numpy), cam, gradient, gradcam, gradcam++, layercam, scorecam (the last four need the torch extra)."),
        colorbar: bool = typer.Option(False, "--colorbar", help="Add the colour scales under each panel (evidence, shared by the image's maps; difference)."),
        engine: str = RunEngine, cache_dir: Optional[Path] = CacheDir, overwrite: bool = Overwrite,
        address: Optional[str] = RayAddress, actors: Optional[int] = RayActors, cpus_per_actor: float = RayCpus,
        shard_size: int = RayShard,
    ):
        """Class activation maps: where the model looks for its top classes, mapped onto the original image.

        One colour scale per image (a weak runner-up looks weak), no map below p = 0.05, and a 'why A, not B' map.
        """
        from ..data.discover import list_image_files
        from ..explanation import METHODS, write_explanations
        from ..model import load_model

        if method not in METHODS:
            raise typer.BadParameter(f"--method must be one of {_methods()}, got {method!r}.")
        cls = classes  # split at commas by the model's classes (a class name may hold a comma)
        if engine == "ray":  # one panel PNG per image under OUT/cams/, predictions in OUT/part-*.parquet
            ray_batch(model, paths, out, address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                      shard_size=shard_size, engine_kw={"cache_dir": cache_dir}, cams=(cls, method), overwrite=overwrite)
            return
        m = load_model(model)
        files = list_image_files(paths)
        w = write_explanations(m, files, out, cls=cls, method=method, colorbar=colorbar, overwrite=overwrite,
                               engine=engine, cache_dir=cache_dir)
        echo_paths(f"Wrote {len(w['panels'])} panels and {len(w['overlays'])} overlays:",
                   [*w["panels"][:5], *(["..."] if len(w["panels"]) > 5 else []), *([w["sheet"]] if w["sheet"] else [])])
        echo("Each panel: the image, the map of each class on one colour scale shared by the image's maps "
                   "(red = strong evidence), and 'why A, not B' (top-1 map minus top-2 map: red for A, blue for B).")
        if w["hidden"]:
            echo(f"{w['hidden']} maps not drawn: their class is below p = 0.05, and scaled up its near-zero "
                       f"evidence would look like signal.")
        for p, reason in w["failed"]:
            secho(f"  skipped {p}: {reason}", fg="yellow", err=True)
