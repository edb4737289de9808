"""Training embeddings on a Ray cluster: ``train --engine ray`` extracts on actors, the driver fits the head.

The driver fixes the image list on disk (``_inputs.parquet``, one row group per shard, as for ``predict --engine
ray``) in a job folder under the embedding cache::

    <cache>/ray-jobs/<extractor id>/<view>-<inputs fingerprint>-<shard size>/
        _inputs.parquet          the paths, in the driver's order
        done/part-<shard>.parquet  per image: path, content hash, error ('' when embedded), size, mtime_ns

and runs :class:`EmbedWorker` actors through :func:`~frugalvision.distributed._batch.ray_map`, the actor pool
``predict --engine ray`` uses. Each actor builds the same :class:`~frugalvision.features.extract.Extractor` as a
local run (backbone, weights, crop, ``precision``, ``features``: the same ``make_engine`` graph, the same decoder)
and runs the local extraction code on its shard, so embeddings land in the shared
:class:`~frugalvision.features.cache.EmbeddingCache` under the extractor's ``id`` (content hash + view, checksummed
shards): a local run and a Ray run serve each other's entries. The shard's ``done`` file is renamed into place last.

Resumable twice over: a re-run skips shards whose ``done`` file exists (and whose files have not changed size or
modification time since), and inside a shard an image already in the cache is not computed again. The driver reads
the ``done`` files (it never hashes the images) and the embeddings from the cache, then the head is fitted exactly
as locally. The cache folder must be one every node reads and writes (a shared file system) when actors run on
other machines; embeddings an actor wrote where the driver cannot see them are computed again here, with a warning.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..backbones.registry import DEFAULT_BACKBONE
from ..exceptions import DataError, DataWarning
from ..features.extract import CLEAN_VIEW, Embeddings, Extractor, extract
from .inputs import INPUTS_FILE, fingerprint, read_shard_paths, write_inputs

__all__ = ["RayExtractor", "EmbedWorker", "ray_extract", "JOBS_DIR"]

JOBS_DIR = "ray-jobs"
DONE = "done"


def done_file(job, shard: int) -> Path:
    return Path(job) / DONE / f"part-{shard:06d}.parquet"


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return int(st.st_size), int(st.st_mtime_ns)
    except OSError:
        return -1, -1


class EmbedWorker:
    """The callable class given to ``Dataset.map_batches`` for ``train --engine ray``: one Extractor per actor.

    Plain Python with no Ray import. Each input row is a shard number; the output row says what was done (images,
    failures, embeddings computed and served from the cache, times, process), never the embeddings themselves.
    """

    def __init__(self, job: str, cache_root: str, config: dict, extractor_id: str, *, view: str = CLEAN_VIEW,
                 decoder=None, threads: int = 1):
        self.ex = Extractor(config["backbone"], weights=config["weights"], crop_pct=config["crop_pct"],
                            precision=config["precision"], features=config["features"],
                            max_pixels=config["max_pixels"], cache_dir=cache_root, workers=max(1, int(threads)),
                            progress=False)
        if self.ex.id != extractor_id:
            raise DataError(f"This node's extractor is '{self.ex.id}' but the driver's is '{extractor_id}': install "
                            f"the same frugalvision version and backbone weights on every node.")
        self.job, self.view, self.decoder = job, view, decoder

    def __call__(self, batch: dict) -> dict:
        rows = {k: [] for k in ("shard", "images", "failed", "computed", "cached", "started", "finished", "pid")}
        for shard in batch["shard"]:
            t = time.time()
            n, bad, computed, cached = self.run_shard(int(shard))
            for k, v in zip(rows, (int(shard), n, bad, computed, cached, t, time.time(), os.getpid())):
                rows[k].append(v)
        return {k: np.asarray(v) for k, v in rows.items()}

    def run_shard(self, shard: int) -> tuple[int, int, int, int]:
        from .._io import atomic_writer

        paths = read_shard_paths(self.job, shard)
        stamps = [_stamp(p) for p in paths]  # before reading: a file changed during the run counts as changed
        emb = extract(paths, self.ex, view=self.view, decoder=self.decoder, memo=False)
        why = dict(emb.failures)
        table = pa.table({"path": paths, "hash": pa.array(emb.hashes, type=pa.string()),
                          "error": [why.get(p, "") for p in paths],
                          "size": pa.array([s for s, _ in stamps], type=pa.int64()),
                          "mtime_ns": pa.array([m for _, m in stamps], type=pa.int64())})
        with atomic_writer(done_file(self.job, shard)) as fh:  # the shard is done once this file exists
            pq.write_table(table, fh)
        return len(paths), len(why), emb.n_computed, emb.n_cached


class RayExtractor(Extractor):
    """An :class:`Extractor` whose calls run on Ray actors (see the module docstring); everything else (``id``,
    ``cache``, ``engine`` for a fallback, metadata) is the local extractor's, so models are built the same way.

    ``jobs`` lists one summary per call (what ``train`` stores under ``training['ray']``).
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, *, address: str | None = None, actors: int | None = None,
                 cpus_per_actor: float = 1, shard_size: int = 1024, object_store_mb: int = 256, on_shard=None,
                 **kw):
        if kw.get("engine", "auto") == "ray":
            kw["engine"] = "auto"  # the actors' (and a fallback's) backbone runtime
        if kw.get("engine", "auto") not in ("auto", "onnx"):
            raise DataError("--engine ray runs the ONNX Runtime graph in its actors (the same as --engine auto).")
        super().__init__(backbone, **kw)
        if shard_size < 1:
            raise DataError(f"shard_size (--shard-size) must be at least 1, got {shard_size}.")
        self.config = {"backbone": backbone, "weights": None if self.weights is None else str(self.weights),
                       "crop_pct": kw.get("crop_pct"), "precision": self.precision, "features": self.features,
                       "max_pixels": self.max_pixels}
        self.ray_options = {"address": address, "actors": actors, "cpus_per_actor": cpus_per_actor,
                            "shard_size": shard_size, "object_store_mb": object_store_mb, "on_shard": on_shard}
        self.jobs: list[dict] = []

    def __call__(self, paths, *, view: str = CLEAN_VIEW, decoder=None, flush_every: int = 512) -> Embeddings:
        return ray_extract(paths, self, view=view, decoder=decoder, progress=self.progress, **self.ray_options)


