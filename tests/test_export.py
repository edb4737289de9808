"""The exported ONNX graph runs with onnxruntime alone and agrees with predict and explain."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from PIL import Image

from frugalvision.cli.main import main
from frugalvision.data.decode import decode_for_input
from frugalvision.explanation import explain_images
from frugalvision.export import read_onnx_metadata
from frugalvision.inference import probabilities as _probs


def _proba(model, X):
    return _probs(model, X)[1]



def test_exported_probabilities_and_cams_match(trained, shapes_dir, tmp_path):
    model, run = trained
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    meta = read_onnx_metadata(out)
    assert meta["classes"] == model.classes and meta["input_size"] == 224
    files = sorted(str(p) for p in shapes_dir.rglob("*.png"))[::6]
    pre = model.preprocessing
    batch = np.stack([decode_for_input(f, pre["input_size"], pre["crop_pct"], pre["interpolation"]).array
                      for f in files])
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs, cams = sess.run(["probabilities", "cams"], {"images": batch})
    expected = _proba(model, model.embed(files, progress=False).X)
    np.testing.assert_allclose(probs, expected, atol=1e-4)  # stated tolerance: 1e-4 absolute
    expl, _ = explain_images(model, files, cls="all")
    np.testing.assert_allclose(cams, np.stack([e.maps for e in expl]), atol=1e-3, rtol=1e-3)


def test_export_with_resize_inside(trained, tmp_path, coffee_jpeg):
    model, run = trained
    out = tmp_path / "m320.onnx"
    assert main(["export", str(run), "--out", str(out), "--input-size", "320"]) == 0
    img = np.asarray(Image.open(coffee_jpeg).convert("RGB").resize((320, 320)))[None]
    probs, cams = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["probabilities", "cams"],
                                                                                          {"images": img})
    assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 1e-5 and cams.shape == (1, 3, 7, 7)
    assert main(["export", str(run), "--out", str(out)]) == 1  # never overwritten silently
