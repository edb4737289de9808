"""Batch inference on a Ray cluster: labels, probabilities, embeddings and CAMs for millions of images: the code
behind ``frugalvision.distributed`` (its docstring says more).
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..exceptions import DataError, FrugalVisionError
from .inputs import INPUTS_FILE, fingerprint, list_inputs, write_inputs
from .worker import PREDICTIONS, ShardWorker, label_images, shard_file

__all__ = ["run_batch", "read_results", "BatchResult", "require_ray", "ShardWorker", "label_images", "ray_map"]

RUN_FILE = "_run.json"


class MissingExtraError(FrugalVisionError, ImportError):
    """An optional dependency group is not installed."""


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise MissingExtraError("--engine ray needs Ray, which is optional: pip install 'frugalvision[ray]'")


@dataclass
class BatchResult:
    out: str
    images: int
    shards: int
    computed_shards: int
    skipped_shards: int
    computed_images: int
    failed: int
    seconds: float
    actors: int
    timeline: list = field(default_factory=list)  # (actor pid, start s, end s) per computed shard

    def summary(self) -> str:
        return (f"{self.images} images in {self.shards} shards under {self.out}: computed {self.computed_shards} "
                f"shards ({self.computed_images} images) with {self.actors} actors in {self.seconds:.1f} s, "
                f"{self.skipped_shards} already done; {self.failed} unreadable images (column 'error').")


def _job_identity(model, paths, *, shard_size, embeddings, cams) -> dict:
    import hashlib

    return {"model_sha256": hashlib.sha256(Path(model.path).read_bytes()).hexdigest()[:16],
            "classes": list(model.classes), "inputs": fingerprint(paths), "n_inputs": len(paths),
            "shard_size": shard_size, "embeddings": embeddings, "cams": list(cams) if cams else None}


def _prepare_out(out: Path, identity: dict, overwrite: bool) -> None:
    """Refuse to mix two different jobs in one folder; with ``overwrite``, clear only our own files."""
    run = out / RUN_FILE
    if run.exists():
        old = json.loads(run.read_text())["job"]
        if old == identity:
            return
        if not overwrite:
            diff = [k for k in identity if old.get(k) != identity[k]]
            raise DataError(f"'{out}' holds the outputs of a different job (differs in: {', '.join(diff)}). "
                            f"Use another --out, or pass --overwrite to replace them.")
        import shutil

        for p in (out / PREDICTIONS).glob("part-*.parquet"):
            p.unlink()
        shutil.rmtree(out / "cams", ignore_errors=True)
        (out / INPUTS_FILE).unlink(missing_ok=True)
    elif any(out.iterdir()) and not overwrite:
        raise DataError(f"'{out}' is not empty and was not written by a frugalvision batch job. Use an empty or "
                        f"new folder for --out.")
    from .._io import write_text

    write_text(run, json.dumps({"job": identity}, indent=2))


def run_batch(model, sources, out, *, address: str | None = None, actors: int | None = None,
              cpus_per_actor: float = 1, shard_size: int = 1024, batch_size: int = 8,
              embeddings: bool = False, cams=None, engine: str = "auto", cache_dir=None,
              object_store_mb: int = 256, progress: bool = True, overwrite: bool = False) -> BatchResult:
    """Label (and optionally embed / explain) images on Ray; see the module docstring.

    Parameters
    ----------
    model : Model or path
    sources : files, folders, CSV/Parquet manifests (``path`` column) or object-store URIs
    out : folder (local or shared by the cluster): ``predictions/part-*.parquet``, ``cams/`` and the job files
    address : None starts a local Ray in this process; ``"auto"`` or ``"ray://host:10001"`` joins a cluster
    actors : pool size (default: the cluster's CPUs // ``cpus_per_actor``); each actor holds one model
    cpus_per_actor : CPUs (ONNX Runtime threads) per actor
    shard_size : images per output file and per unit of work (also the unit of resumption)
    cams : None, or ``(class_selector, method)`` such as ``("top2", "auto")`` for one CAM panel PNG per image
    """
    require_ray()
    from ..model import Model, load_model

    t0 = time.perf_counter()
    m = model if isinstance(model, Model) else load_model(model)
    if m.path is None:
        raise DataError("run_batch needs a saved model (the actors load it from its file); call model.save() first.")
    if cams is not None:
        from ..explanation import checked_method

        cams = (cams[0], checked_method(m, cams[1]))
    if shard_size < 1 or batch_size < 1:
        raise DataError(f"shard_size (--shard-size) and batch_size must be at least 1, got {shard_size} and {batch_size}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list_inputs(sources)
    identity = _job_identity(m, paths, shard_size=shard_size, embeddings=embeddings, cams=cams)
    _prepare_out(out, identity, overwrite)
    if not (out / INPUTS_FILE).exists():  # else it is this job's list: _prepare_out compared fingerprints
        write_inputs(out, paths, shard_size)
    n_shards = -(-len(paths) // shard_size)
    pending = [k for k in range(n_shards) if not shard_file(out, k).exists()]
    done = {"computed_shards": 0, "computed_images": 0, "failed": 0, "actors": 0, "timeline": []}
    if pending:
        # Build (export) the engine once here, so that actors on this machine find the ONNX file.
        m.extractor(engine=engine, cache_dir=cache_dir, progress=False).engine
        done = _run_on_ray(m, out, pending, address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                           batch_size=batch_size, embeddings=embeddings, cams=cams, engine=engine,
                           cache_dir=cache_dir, object_store_mb=object_store_mb, progress=progress,
                           n_images=min(len(paths), len(pending) * shard_size))
    # Failures of the shards computed now came back in their rows; only shards done before are read.
    failed = done["failed"] + _count_failed(out, sorted(set(range(n_shards)) - set(pending)))
    result = BatchResult(str(out), len(paths), n_shards, done["computed_shards"], n_shards - len(pending),
                         done["computed_images"], failed, time.perf_counter() - t0, done["actors"],
                         done["timeline"])
    from .._io import write_text

    write_text(out / RUN_FILE, json.dumps({"job": identity, "last_run": asdict(result)}, indent=2))
    return result


def _run_on_ray(m, out, pending, *, address, actors, cpus_per_actor, batch_size, embeddings, cams, engine,
                cache_dir, object_store_mb, progress, n_images) -> dict:
    kwargs = {"model_path": str(m.path), "out": str(out.resolve()), "embeddings": embeddings,
              "cams": cams, "batch_size": batch_size, "threads": max(1, int(cpus_per_actor)), "engine": engine,
              "cache_dir": None if cache_dir is None else str(cache_dir)}
    done = {"computed_shards": 0, "computed_images": 0, "failed": 0, "actors": 0, "timeline": []}

    def on_row(row, t0):
        done["computed_shards"] += 1
        done["computed_images"] += int(row["images"])
        done["failed"] += int(row["failed"])
        done["timeline"].append((int(row["pid"]), row["started"] - t0, row["finished"] - t0))

    done["actors"] = ray_map(ShardWorker, kwargs, pending, on_row, address=address, actors=actors,
                             cpus_per_actor=cpus_per_actor, object_store_mb=object_store_mb, progress=progress,
                             n_images=n_images)
    return done


def ray_map(worker, kwargs: dict, pending: list, on_row, *, address=None, actors=None, cpus_per_actor: float = 1,
            object_store_mb: int = 256, progress: bool = True, n_images: int = 0, desc: str = "Ray") -> int:
    """Run ``worker`` (a callable class, one instance per actor, built with ``kwargs``) on the shard numbers
    ``pending`` through a fixed Ray actor pool; ``on_row(row, t0)`` is called in the driver for each shard's
    small "done" row (which has an ``images`` count for the bar). Starts a local Ray when none runs (``address``
    None) or joins ``address``, and shuts down only a Ray it started. Returns the pool size.

    The one actor machinery behind ``predict``/``explain --engine ray`` (:class:`ShardWorker`) and ``train --engine
    ray`` (:class:`~frugalvision.distributed.embed.EmbedWorker`).
    """
    import ray
    from tqdm.auto import tqdm

    import logging
    import warnings

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our bar and summary replace Ray Data's chatter
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray\.")
    started = not ray.is_initialized()
    if started:
        if address is None:
            ray.init(object_store_memory=object_store_mb * 2 ** 20, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR", configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # one bar, ours, counting images
        ctx.execution_options.verbose_progress = False
        n_cpu = ray.cluster_resources().get("CPU", 1)
        pool = max(1, min(len(pending), actors or int(n_cpu // cpus_per_actor) or 1))
        ds = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=cpus_per_actor)
        t0 = time.time()
        rows = iter(ds.iter_rows())
        try:
            with tqdm(total=n_images, unit="img", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
                for row in rows:
                    bar.update(int(row["images"]))
                    on_row(row, t0)
        finally:  # an interrupted job (Ctrl-C, an error in on_row) stops its actors before returning
            close = getattr(rows, "close", None)
            if close is not None:
                close()
        return pool
    finally:
        if started:
            ray.shutdown()


def _count_failed(out: Path, shards) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for k in shards:
        col = pq.read_table(shard_file(out, k), columns=["error"]).column("error")
        total += int(pc.sum(pc.not_equal(col, "")).as_py() or 0)
    return total


def read_results(out, columns=None):
    """All shards of a finished job as one pandas DataFrame (in input order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    files = sorted((out / PREDICTIONS).glob("part-*.parquet"))
    if not files:
        raise DataError(f"No results under '{out}' (expected {PREDICTIONS}/part-*.parquet files).")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files]).to_pandas()
