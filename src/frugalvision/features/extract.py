"""The extraction engine: files -> cached embeddings, computing only what the cache lacks.

Pipeline: hash every file (threads) -> look the hashes up in the cache -> decode the
misses in a worker pool (threads by default; ``pool='process'`` uses spawn-safe worker
processes) while the backbone runs on the previous batch -> write shards to the cache
as they fill. Memory stays bounded by ``batch_size`` and the prefetch window, whatever
the number of images. Nothing about the backbone is built when every file is cached.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..backbones.registry import DEFAULT_BACKBONE, get_spec
from ..config import cache_root
from ..data.decode import DEFAULT_MAX_PIXELS, decode_for_input
from .cache import EmbeddingCache, HashMemo, content_hash
from .engine import Engine, extractor_id, make_engine

__all__ = ["Embeddings", "Extractor", "extract"]

CLEAN_VIEW = "clean"


@dataclass
class Embeddings:
    """Embeddings for a list of files, in the same order.

    Attributes
    ----------
    paths : list of str
        The inputs, in order.
    ok : ndarray of bool
        Which inputs were decoded (``X`` has one row per True).
    X : ndarray, shape (n_ok, embed_dim)
    failures : list of (path, reason)
        Files that could not be used, with the reason.
    hashes : list of str or None
        Content hash per input (None when unreadable).
    n_computed, n_cached : int
        Backbone passes done now, and embeddings served from the cache.
    """

    paths: list[str]
    ok: np.ndarray
    X: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)
    hashes: list[str | None] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0


class Extractor:
    """A backbone + preprocessing + cache, built lazily (no torch until a miss needs it).

    Parameters
    ----------
    backbone : str
        Registry name or ``timm:<name>``.
    weights : path, optional
        Local weights file instead of the backbone's default source.
    engine : {'auto', 'onnx', 'torch'} or Engine
    cache_dir : path, optional
        Cache root (default ``~/.cache/frugalvision`` or ``$FRUGALVISION_CACHE``).
    crop_pct : float, optional
        Override the spec's centre-crop fraction (1.0 keeps the whole image).
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, *, weights=None, engine="auto", cache_dir=None,
                 crop_pct: float | None = None, batch_size: int | None = None, workers: int | None = None,
                 pool: str = "thread",
                 max_pixels: int = DEFAULT_MAX_PIXELS, threads: int | None = None, progress: bool = True,
                 precision: str = "fp32", features: str = "last"):
        from ..backbones.stages import FEATURES

        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}.")
        self.features = features
        self.spec = get_spec(backbone)
        self.weights = weights
        self.precision = precision
        self._engine = engine if isinstance(engine, Engine) else None
        if self._engine is not None:  # a built engine says what it computes
            self.features = getattr(self._engine, "features", "last")
        self.engine_name = engine.name if isinstance(engine, Engine) else engine
        self.cache_root = cache_root(cache_dir)
        self.preprocessing = {**self.spec.preprocessing, **({"crop_pct": float(crop_pct)} if crop_pct else {})}
        self._batch_size = batch_size
        self.workers = workers or max(1, min(os.cpu_count() or 1, 8))
        self.pool = pool
        self.max_pixels = max_pixels
        self.threads = threads
        self.progress = progress
        self._weights_id = self._engine.weights_id if self._engine is not None else None
        self._cache = None

    # -- identity ---------------------------------------------------------------------------------
    @property
    def weights_id(self) -> str:
        if self._weights_id is None:
            from ..backbones.weights import weights_identity

            if self.precision == "int8":  # int8 embeddings are another extractor: never the fp32 cache entries
                from ..backbones.shipped import int8_graph

                self._weights_id = int8_graph(self.spec.name)[1]["weights_id"]
            else:
                self._weights_id = weights_identity(self.spec, self.weights)
        return self._weights_id

    @property
    def id(self) -> str:
        base = extractor_id(self.spec, self.weights_id, self.preprocessing)
        if self.features == "multi":  # other numbers per image: their own cache entries
            from ..backbones.stages import MULTI_STAGES

            return f"{base}-multi{''.join(map(str, MULTI_STAGES))}"
        return base

    @property
    def embed_dim(self) -> int:
        """Width of one embedding (``multi``: the last layer's plus the pooled stages, read off the graph once)."""
        if self.features == "last":
            return self.spec.embed_dim
        if getattr(self, "_embed_dim", None) is None:
            s = self.preprocessing["input_size"]
            self._embed_dim = int(self.engine.run(np.zeros((1, s, s, 3), np.uint8))[1].shape[1])
        return self._embed_dim

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_root, self.id, meta={
                "backbone": self.spec.name, "timm_name": self.spec.timm_name,
                "weights_id": self.weights_id, "preprocessing": self.preprocessing, "features": self.features})
        return self._cache

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            # Lanes (see _run_lanes) want single-threaded sessions; ask for them unless told otherwise.
            threads = self.threads or (1 if self.pool == "thread" and self.engine_name != "torch" else None)
            self._engine = make_engine(self.spec, weights=self.weights, engine=self.engine_name,
                                       onnx_dir=self.cache_root / "onnx", threads=threads, precision=self.precision,
                                       features=self.features)
        return self._engine

    @property
    def batch_size(self) -> int:
        """Images per backbone call: 8 per lane for ONNX lanes (lanes finish together), 32 for one torch runner."""
        if self._batch_size:
            return self._batch_size
        return 8 if self.lanes_mode else 32

    @batch_size.setter
    def batch_size(self, value) -> None:
        self._batch_size = value

    @property
    def lanes_mode(self) -> bool:
        """Decode+run per thread (ONNX Runtime) rather than a decode pool feeding one runner (torch)."""
        return self.pool == "thread" and self.engine.name == "onnx"

    def decoder(self):
        p = self.preprocessing
        return partial(decode_for_input, size=p["input_size"], crop_pct=p["crop_pct"],
                       interpolation=p["interpolation"], max_pixels=self.max_pixels)

    # -- work -------------------------------------------------------------------------------------
    def __call__(self, paths, *, view: str = CLEAN_VIEW, decoder=None, flush_every: int = 512) -> Embeddings:
        return extract(paths, self, view=view, decoder=decoder, flush_every=flush_every)

    def run_arrays(self, arrays: np.ndarray, maps: bool = False):
        """Run the backbone on already-decoded uint8 NHWC arrays, in batches (on every lane at once when the
        engine runs single-threaded lanes: one lane alone would use one core of two)."""
        chunks = [arrays[i:i + self.batch_size] for i in range(0, len(arrays), self.batch_size)]
        if self.lanes_mode and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:  # ONNX Runtime releases the GIL
                results = list(pool.map(lambda c: self.engine.run(c, maps=maps), chunks))
        else:
            results = [self.engine.run(c, maps=maps) for c in chunks]
        outs_m, outs_e = [], []
        for m, e in results:
            outs_e.append(e)
            if maps:
                outs_m.append(m)
        emb = np.concatenate(outs_e) if outs_e else np.zeros((0, self.embed_dim), np.float32)
        return (np.concatenate(outs_m) if maps else None), emb


