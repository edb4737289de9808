"""Edited or hand-made model files, run folders used twice, killed exports: one clear message each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import frugalvision as fv
from frugalvision.cli.main import main
from frugalvision.exceptions import ArtifactError, DataError


def _rewrite(src, dst, edit_meta=None, edit_tensors=None, raw=None):
    with safe_open(str(src), framework="numpy") as f:
        meta = json.loads(f.metadata()["frugalvision"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata={"frugalvision": raw if raw is not None else json.dumps(meta)})
    return dst


def _drop(key):
    return lambda m: m.pop(key)


CASES = {
    "not JSON": dict(raw="{not json"),
    "no head": dict(edit_meta=_drop("head")),
    "no backbone": dict(edit_meta=_drop("backbone")),
    "backbone without name": dict(edit_meta=lambda m: m["backbone"].pop("name")),
    "classes not a list": dict(edit_meta=lambda m: m.update(classes="abc")),
    "fewer classes than head rows": dict(edit_meta=lambda m: m.update(classes=m["classes"][:2])),
    "more classes than head rows": dict(edit_meta=lambda m: m.update(classes=m["classes"] + ["extra"])),
    "unknown head type": dict(edit_meta=lambda m: m["head"].update(type="ForestHead")),
    "preprocessing of the wrong type": dict(edit_meta=lambda m: m["preprocessing"].update(input_size="big")),
    "negative temperature": dict(edit_meta=lambda m: m.update(temperature=-1)),
    "head tensor missing": dict(edit_tensors=lambda t: t.pop("head.coef")),
    "head parameters that do not apply": dict(edit_meta=lambda m: m["head"].update(params={"nonsense": 1})),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_edited_model_file_gives_one_clear_message(trained, tmp_path, case, capsys):
    _, run = trained
    bad = _rewrite(run / "model.safetensors", tmp_path / "model.safetensors", **CASES[case])
    with pytest.raises(ArtifactError) as err:
        fv.load_model(bad)
    assert "model" in str(err.value) and "Traceback" not in str(err.value)
    if case != "head parameters that do not apply":  # parameters are for refitting; applying the head ignores them
        with pytest.raises(ArtifactError):
            fv.load_model(bad, inference_only=True)
    assert main(["predict", str(bad), str(run / "split.csv"), "--out", str(tmp_path / "p.csv")]) == 1
    assert "Error:" in capsys.readouterr().err


def test_the_typed_metadata_round_trips(trained, tmp_path):
    model, run = trained
    again = fv.load_model(run)
    assert again.info == model.info
    assert again.info.backbone.embed_dim == 1280 and again.info.preprocessing.input_size == 224


def test_run_files_are_never_replaced_even_without_a_model(shapes_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "split.csv").write_text("mine\n")
    with pytest.raises(FileExistsError, match="split.csv"):
        fv.train(shapes_dir, out=out, progress=False)
    assert (out / "split.csv").read_text() == "mine\n"


def test_two_trainings_into_one_folder_do_not_both_succeed(shapes_dir, tmp_path):
    from frugalvision._io import run_folder

    out = tmp_path / "run"
    with run_folder(out, ()):  # another process holds the folder: a second train stops at once
        code = subprocess.run([sys.executable, "-m", "frugalvision.cli.main", "train", str(shapes_dir), "--out",
                               str(out), "-q"], capture_output=True, text=True, timeout=300)
    assert code.returncode == 1 and "Another frugalvision run is writing" in code.stderr
    assert not (out / "model.safetensors").exists() and not (out / "split.csv").exists()


def test_a_bad_argument_is_a_message_not_a_traceback(shapes_dir, tmp_path, capsys):
    assert main(["train", str(shapes_dir), "--out", str(tmp_path / "r"), "--val-size", "1.5", "-q"]) == 1
    err = capsys.readouterr().err
    assert "val_size" in err and "Traceback" not in err
    with pytest.raises(DataError):
        fv.train(shapes_dir, head="forest", progress=False)


def test_a_killed_export_leaves_no_orphan_temporary_file(tmp_path):
    from frugalvision._io import remove_stale_temporaries

    folder = tmp_path / "onnx"
    folder.mkdir()
    # A writer that was killed: its pid no longer exists.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = folder / f".model.onnx.{dead.pid}-abc.tmp"
    orphan.write_bytes(b"half")
    live = folder / f".other.onnx.{os.getpid()}-xyz.tmp"
    live.write_bytes(b"being written")
    assert remove_stale_temporaries(folder) == 1
    assert not orphan.exists() and live.exists()


def test_timm_specs_are_looked_up_once(tmp_path):
    pytest.importorskip("timm")
    from frugalvision.backbones.registry import _spec_from_timm, get_spec

    get_spec("timm:resnet10t")
    t = time.perf_counter()
    for _ in range(20):
        spec = get_spec("timm:resnet10t")
    assert time.perf_counter() - t < 0.05 and _spec_from_timm.cache_info().hits >= 20
    assert spec.cam_layer == "layer4" and spec.pooled_is_plain_avg
