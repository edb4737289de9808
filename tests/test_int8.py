"""int8: the shipped quantized backbone agrees with fp32, never shares its cache, and 'auto' falls back when it drifts."""

from __future__ import annotations

import numpy as np
import pytest

import frugalvision as fv
from frugalvision.features.extract import Extractor

from conftest import make_shapes_dataset


@pytest.fixture(scope="module")
def images(tmp_path_factory, coffee_jpeg):
    root = make_shapes_dataset(tmp_path_factory.mktemp("int8"), n_per_class=12, size=64, seed=5)
    return root, [str(coffee_jpeg), *sorted(str(p) for p in root.rglob("*.png"))]


def test_int8_embeddings_agree_with_fp32(images, tmp_path):
    _, files = images
    a = Extractor(cache_dir=tmp_path, progress=False)(files)
    b = Extractor(cache_dir=tmp_path, progress=False, precision="int8")(files)
    cos = (a.X * b.X).sum(1) / (np.linalg.norm(a.X, axis=1) * np.linalg.norm(b.X, axis=1))
    assert cos.mean() >= 0.98 and cos.min() >= 0.95, (cos.mean(), cos.min())
    assert b.n_computed == len(files)  # nothing of fp32's was reused


def test_int8_and_fp32_never_share_a_cache_entry(images, tmp_path):
    _, files = images
    fp, q = Extractor(cache_dir=tmp_path, progress=False), Extractor(cache_dir=tmp_path, progress=False,
                                                                    precision="int8")
    assert fp.id != q.id and fp.weights_id != q.weights_id and fp.cache.dir != q.cache.dir
    fp(files[:5])
    assert q(files[:5]).n_cached == 0 and q(files[:5]).n_cached == 5


def test_a_model_trained_int8_predicts_explains_and_exports_in_int8(images, tmp_path):
    import onnxruntime as ort

    from frugalvision.data.decode import decode_for_input
    from frugalvision.export import export_onnx_model

    root, _ = images
    model = fv.train(root, out=tmp_path / "run", precision="int8", progress=False)
    again = fv.load_model(tmp_path / "run")
    assert again.info.backbone.precision == "int8" and ":int8:" in again.info.backbone.weights_id
    files = sorted(str(p) for p in root.rglob("*.png"))[:4]
    table = fv.predict(again, files, progress=False)
    cam = fv.explain(again, files[0], cls="top2")
    assert cam.shape == (2, 7, 7)
    onnx = export_onnx_model(again, tmp_path / "m.onnx")
    pre = again.preprocessing
    x = np.stack([decode_for_input(f, pre["input_size"], pre["crop_pct"], pre["interpolation"]).array for f in files])
    probs, decision, runner = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(
        ["probabilities", "decision", "runner_up"], {"images": x})
    # The graph's own decision (unknown included) and most probable class are predict's, image by image.
    assert ["unknown" if i < 0 else model.classes[i] for i in decision] == list(table["label"])
    assert [model.classes[i] for i in probs.argmax(1)] == list(table["most_probable"])
    assert [model.classes[i] for i in runner] == list(table["runner_up"])
    np.testing.assert_allclose(probs.max(1), table["most_probable_probability"], atol=2e-3)


def test_auto_keeps_fp32_when_int8_drifts(images, tmp_path, monkeypatch):
    import frugalvision.training as training

    root, _ = images
    ok = fv.train(root, precision="auto", progress=False, cache_dir=tmp_path)
    assert ok.training_["precision_check"]["chosen"] == "int8", ok.training_["precision_check"]
    assert ok.info.backbone.precision == "int8" and ok.training_["precision_check"]["int8"]["accuracy"] is not None
    real = training.embed_dataset

    def drifted(data, ex, **kw):  # planted drift: the int8 embeddings no longer belong to their images
        td = real(data, ex, **kw)
        if ex.precision == "int8":
            td.X = td.X[np.random.default_rng(0).permutation(len(td.X))]
        return td

    monkeypatch.setattr(training, "embed_dataset", drifted)
    kept = fv.train(root, precision="auto", goals=["accuracy>=0.5"], progress=False, cache_dir=tmp_path)
    check = kept.training_["precision_check"]
    # The int8 model is compared with the fp32 model on the same validation images, and the fp32 one is kept with
    # its goals (the old fallback re-trained and dropped them).
    assert check["chosen"] == "fp32" and "lost" in check["reason"] and kept.info.backbone.precision == "fp32"
    assert check["fp32"]["accuracy"] - check["int8"]["accuracy"] > 0.005 and check["n_validation"] > 0
    assert kept.info.training["goals"] == ["accuracy>=0.5"]


def test_int8_is_refused_where_no_graph_ships(images):
    root, _ = images
    from frugalvision.exceptions import DataError

    with pytest.raises(DataError, match="No int8 graph"):
        Extractor("efficientnet_lite1", precision="int8", progress=False).engine