def _read_done(job, shard: int):
    try:
        return pq.read_table(done_file(job, shard)).to_pydict()
    except (OSError, pa.ArrowInvalid):
        return None  # unreadable: the shard is done again


def _changed(done: dict) -> bool:
    return any(_stamp(p) != (s, m) for p, s, m in zip(done["path"], done["size"], done["mtime_ns"]))


def ray_extract(paths, ex: Extractor, *, view: str = CLEAN_VIEW, decoder=None, address=None, actors=None,
                cpus_per_actor: float = 1, shard_size: int = 1024, object_store_mb: int = 256,
                progress: bool = True, on_shard=None) -> Embeddings:
    """Embeddings for ``paths`` (as ``extract(paths, ex)`` returns them), computed by Ray actors into ``ex``'s cache.

    ``on_shard(row)`` is called in the driver with each finished shard's row (images, failed, computed, cached).
    """
    from ._batch import ray_map, require_ray

    require_ray()
    t0 = time.perf_counter()
    paths = [str(p) for p in paths]
    if not paths:
        return extract(paths, ex, view=view, decoder=decoder)
    job = Path(ex.cache_root) / JOBS_DIR / ex.id / f"{view}-{fingerprint(paths)}-{shard_size}"
    job.mkdir(parents=True, exist_ok=True)
    if not (job / INPUTS_FILE).exists():  # the folder name is the job's identity: an existing list is this one
        write_inputs(job, paths, shard_size)
    n_shards = -(-len(paths) // shard_size)
    done = {k: _read_done(job, k) for k in range(n_shards) if done_file(job, k).exists()}
    stale = sorted(k for k, d in done.items() if d is None or _changed(d))
    pending = sorted(set(range(n_shards)) - set(done) | set(stale))
    stats = {"computed_shards": 0, "computed_embeddings": 0, "cached_embeddings": 0, "actors": 0,
             "timeline": []}  # (actor pid, start s, end s, images) per computed shard
    if pending:
        from ..backbones.shipped import shipped_graph

        if ex.weights is not None or shipped_graph(ex.spec.name) is None:
            ex.engine  # export the ONNX graph once here, so that actors sharing this cache find it

        def on_row(row, _t0):
            stats["computed_shards"] += 1
            stats["computed_embeddings"] += int(row["computed"])
            stats["cached_embeddings"] += int(row["cached"])
            stats["timeline"].append((int(row["pid"]), round(float(row["started"]) - _t0, 3),
                                      round(float(row["finished"]) - _t0, 3), int(row["images"])))
            if on_shard is not None:
                on_shard(row)

        kwargs = {"job": str(job.resolve()), "cache_root": str(Path(ex.cache_root).resolve()), "config": ex.config
                  if hasattr(ex, "config") else _config(ex), "extractor_id": ex.id, "view": view,
                  "decoder": decoder, "threads": max(1, int(cpus_per_actor))}
        stats["actors"] = ray_map(EmbedWorker, kwargs, pending, on_row, address=address, actors=actors,
                                  cpus_per_actor=cpus_per_actor, object_store_mb=object_store_mb, progress=progress,
                                  n_images=min(len(paths), len(pending) * shard_size),
                                  desc=f"Embedding on Ray ({ex.spec.name}, {view})")
        for k in pending:
            done[k] = _read_done(job, k)
            if done[k] is None:
                raise DataError(f"Shard {k} of the Ray job in '{job}' has no readable result after the run.")
    hashes, errors = [], []
    for k in range(n_shards):
        hashes.extend(done[k]["hash"])
        errors.extend(done[k]["error"])
    keys = [f"{h}:{view}" if h and not e else None for h, e in zip(hashes, errors)]
    cache = ex.cache
    cache.refresh()  # the actors' shards
    missing = [i for i, k in enumerate(keys) if k is not None and k not in cache]
    n_local = 0
    if missing:
        warnings.warn(f"{len(missing)} embeddings the Ray actors reported are not in the cache at "
                      f"'{cache.dir}' as this process sees it (is the cache folder on storage every node shares? "
                      f"or a damaged cache shard was set aside): computing them here.", DataWarning, stacklevel=2)
        local = extract([paths[i] for i in missing], ex, view=view, decoder=decoder)
        n_local = local.n_computed
        why = dict(local.failures)
        for i in missing:
            if paths[i] in why:
                errors[i], keys[i] = why[paths[i]], None
    ok = np.array([k is not None for k in keys], dtype=bool)
    X = cache.get([k for k in keys if k is not None])
    summary = {"job": str(job), "view": view, "images": len(paths), "shards": n_shards,
               "skipped_shards": n_shards - len(pending), "stale_shards": len(stale), **stats,
               "computed_here": n_local, "failed": int((~ok).sum()), "seconds": round(time.perf_counter() - t0, 2)}
    if isinstance(getattr(ex, "jobs", None), list):
        ex.jobs.append(summary)
    return Embeddings(paths=paths, ok=ok, X=X, failures=[(paths[i], errors[i]) for i in np.flatnonzero(~ok)],
                      hashes=hashes, n_computed=stats["computed_embeddings"] + n_local,
                      n_cached=int(ok.sum()) - stats["computed_embeddings"] - n_local,
                      seconds=time.perf_counter() - t0)


def _config(ex: Extractor) -> dict:
    crop = ex.preprocessing.get("crop_pct") if ex.preprocessing != ex.spec.preprocessing else None
    return {"backbone": ex.spec.name, "weights": None if ex.weights is None else str(ex.weights), "crop_pct": crop,
            "precision": ex.precision, "features": ex.features, "max_pixels": ex.max_pixels}


def job_summary(job: dict) -> str:
    """One line per Ray embedding job, for the CLI."""
    return (f"Ray ({job['view']}): {job['images']} images in {job['shards']} shards: computed {job['computed_shards']} "
            f"shards with {job['actors']} actors ({job['computed_embeddings']} embeddings computed, "
            f"{job['cached_embeddings']} from the cache), {job['skipped_shards']} already done"
            + (f" ({job['stale_shards']} redone: their files changed)" if job["stale_shards"] else "")
            + (f"; {job['computed_here']} computed on the driver" if job["computed_here"] else "")
            + f"; {job['seconds']:.1f} s.")
