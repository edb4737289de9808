"""What one Ray actor does: load the model once, then label whole shards and write their files.

Plain Python with no Ray import, so it is tested and profiled directly. A shard's outputs are
its CAM PNGs, then ``predictions/part-<shard>.parquet`` renamed into place last: a shard whose Parquet file
exists is complete, which is what makes re-runs skip it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.decode import DecodedInput
from .inputs import is_uri, read_shard_paths

__all__ = ["ShardWorker", "shard_file", "label_images", "PREDICTIONS"]


PREDICTIONS = "predictions"  # the Parquet dataset: pandas.read_parquet(out / PREDICTIONS)


def shard_file(out, shard: int) -> Path:
    return Path(out) / PREDICTIONS / f"part-{shard:06d}.parquet"


def _read_source(path: str):
    """A local path as is (the decoder opens it), an object-store URI as bytes, or a failed DecodedInput."""
    if not is_uri(path):
        return path
    from pyarrow import fs

    try:
        filesystem, key = fs.FileSystem.from_uri(path)
        with filesystem.open_input_stream(key) as f:
            return f.read()
    except Exception as exc:  # reported per image, like any unreadable file
        return DecodedInput(None, error=f"cannot read from object store ({type(exc).__name__}: {exc})")


def label_images(predictor, decoder, paths: list[str], *, embeddings: bool = False,
                 cams=None, batch_size: int = 16):
    """Label images in mini-batches through the model's :class:`~frugalvision.inference.Predictor`.

    Returns ``(table, explanations_by_index)``. ``table`` has the local ``predict`` columns (path, the decision's
    columns, error) plus ``probabilities`` (all classes, model order) and ``embedding`` when
    asked. ``cams`` is None or ``(class_selector, method)``; then, per readable image, its
    :class:`~frugalvision.explanation.Explanation` and its bytes when it came from an object store (the panel
    draws it without reading it again).
    """
    from ..decision import Decisions
    from ..explanation import explanations_of
    from ..inference import predictions_table

    model = predictor.model
    dim = model.info.backbone.embed_dim
    ok = np.zeros(len(paths), bool)
    emb = np.zeros((len(paths), dim), np.float32)
    probs = np.zeros((len(paths), len(model.classes)))
    failures, expl, parts = [], {}, []
    for s in range(0, len(paths), batch_size):
        chunk = paths[s:s + batch_size]
        sources = [_read_source(p) for p in chunk]
        decoded = [src if isinstance(src, DecodedInput) else decoder(src) for src in sources]
        good = [i for i, d in enumerate(decoded) if d.array is not None]
        failures.extend((chunk[i], d.error) for i, d in enumerate(decoded) if d.array is None)
        if not good:
            continue
        if cams is not None:
            es, res = explanations_of(predictor, chunk, decoded, cls=cams[0], method=cams[1])
            expl.update({s + i: (x, sources[i] if isinstance(sources[i], bytes) else None) for i, x in zip(good, es)})
        else:
            res = predictor.run(np.stack([decoded[i].array for i in good]))
        idx = [s + i for i in good]
        emb[idx], probs[idx], ok[idx] = res.embeddings, res.probabilities, True
        parts.append(res.decisions)  # batches in path order, so the readable rows stay in order
    table = predictions_table(SimpleNamespace(paths=list(paths), ok=ok, failures=failures),
                              Decisions.concat(parts, model.classes))
    all_p = [probs[i].astype(np.float32) if ok[i] else None for i in range(len(paths))]
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.append_column("probabilities", pa.array(all_p, type=pa.list_(pa.float32())))
    if embeddings:
        arrow = arrow.append_column("embedding", pa.array([emb[i] if ok[i] else None for i in range(len(paths))],
                                                          type=pa.list_(pa.float32())))
    meta = {b"frugalvision": json.dumps({"classes": list(model.classes)}).encode()}
    return arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta}), expl


class ShardWorker:
    """The callable class given to ``Dataset.map_batches``: one instance per actor, model loaded once.

    Each input row is a shard number; the output row says what was done (images, failures, start and
    end time, process), never the predictions themselves, so results don't pass through Ray's object store.
    """

    def __init__(self, model_path: str, out: str, *, embeddings: bool = False, cams=None,
                 batch_size: int = 16, threads: int = 1, engine: str = "auto", cache_dir=None):
        from ..inference import predictor
        from ..model import load_model

        self.model = load_model(model_path, inference_only=True)  # no scikit-learn import: faster actor start
        ex = self.model.extractor(engine=engine, cache_dir=cache_dir, progress=False)
        ex.threads = threads  # the actor's CPUs, not the machine's
        self.predictor, self.decoder = predictor(self.model, engine=engine, cache_dir=cache_dir), ex.decoder()
        self.out, self.embeddings, self.cams, self.batch_size = out, embeddings, cams, batch_size

    def __call__(self, batch: dict) -> dict:
        rows = {"shard": [], "images": [], "failed": [], "started": [], "finished": [], "pid": []}
        for shard in batch["shard"]:
            t = time.time()
            n, bad = self.run_shard(int(shard))
            for k, v in zip(rows, (int(shard), n, bad, t, time.time(), os.getpid())):
                rows[k].append(v)
        return {k: np.asarray(v) for k, v in rows.items()}

    def run_shard(self, shard: int) -> tuple[int, int]:
        from .._io import atomic_writer, write_bytes
        from ..explanation import render_panel

        paths = read_shard_paths(self.out, shard)
        table, expl = label_images(self.predictor, self.decoder, paths,
                                   embeddings=self.embeddings, cams=self.cams, batch_size=self.batch_size)
        if self.cams is not None:
            names = [None] * len(paths)
            for i, (e, src) in expl.items():
                rel = f"cams/{shard:06d}/{i:05d}__{_stem(paths[i])}.png"
                write_bytes(Path(self.out) / rel, render_panel(e, source=src))
                names[i] = rel
            table = table.append_column("cam", pa.array(names, type=pa.string()))
        with atomic_writer(shard_file(self.out, shard)) as fh:  # the shard is done once this file exists
            pq.write_table(table, fh)
        return len(paths), int(sum(1 for e in table.column("error").to_pylist() if e))


def _stem(path: str) -> str:
    stem = Path(path.split("://", 1)[-1]).stem
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:60]
