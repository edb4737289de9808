"""train -> artifact -> predict, end to end on generated images; and the CLI over it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import frugalvision as fv
from frugalvision.cli.main import main

from conftest import make_shapes_dataset
from frugalvision.inference import probabilities as _probs


def _proba(model, X):
    return _probs(model, X)[1]


def test_trained_model_learns_the_shapes(trained):
    model, run = trained
    assert model.classes == ["circle", "square", "triangle"]
    assert model.training_["validation"]["accuracy"] >= 0.8
    # 9 validation images: too few to choose C or a temperature, and the summary says so.
    assert len(model.training_data.part("val")[1]) == 9
    assert model.training_["C_search"] == [] and model.training_["C"] == 0.01 and model.info.temperature is None
    assert any("not calibrated" in n for n in model.training_["notes"])

    for name in ("model.safetensors", "split.csv", "skipped.csv", "training.json"):
        assert (run / name).exists()
    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"} and len(split) == 60


def test_C_and_temperature_are_chosen_on_validation(shapes_dir):
    """With enough validation images, C is the grid value with the lowest validation log-loss and the temperature
    lowers that loss further (the embeddings are cached by the session's model)."""
    from sklearn.metrics import log_loss

    from frugalvision.heads import softmax

    model = fv.train(shapes_dir, val_size=0.35, progress=False, reject=False)
    search = model.training_["C_search"]
    assert len(search) == 7 and model.training_["C"] == min(search, key=lambda r: r["val_log_loss"])["C"]
    X_va, y_va, _ = model.training_data.part("val")
    assert model.info.temperature is not None and model.info.temperature != 1.0
    raw = log_loss(y_va, softmax(model.head.logits(X_va)), labels=model.classes)
    assert log_loss(y_va, _proba(model, X_va), labels=model.classes) <= raw + 1e-9


def test_second_train_does_no_backbone_work(shapes_dir, trained, tmp_path, monkeypatch):
    calls = []
    real = fv.Extractor.engine.fget
    monkeypatch.setattr(fv.Extractor, "engine", property(lambda self: calls.append(1) or real(self)))
    model = fv.train(shapes_dir, progress=False)
    assert calls == []  # the engine was never even built
    np.testing.assert_allclose(model.head.coef_, trained[0].head.coef_)


def test_artifact_round_trip_has_no_pickle_and_same_predictions(trained, shapes_dir, tmp_path):
    model, run = trained
    raw = (run / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])  # a safetensors file is a JSON header + raw tensors
    tensors = set(header) - {"__metadata__"}
    assert {t for t in tensors if not t.startswith("ood.")} == {"head.coef", "head.intercept"}
    assert tensors > {"head.coef", "head.intercept"}  # the "none of these" score's arrays: ood.*
    assert b"\x80\x04\x95" not in raw and b"torch._utils" not in raw  # no pickle stream inside
    meta = json.loads(header["__metadata__"]["frugalvision"])
    assert meta["backbone"]["name"] == "efficientnet_lite0" and meta["classes"] == model.classes
    assert meta["preprocessing"]["input_size"] == 224 and meta["versions"]["frugalvision"]
    files = sorted(str(p) for p in shapes_dir.rglob("*.png"))[:9]
    loaded = fv.load_model(run)
    a, b = fv.predict(model, files, progress=False), fv.predict(loaded, files, progress=False)
    pd.testing.assert_frame_equal(a, b)
    # Moving the file elsewhere keeps it usable.
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(run / "model.safetensors", moved)
    pd.testing.assert_frame_equal(fv.predict(fv.load_model(moved), files, progress=False), a)


def test_model_file_is_never_overwritten_silently(trained, shapes_dir):
    _, run = trained
    with pytest.raises(FileExistsError, match="never overwrites"):
        fv.train(shapes_dir, out=run, progress=False)


def test_not_a_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(fv.ArtifactError, match="not a frugalvision model file"):
        fv.load_model(bad)


def test_training_skips_and_names_every_bad_file(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=8, seed=11)
    (root / "circle" / "zero.png").write_bytes(b"")
    (root / "square" / "notes.txt").write_text("hello")
    (root / "triangle" / "half.png").write_bytes((root / "triangle" / "triangle_000.png").read_bytes()[:100])
    model = fv.train(root, out=tmp_path / "run", progress=False)
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert sorted(p.rsplit("/", 1)[1] for p in skipped["path"]) == ["half.png", "notes.txt", "zero.png"]
    assert all(skipped["reason"].str.len() > 5)
    assert model.training_["n_skipped"] == 3 and model.training_["n_images"] == 24