def _executor(kind: str, workers: int) -> Executor:
    if kind == "process":
        # spawn works the same on Linux, macOS and Windows; fork would copy ORT's threads.
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers)
    raise ValueError(f"pool must be 'thread' or 'process', got {kind!r}.")


def _safe_hash(path, memo=None):
    from ..data.decode import check_regular_file
    from ..exceptions import ImageDecodeError

    try:
        check_regular_file(path)  # devices, FIFOs and huge files are refused before a read could hang
        return (memo.hash(path) if memo is not None else content_hash(path)), None
    except ImageDecodeError as exc:
        return None, exc.reason
    except FileNotFoundError:
        return None, "file not found"
    except PermissionError:
        return None, "permission denied (cannot read the file)"
    except IsADirectoryError:
        return None, "is a directory, not an image file"
    except OSError as exc:
        return None, f"cannot read file ({exc})"


def extract(paths, extractor: Extractor | None = None, *, view: str = CLEAN_VIEW, decoder=None,
            flush_every: int = 512, memo: bool = True) -> Embeddings:
    """Embeddings for ``paths``, computing only the ones missing from the cache.

    Parameters
    ----------
    paths : sequence of str
    extractor : Extractor, optional
        Defaults to ``Extractor()`` (efficientnet_lite0, auto engine, default cache).
    view : str
        Cache view name; ``"clean"`` is the plain preprocessed image. Augmented views pass
        their own name and ``decoder``.
    decoder : callable(path) -> DecodedInput, optional
    flush_every : int
        Rows buffered before a shard is written (what an interruption can lose).
    memo : bool
        Remember content hashes by file stamp in the cache folder's memo (one JSON file: a speed-up for one
        process; Ray actors sharing a cache hash without it).
    """
    t0 = time.perf_counter()
    ex = extractor or Extractor()
    paths = [str(p) for p in paths]
    memo = HashMemo(ex.cache_root) if memo else None
    with ThreadPoolExecutor(max_workers=4) as hp:
        hashed = list(hp.map(lambda p: _safe_hash(p, memo), paths))
    if memo is not None:
        memo.save()
    failures: dict[int, str] = {i: err for i, (h, err) in enumerate(hashed) if err}
    keys = [f"{h}:{view}" if h else None for h, _ in hashed]
    cache = ex.cache
    todo: dict[str, int] = {}  # key -> first input index with that content
    for i, k in enumerate(keys):
        if k is not None and k not in cache and k not in todo:
            todo[k] = i
    n_computed = 0
    if todo:
        n_computed, bad = _compute(ex, todo, paths, decoder or ex.decoder(), flush_every)
        for k, reason in bad.items():
            for i, kk in enumerate(keys):
                if kk == k:
                    failures[i] = reason
    ok = np.array([k is not None and i not in failures for i, k in enumerate(keys)], dtype=bool)
    X = cache.get([k for k, good in zip(keys, ok) if good])
    return Embeddings(
        paths=paths, ok=ok, X=X, failures=[(paths[i], failures[i]) for i in sorted(failures)],
        hashes=[h for h, _ in hashed], n_computed=n_computed,
        n_cached=sum(1 for k, good in zip(keys, ok) if good and k not in todo), seconds=time.perf_counter() - t0)


