"""Embedding cache (hit, partial, resume after a kill), engines agree, spawn-safe workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from frugalvision.features import engine as engine_mod
from frugalvision.features.extract import Extractor

from conftest import make_shapes_dataset, needs_torch


def _files(root):
    return sorted(str(p) for p in root.rglob("*.png"))


@pytest.fixture()
def counting(monkeypatch):
    """Count backbone batches and engine constructions."""
    calls = {"run": 0, "images": 0, "make": 0}
    real_make = engine_mod.make_engine

    def make(*a, **k):
        calls["make"] += 1
        eng = real_make(*a, **k)
        real_run = eng.run

        def run(images, maps=False):
            calls["run"] += 1
            calls["images"] += len(images)
            return real_run(images, maps)

        eng.run = run
        return eng

    monkeypatch.setattr("frugalvision.features.extract.make_engine", make)
    return calls


def test_cache_hit_partial_and_dedup(tmp_path, counting):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=5, seed=3)
    files = _files(root)
    ex = Extractor(cache_dir=tmp_path / "c", progress=False, batch_size=4)
    first = ex(files)
    assert first.n_computed == 15 and first.X.shape == (15, 1280) and counting["images"] == 15
    # Second run: everything cached, no engine built, no backbone pass.
    counting.update(run=0, images=0, make=0)
    again = Extractor(cache_dir=tmp_path / "c", progress=False)(files)
    assert again.n_computed == 0 and again.n_cached == 15 and counting["make"] == 0 and counting["images"] == 0
    np.testing.assert_array_equal(again.X, first.X)
    # Adding images computes only the new ones; an identical copy under a new name is a hit.
    extra = make_shapes_dataset(tmp_path / "e", n_per_class=1, seed=99)
    (tmp_path / "copy.png").write_bytes(open(files[0], "rb").read())
    more = Extractor(cache_dir=tmp_path / "c", progress=False)(files + _files(extra) + [str(tmp_path / "copy.png")])
    assert more.n_computed == 3 and counting["images"] == 3
    np.testing.assert_array_equal(more.X[-1], first.X[0])
    assert not list((tmp_path / "c").rglob("*.tmp"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_reading_the_cache_leaves_one_resident_copy(tmp_path):
    """Rows copied out of a memory-mapped shard do not also stay resident as the shard's pages (one copy, not two)."""
    from frugalvision.features.cache import EmbeddingCache

    def rss_file_mb():  # file pages; on a tmpfs they count as shared memory
        with open("/proc/self/status") as fh:
            return sum(int(line.split()[1]) for line in fh if line.startswith(("RssFile", "RssShmem"))) / 1024

    X = np.random.default_rng(0).random((8192, 2048), dtype=np.float32)  # 64 MB
    EmbeddingCache(tmp_path, "x").add([f"k{i}" for i in range(len(X))], X)
    cache = EmbeddingCache(tmp_path, "x")
    before = rss_file_mb()
    got = cache.get([f"k{i}" for i in range(len(X))])
    assert np.array_equal(got, X)
    assert rss_file_mb() - before < 16  # without dropping the pages: +64 MB
    assert np.array_equal(cache.get([f"k{i}" for i in range(0, len(X), 7)]), X[::7])  # read again after the drop


def test_bad_files_are_listed_and_the_run_continues(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=2)
    (root / "circle" / "broken.png").write_bytes(b"not a png")
    (root / "circle" / "empty.png").write_bytes(b"")
    files = _files(root)
    emb = Extractor(cache_dir=tmp_path / "c", progress=False)(files)
    reasons = dict(emb.failures)
    assert set(reasons) == {str(root / "circle" / "broken.png"), str(root / "circle" / "empty.png")}
    assert "not an image" in reasons[str(root / "circle" / "broken.png")]
    assert "empty file" in reasons[str(root / "circle" / "empty.png")]
    assert emb.ok.sum() == 6 and emb.X.shape[0] == 6


_KILLER = textwrap.dedent("""
    import os, sys
    from frugalvision.features import cache
    from frugalvision.features.extract import Extractor
    real_add, shards = cache.EmbeddingCache.add, [0]
    def add_then_die(self, keys, emb):
        real_add(self, keys, emb)
        shards[0] += 1
        if shards[0] == 3:        # simulate kill -9 right after the 3rd shard reached the disk
            os._exit(9)
    cache.EmbeddingCache.add = add_then_die
    files = sys.argv[2:]
    Extractor(cache_dir=sys.argv[1], progress=False, batch_size=4)(files, flush_every=4)
""")


def test_interrupted_extraction_resumes(tmp_path, counting):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=8, seed=5)
    files = _files(root)
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(tmp_path / "c"), *files])
    assert proc.returncode == 9  # the process really died mid-run
    resumed = Extractor(cache_dir=tmp_path / "c", progress=False, batch_size=4)(files)
    assert resumed.n_cached == 12 and resumed.n_computed == 12 and counting["images"] == 12
    fresh = Extractor(cache_dir=tmp_path / "fresh", progress=False)(files)
    np.testing.assert_allclose(resumed.X, fresh.X, atol=1e-4)


@needs_torch
def test_onnx_and_torch_embeddings_agree(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=2, seed=1)
    files = _files(root)
    a = Extractor(engine="onnx", cache_dir=tmp_path / "a", progress=False)
    b = Extractor(engine="torch", cache_dir=tmp_path / "b", progress=False)
    ea, eb = a(files), b(files)
    assert a.engine.name == "onnx" and b.engine.name == "torch"
    assert np.abs(ea.X - eb.X).max() < 1e-3
    ma, _ = a.engine.run(np.zeros((1, 224, 224, 3), np.uint8), maps=True)
    mb, _ = b.engine.run(np.zeros((1, 224, 224, 3), np.uint8), maps=True)
    assert ma.shape == mb.shape == (1, 1280, 7, 7) and np.abs(ma - mb).max() < 1e-3


@needs_torch
def test_onnx_file_is_reused_without_building_torch(tmp_path, monkeypatch):
    """A backbone without a shipped graph (here: local weights) is exported once, then reused as is."""
    from safetensors.torch import save_file

    from frugalvision.backbones.build import build_backbone

    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in build_backbone("efficientnet_lite0").model.state_dict().items()},
              str(weights))
    Extractor(engine="onnx", weights=weights, cache_dir=tmp_path, progress=False).engine  # export once
    assert list((tmp_path / "onnx").glob("*.onnx"))

    def boom(*a, **k):
        raise AssertionError("the torch model was built although the ONNX file exists")

    monkeypatch.setattr("frugalvision.backbones.build.build_backbone", boom)
    assert Extractor(engine="onnx", weights=weights, cache_dir=tmp_path, progress=False).engine.name == "onnx"


def test_spawn_worker_processes(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=2, seed=2)
    files = _files(root)
    threads = Extractor(cache_dir=tmp_path / "t", progress=False)(files)
    procs = Extractor(cache_dir=tmp_path / "p", progress=False, pool="process", workers=2)(files)
    np.testing.assert_allclose(procs.X, threads.X, atol=1e-5)