def test_predict_table_columns_and_bad_files(trained, tmp_path):
    model, _ = trained
    good = make_shapes_dataset(tmp_path / "p", n_per_class=1, seed=4)
    (good / "junk.png").write_bytes(b"junk")
    table = fv.predict(model, [good], progress=False)
    assert list(table.columns) == ["path", "label", "probability", "rule", "most_probable",
                                   "most_probable_probability", "runner_up", "runner_up_probability", "ood_score",
                                   "error"]
    bad = table[table["path"].str.endswith("junk.png")].iloc[0]
    assert bad["label"] == "" and "not an image" in bad["error"]
    ok = table[table["error"] == ""]
    assert len(ok) == 3 and (ok["runner_up"] != ok["label"]).all()
    decided = ok[ok["label"] != "unknown"]
    assert (decided["probability"] + decided["runner_up_probability"] <= 1 + 1e-6).all()


def test_manifest_with_metadata_columns(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n_per_class=8, seed=12)
    rows = [{"path": str(p.relative_to(tmp_path)), "label": p.parent.name, "source": "web" if i % 2 else "shop"}
            for i, p in enumerate(sorted(root.rglob("*.png")))]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    fv.train(tmp_path / "m.csv", out=tmp_path / "run", progress=False)
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert "source" in split.columns and set(split["source"]) == {"web", "shop"}


def test_cli_train_predict_and_errors(shapes_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(shapes_dir), "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "Validation accuracy" in text and "model.safetensors" in text
    csv = tmp_path / "pred.csv"
    assert main(["predict", str(out), str(shapes_dir / "circle"), "--out", str(csv), "-q"]) == 0
    pred = pd.read_csv(csv)
    assert (pred["label"] == "circle").mean() >= 0.8
    # Known errors: one paragraph on stderr, exit code 1, no traceback.
    assert main(["train", str(shapes_dir), "--out", str(tmp_path / "r2"), "--backbone", "efficientnet_lite", "-q"]) == 1
    err = capsys.readouterr().err
    assert "Did you mean 'efficientnet_lite" in err and "Traceback" not in err
    assert main(["predict", str(out), str(shapes_dir / "circle"), "--out", str(csv), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["train", str(shapes_dir), "--C", "abc", "--out", str(tmp_path / "r3")]) == 1
    assert "C = 'abc': expected a positive number or 'auto'" in capsys.readouterr().err


_PREDICT_WITHOUT_SKLEARN = """
import sys, numpy as np
from frugalvision.inference import probabilities
from frugalvision.model import load_model
m = load_model(sys.argv[1], inference_only=True)
X = np.load(sys.argv[2])
np.save(sys.argv[3], probabilities(m, X)[1])
cams = hasattr(m.head, "coef_")
print("sklearn" in sys.modules, cams, repr(m))
"""


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_inference_only_model_predicts_the_same_without_importing_sklearn(shapes_dir, tmp_path, head):
    """What a Ray actor loads: numpy applies the head, scikit-learn (~1 s to import) is never imported."""
    import subprocess
    import sys

    model = fv.train(shapes_dir, head=head, out=tmp_path / "run", progress=False)
    X = model.data_.X[:20]
    np.save(tmp_path / "X.npy", X)
    out = subprocess.run([sys.executable, "-c", _PREDICT_WITHOUT_SKLEARN, str(tmp_path / "run"), str(tmp_path / "X.npy"),
                          str(tmp_path / "p.npy")], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "True" if head == "linear" else "False"]  # no sklearn; coef_ only for exact CAM
    kind = "LinearHead" if head == "linear" else "MLPHead"
    assert f"head={kind})" in " ".join(out)
    # float32 numpy against scikit-learn's float64: a few 1e-6 apart on the int8 graph's larger activations
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), _proba(model, X), rtol=0, atol=2e-5)
    # Anything else falls through to the real estimator, so the light model still saves the same file.
    light = fv.load_model(tmp_path / "run", inference_only=True)
    light.save(tmp_path / "again.safetensors")
    again = fv.load_model(tmp_path / "again.safetensors")
    assert type(again.head).__name__ == kind and again.head.get_params() == model.head.get_params()
    np.testing.assert_allclose(_proba(again, X), _proba(model, X), atol=1e-6)
