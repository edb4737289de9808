"""--engine ray on a local 2-CPU Ray: same results as the local engine, bad images reported, re-runs resume."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from frugalvision.cli.main import main

from conftest import make_shapes_dataset

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    root = make_shapes_dataset(tmp_path_factory.mktemp("many"), n_per_class=80, seed=7, size=64)  # 240 images
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # planted corrupt image
    return root


def test_predict_on_ray_equals_local_engine_reports_bad_files_and_resumes(trained, many_images, tmp_path,
                                                                          local_ray, capsys):
    _, model_path = trained
    out = tmp_path / "ray"
    assert main(["predict", str(model_path), str(many_images), "--engine", "ray", "--out", str(out),
                 "--shard-size", "64", "--embeddings", "-q"]) == 0
    parts = sorted(out.glob("predictions/part-*.parquet"))
    assert len(parts) == 4  # 241 images / 64 per shard
    got = pd.read_parquet(out / "predictions").set_index("path").sort_index()
    assert len(got) == 241

    local = tmp_path / "local.csv"
    assert main(["predict", str(model_path), str(many_images), "--out", str(local), "-q"]) == 0
    want = pd.read_csv(local, keep_default_na=False).set_index("path").sort_index()
    assert list(got.index) == list(want.index)
    ok = want["error"] == ""
    assert (got.loc[ok, "label"] == want.loc[ok, "label"]).all()
    np.testing.assert_allclose(got.loc[ok, "probability"], want.loc[ok, "probability"].astype(float), atol=1e-4)
    np.testing.assert_allclose(np.stack(got.loc[ok, "probabilities"]).sum(1), 1, atol=1e-5)
    assert len(np.stack(got.loc[ok, "embedding"])[0]) == 1280

    bad = got[got["error"] != ""]
    assert list(bad.index.str.endswith("broken.png")) == [True]
    assert "truncated" in bad["error"].iloc[0] or "cannot" in bad["error"].iloc[0] or "not an image" in bad["error"].iloc[0]
    assert "1 unreadable" in capsys.readouterr().out

    # A re-run computes nothing; losing one shard recomputes exactly that one.
    mtimes = {p: p.stat().st_mtime_ns for p in parts}
    assert main(["predict", str(model_path), str(many_images), "--engine", "ray", "--out", str(out),
                 "--shard-size", "64", "--embeddings", "-q"]) == 0
    rerun = capsys.readouterr().out
    assert "computed 0 shards" in rerun and "1 unreadable" in rerun  # counted from the shard files
    assert {p: p.stat().st_mtime_ns for p in parts} == mtimes
    parts[0].unlink()  # the shard holding broken.png (sorted first)
    assert main(["predict", str(model_path), str(many_images), "--engine", "ray", "--out", str(out),
                 "--shard-size", "64", "--embeddings", "-q"]) == 0
    again = capsys.readouterr().out
    assert "computed 1 shards (64 images)" in again and "1 unreadable" in again  # rows + files, counted once
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions").set_index("path").sort_index().drop(columns="embedding"),
                                  got.drop(columns="embedding"))


def test_a_different_job_never_overwrites_an_output_folder(trained, shapes_dir, tmp_path, local_ray, capsys):
    _, model_path = trained
    out = tmp_path / "ray"
    assert main(["predict", str(model_path), str(shapes_dir / "circle"), "--engine", "ray", "--out", str(out),
                 "-q"]) == 0
    assert main(["predict", str(model_path), str(shapes_dir / "square"), "--engine", "ray", "--out", str(out),
                 "-q"]) == 1
    assert "different job (differs in: inputs" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["predict", str(model_path), str(shapes_dir / "circle"), "--engine", "ray", "--out",
                 str(tmp_path / "mine"), "-q"]) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_explain_on_ray_writes_one_cam_panel_per_readable_image(trained, shapes_dir, tmp_path, local_ray):
    _, model_path = trained
    out = tmp_path / "cams"
    assert main(["explain", str(model_path), str(shapes_dir / "triangle"), "--engine", "ray", "--out", str(out),
                 "--shard-size", "8"]) == 0
    df = pd.read_parquet(out / "predictions")
    pngs = sorted(out.glob("cams/*/*.png"))
    assert len(pngs) == len(df) == len(list((shapes_dir / "triangle").glob("*.png")))
    assert set(df["cam"]) == {str(p.relative_to(out)) for p in pngs}
    from PIL import Image

    assert Image.open(pngs[0]).size[0] > 2 * Image.open(pngs[0]).size[1]  # image | top-1 | top-2


def test_without_ray_the_flag_names_the_extra(trained, shapes_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["predict", str(trained[1]), str(shapes_dir), "--engine", "ray", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "pip install 'frugalvision[ray]'" in err and len(err.strip().splitlines()) <= 2


def test_overwrite_replaces_a_previous_job_with_the_new_inputs(trained, shapes_dir, tmp_path, local_ray):
    from frugalvision.distributed import read_results, run_batch

    _, model_path = trained
    out = tmp_path / "job"
    run_batch(model_path, [shapes_dir / "circle"], out, shard_size=8, progress=False)
    res = run_batch(model_path, [shapes_dir / "square"], out, shard_size=8, progress=False, overwrite=True)
    df = read_results(out)
    assert res.computed_shards == res.shards and len(df) == res.images
    assert df["path"].str.contains("/square/").all()
