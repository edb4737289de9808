"""train --engine ray on a local 2-CPU Ray: the local model from actor-extracted embeddings, served from the shared
cache on a second run, resumed after an interruption; refusals with their reasons."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import frugalvision as fv
from frugalvision.cli.main import main

from conftest import make_shapes_dataset

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_shapes_dataset(tmp_path_factory.mktemp("train"), n_per_class=40, seed=11, size=64)  # 120 images
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # planted corrupt image
    return root


@pytest.fixture(scope="module")
def test_images(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("held_out"), n_per_class=10, seed=12, size=64)


def _cache_keys(cache, ex_id: str) -> list[str]:
    folder = cache / "embeddings" / ex_id
    return [k for f in sorted(folder.glob("shard-*.keys")) for k in f.read_text().split()]


def test_train_on_ray_gives_the_local_model_and_a_second_run_is_served_from_the_cache(data, test_images, tmp_path,
                                                                                      local_ray, capsys):
    ray_cache, local_cache = tmp_path / "ray_cache", tmp_path / "local_cache"
    assert main(["train", str(data), "--engine", "ray", "--shard-size", "32", "--out", str(tmp_path / "ray_run"),
                 "--cache-dir", str(ray_cache), "-q"]) == 0
    out = capsys.readouterr().out
    assert "Ray (clean): 121 images in 4 shards: computed 4 shards with 2 actors (120 embeddings computed, " \
           "0 from the cache)" in out
    m_ray = fv.load_model(tmp_path / "ray_run")
    m_loc = fv.train(data, out=tmp_path / "local_run", cache_dir=local_cache, progress=False)  # its own cache

    # Same embeddings (the actors and the local engine computed them separately), same split, same skipped file.
    ex = m_loc.extractor(cache_dir=local_cache, progress=False)
    ex_ray = m_ray.extractor(cache_dir=ray_cache, progress=False)
    assert ex.id == ex_ray.id
    paths = m_loc.training_data.table["path"].tolist()
    got = ex_ray(paths)
    assert got.n_computed == 0  # all in the cache the actors wrote
    np.testing.assert_allclose(got.X, m_loc.training_data.X, atol=1e-5, rtol=0)
    split_ray = (tmp_path / "ray_run" / "split.csv").read_text()
    assert split_ray == (tmp_path / "local_run" / "split.csv").read_text()
    assert "broken.png" in (tmp_path / "ray_run" / "skipped.csv").read_text()
    # Same model: head weights, and the same decisions on held-out images.
    np.testing.assert_allclose(m_ray.head.coef_, m_loc.head.coef_, atol=1e-5)
    p_ray = fv.predict(m_ray, [test_images], progress=False, cache_dir=ray_cache)
    p_loc = fv.predict(m_loc, [test_images], progress=False, cache_dir=local_cache)
    assert (p_ray["label"].to_numpy() == p_loc["label"].to_numpy()).all()
    np.testing.assert_allclose(p_ray["probability"], p_loc["probability"], atol=1e-5)

    # A second run is served from the job's done files and the cache: no shard, no backbone pass.
    again = fv.train(data, engine="ray", cache_dir=ray_cache, progress=False, ray_options={"shard_size": 32})
    job = again.info.training["ray"][0]
    assert (job["computed_shards"], job["skipped_shards"], job["computed_here"]) == (0, 4, 0)
    np.testing.assert_allclose(again.head.coef_, m_ray.head.coef_, atol=1e-6)
    # Another job over the same images (other shards) finds every embedding in the cache, as a local run would.
    other = fv.train(data, engine="ray", cache_dir=ray_cache, progress=False, ray_options={"shard_size": 64})
    job = other.info.training["ray"][0]
    assert (job["computed_shards"], job["computed_embeddings"], job["cached_embeddings"]) == (2, 0, 120)
    keys = _cache_keys(ray_cache, ex.id)
    assert len(keys) == len(set(keys)) == 120 + 30  # every image (training, held-out) embedded once, whatever ran


def _settled(job, cache, ex_id, *, quiet_s: float = 5.0, limit_s: float = 90.0):
    """The done files and cache keys once the interrupted job has stopped writing: an actor may still finish the
    shard it was running when the driver was interrupted (Ray kills it asynchronously). A shard here takes well
    under a second, so nothing written for 5 s means the job has stopped."""
    import time

    def look():
        return sorted(job.glob("done/part-*.parquet")), len(_cache_keys(cache, ex_id))

    last, since, t0 = look(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() - t0 < limit_s, "the interrupted job kept writing for 90 s"
        time.sleep(0.25)
        now = look()
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_an_interrupted_ray_training_resumes_and_redoes_only_what_is_missing(data, tmp_path, local_ray):
    cache = tmp_path / "cache"
    seen = []

    def killed(row):  # the driver dies after the first finished shard (Ctrl-C, a lost head node)
        seen.append(int(row["shard"]))
        raise KeyboardInterrupt

    opts = {"shard_size": 8, "actors": 1}  # 16 shards, one at a time: the interruption lands part-way
    with pytest.raises(KeyboardInterrupt):
        fv.train(data, engine="ray", cache_dir=cache, progress=False, ray_options={**opts, "on_shard": killed})
    jobs = list((cache / "ray-jobs").glob("*/*"))
    assert len(jobs) == 1 and seen
    ex_id = jobs[0].parent.name
    done_before, keys_before = _settled(jobs[0], cache, ex_id)
    assert 1 <= len(done_before) < 16
    mtimes = {p: p.stat().st_mtime_ns for p in done_before}
    assert keys_before < 120

    model = fv.train(data, engine="ray", cache_dir=cache, progress=False, ray_options=opts)
    job = model.info.training["ray"][0]
    assert job["skipped_shards"] == len(done_before) and job["computed_shards"] == 16 - len(done_before)
    assert {p: p.stat().st_mtime_ns for p in done_before} == mtimes  # finished shards untouched
    # Images embedded before the interruption (even in a shard that did not finish) are not computed again.
    assert job["computed_embeddings"] == 120 - keys_before
    assert len(_cache_keys(cache, ex_id)) == 120 and job["computed_here"] == 0
    assert model.info.training["n_images"] == 120 and model.info.training["n_skipped"] == 1

    # A training image edited since is noticed: its shard is done again, with the new picture's embedding.
    victim = sorted((data / "circle").glob("*.png"))[0]
    from PIL import Image

    Image.open(victim).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    job = fv.train(data, engine="ray", cache_dir=cache, progress=False, ray_options=opts).info.training["ray"][0]
    assert (job["stale_shards"], job["computed_shards"], job["computed_embeddings"]) == (1, 1, 1)


def test_ray_honours_precision_and_multi_stage_features_with_the_local_cache_entries(tmp_path, local_ray):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=12, seed=5, size=64)
    ray_cache, local_cache = tmp_path / "rc", tmp_path / "lc"
    kw = dict(precision="int8", features="multi", progress=False)
    m_ray = fv.train(root, engine="ray", cache_dir=ray_cache, ray_options={"shard_size": 16}, **kw)
    m_loc = fv.train(root, cache_dir=local_cache, **kw)
    assert m_ray.info.backbone.precision == "int8" and m_ray.info.backbone.features == "multi"
    ex_id = m_loc.extractor(cache_dir=local_cache, progress=False).id
    assert ex_id.endswith(tuple("-multi" + s for s in ("345", "34", "45", "3456"))) or "-multi" in ex_id
    assert [p.name for p in (ray_cache / "embeddings").iterdir()] == [ex_id]  # the extractor's id: shared entries
    assert m_ray.training_data.X.shape == m_loc.training_data.X.shape and m_ray.training_data.X.shape[1] > 1280
    np.testing.assert_allclose(m_ray.training_data.X, m_loc.training_data.X, atol=1e-5, rtol=0)
    p = fv.predict(m_ray, [root], progress=False, cache_dir=ray_cache)
    q = fv.predict(m_loc, [root], progress=False, cache_dir=local_cache)
    assert (p["label"].to_numpy() == q["label"].to_numpy()).all()


def test_engine_ray_is_refused_where_it_cannot_run_with_the_reason(data, tmp_path, monkeypatch, capsys):
    assert main(["train", str(data), "--engine", "ray", "--finetune", "last-stage", "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert "--finetune trains the backbone itself" in err and "Drop --engine ray to fine-tune" in err
    assert main(["train", str(data), "--engine", "spark", "--out", str(tmp_path / "s")]) == 1
    assert "Choose one of auto, onnx, torch, ray" in capsys.readouterr().err
    from frugalvision.features.engine import make_engine

    with pytest.raises(ValueError, match="runs whole jobs on Ray actors"):  # a step that runs the backbone here
        make_engine(engine="ray")
    assert main(["train", "--help"]) == 0
    assert "or ray (the embeddings are extracted by Ray actors" in " ".join(capsys.readouterr().out.split())
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["train", str(data), "--engine", "ray", "--out", str(tmp_path / "o")]) == 1
    assert "pip install 'frugalvision[ray]'" in capsys.readouterr().err