def _compute(ex: Extractor, todo: dict[str, int], paths, decoder, flush_every: int):
    from tqdm.auto import tqdm

    engine = ex.engine
    cache = ex.cache
    bad: dict[str, str] = {}
    buf_keys: list[str] = []
    buf_emb: list[np.ndarray] = []
    items = list(todo.items())
    bar = tqdm(total=len(items), unit="img", desc=f"Embedding ({ex.spec.name}, {engine.name})",
               disable=not ex.progress, dynamic_ncols=True)
    n_done = 0

    def collect(keys, emb, failed):
        nonlocal n_done
        bad.update(failed)
        if keys:
            buf_keys.extend(keys)
            buf_emb.append(emb)
        n_done += len(keys)
        bar.update(len(keys) + len(failed))
        if len(buf_keys) >= flush_every:
            flush()

    def flush():
        if buf_keys:
            cache.add(list(buf_keys), np.concatenate(buf_emb))
            buf_keys.clear()
            buf_emb.clear()

    try:
        if ex.lanes_mode:
            _run_lanes(ex, engine, items, paths, decoder, collect)
        else:
            _run_pipelined(ex, engine, items, paths, decoder, collect)
    finally:
        flush()  # keep whatever was computed, even on Ctrl-C
        bar.close()
    return n_done, bad


def _lane_batch(engine, batch, paths, decoder):
    """Decode one batch and run the backbone on it, in the calling thread."""
    keys, arrays, failed = [], [], {}
    for key, idx in batch:
        res = decoder(paths[idx])
        if res.array is None:
            failed[key] = res.error
        else:
            keys.append(key)
            arrays.append(res.array)
    emb = engine.run(np.stack(arrays))[1] if arrays else None
    return keys, emb, failed


def _run_lanes(ex, engine, items, paths, decoder, collect):
    """ONNX Runtime: N threads each decode a batch and run a single-threaded session on it.

    Concurrent single-threaded runs use 2 cores better than one 2-thread run, and a lane never
    competes with itself for a core (run() releases the GIL).
    """
    batches = [items[i:i + ex.batch_size] for i in range(0, len(items), ex.batch_size)]
    with ThreadPoolExecutor(max_workers=ex.workers) as pool:
        pending: deque = deque()
        it = iter(batches)
        for b in it:
            pending.append(pool.submit(_lane_batch, engine, b, paths, decoder))
            if len(pending) >= 2 * ex.workers:  # bounded: memory does not grow with the dataset
                break
        while pending:
            fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_lane_batch, engine, nxt, paths, decoder))
            collect(*fut.result())


def _run_pipelined(ex, engine, items, paths, decoder, collect):
    """Decode in a worker pool (threads, or spawn processes) while this thread runs the backbone."""
    window = max(ex.batch_size * 3, 8)
    batch_keys: list[str] = []
    batch_arrays: list[np.ndarray] = []

    def run_batch():
        if batch_arrays:
            collect(list(batch_keys), engine.run(np.stack(batch_arrays))[1], {})
            batch_keys.clear()
            batch_arrays.clear()

    with _executor(ex.pool, ex.workers) as pool:
        pending: deque = deque()
        it = iter(items)
        for key, idx in it:  # prime the window, then keep it full
            pending.append((key, pool.submit(decoder, paths[idx])))
            if len(pending) >= window:
                break
        while pending:
            key, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(decoder, paths[nxt[1]])))
            res = fut.result()
            if res.array is None:
                collect([], None, {key: res.error})
                continue
            batch_keys.append(key)
            batch_arrays.append(res.array)
            if len(batch_arrays) >= ex.batch_size:
                run_batch()
        run_batch()
