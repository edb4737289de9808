"""Options shared by several commands (one definition each)."""

from __future__ import annotations

from pathlib import Path

import typer

from .._text import visible

Engine = typer.Option("auto", "--engine", help="Backbone runtime: auto (ONNX Runtime if available), onnx, torch.")
CacheDir = typer.Option(None, "--cache-dir", help="Embedding cache folder (default ~/.cache/frugalvision or $FRUGALVISION_CACHE).")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bars.")
Overwrite = typer.Option(False, "--overwrite", help="Allow replacing files frugalvision wrote before.")


# --engine for commands that can also run on Ray (predict, explain).
RunEngine = typer.Option("auto", "--engine", help="auto (ONNX Runtime if available), onnx, torch, or ray (batch job on "
                         "a Ray cluster, Parquet shards; needs pip install 'frugalvision[ray]').")
# --engine for train: the embeddings can be extracted by Ray actors (the head is fitted here).
TrainEngine = typer.Option("auto", "--engine", help="auto (ONNX Runtime if available), onnx, torch, or ray (the "
                           "embeddings are extracted by Ray actors into the shared embedding cache, resumable, and "
                           "the head is fitted here; not with --finetune; needs pip install 'frugalvision[ray]').")
RayAddress = typer.Option(None, "--address", help="With --engine ray: 'auto' or 'ray://host:10001' joins a cluster; "
                          "default starts a local Ray.")
RayActors = typer.Option(None, "--actors", help="With --engine ray: actor pool size (default: cluster CPUs / --cpus-per-actor).")
RayCpus = typer.Option(1.0, "--cpus-per-actor", help="With --engine ray: CPUs (ONNX Runtime threads) per actor.")
RayShard = typer.Option(1024, "--shard-size", help="With --engine ray: images per Parquet shard (unit of work and of resumption).")


def ray_batch(model, paths, out, *, address, actors, cpus_per_actor, shard_size, engine_kw: dict, **kw):
    """Run a batch job on Ray for a command and print its summary (the CLI side of frugalvision.distributed)."""
    from ..distributed import require_ray, run_batch

    require_ray()
    res = run_batch(model, [str(p) for p in paths], out, address=address, actors=actors,
                    cpus_per_actor=cpus_per_actor, shard_size=shard_size, **engine_kw, **kw)
    typer.echo(res.summary())
    typer.echo(f"Read them with pandas.read_parquet('{Path(out) / 'predictions'}') or "
               f"frugalvision.distributed.read_results('{out}').")
    return res


def echo_paths(title: str, paths) -> None:
    echo(title)
    for p in paths:
        echo(f"  {p}")


def fmt_pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f} %"



def term(text) -> str:
    """``text`` made safe for a terminal: control and format characters from data (ESC sequences that clear the
    screen, U+202E that reorders a line, zero-width characters) are shown as escapes; newlines and tabs stay."""
    return visible(text)


def echo(message="", **kw) -> None:
    """``typer.echo`` of :func:`term` (every CLI line goes through here)."""
    typer.echo(term(message), **kw)


def secho(message="", **kw) -> None:
    typer.secho(term(message), **kw)
