"""The exported graph gives predict's answer in any client: the Python example (examples/onnx_client.py) and the
Node example (examples/node/), on 20 1080p JPEGs and 20 small PNGs in every image mode the decoder accepts."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import frugalvision as fv
from frugalvision.cli.main import main
from frugalvision.data.decode import load_rgb_array, to_input

from conftest import SHAPES, draw_shape

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "examples" / "node"


def _client_module():
    spec = importlib.util.spec_from_file_location("onnx_client", ROOT / "examples" / "onnx_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _photo(i: int) -> np.ndarray:
    """Photo-like content: scikit-image's sample photos (none of the model's classes: 'unknown' answers)."""
    from skimage import data

    pick = [data.coffee, data.astronaut, data.chelsea, data.rocket, data.hubble_deep_field][i % 5]
    return pick()


def make_images(root: Path, seed: int = 7) -> tuple[list[str], list[str]]:
    """20 1920x1080 JPEGs (shapes and photos, upscaled with noise; some with EXIF orientation, some 4:4:4, one
    grayscale), 20 small PNGs in every mode PNG holds, 2 small TIFFs (32-bit integer, float). Returns the three
    lists."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    jpegs, pngs = [], []
    for i in range(20):
        if i % 4 == 3:
            small = _photo(i)
        else:
            small = np.asarray(draw_shape(SHAPES[i % 3], rng, 48))  # the training images' look
        side = int(rng.integers(1000, 1081))  # the content's side inside the frame
        content = np.asarray(Image.fromarray(small).resize((side, side), Image.BICUBIC), dtype=np.float32)
        frame = np.full((1080, 1920, 3), content.mean(), np.float32)
        top, left = (1080 - side) // 2, (1920 - side) // 2
        frame[top:top + side, left:left + side] = content
        if i % 4 == 3:  # sensor-like noise on the photos (the shapes stay close to the training images)
            frame += rng.normal(0, 4, frame.shape)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        img = Image.fromarray(frame)
        kw = {"quality": int(rng.integers(80, 96)), "subsampling": "4:4:4" if i % 5 == 1 else "4:2:0"}
        if i == 6:
            img = img.convert("L")
        if i in (2, 9):  # stored sideways, EXIF says rotate: the upright image is the 1920x1080 one
            exif = Image.Exif()
            exif[0x0112] = 6 if i == 2 else 8
            img = img.transpose(Image.Transpose.ROTATE_90 if i == 2 else Image.Transpose.ROTATE_270)
            kw["exif"] = exif.tobytes()
        p = root / f"big_{i:02d}.jpg"
        img.save(p, **kw)
        jpegs.append(str(p))
    modes = ["RGB", "L", "LA", "P", "P_transparent", "RGBA", "I;16", "P_16_colours", "1", "RGB_small"]
    for i in range(20):
        mode = modes[i % len(modes)]
        size = int(rng.integers(40, 57)) if mode != "RGB_small" else 20
        img = draw_shape(SHAPES[i % 3], rng, size) if i % 7 != 5 else Image.fromarray(_photo(i)).resize((size, size))
        if mode in ("RGB", "RGB_small"):
            pass
        elif mode == "L":
            img = img.convert("L")
        elif mode == "LA":
            img = img.convert("LA")
            img.putalpha(Image.fromarray(rng.integers(120, 256, (size, size), dtype=np.uint8)))
        elif mode == "P":
            img = img.quantize(64)
        elif mode == "P_transparent":
            img = img.quantize(64)
            img.info["transparency"] = 0
        elif mode == "RGBA":
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)))
        elif mode == "I;16":
            img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
        elif mode == "P_16_colours":  # a 4-bit palette
            img = img.quantize(16)
        elif mode == "1":
            img = img.convert("1")
        p = root / f"small_{i:02d}_{mode.replace(';', '')}.png"
        img.save(p, transparency=0) if mode == "P_transparent" else img.save(p)
        pngs.append(str(p))
    # Modes PNG cannot hold (32-bit integer, float) come in TIFFs: two more small files, Python only.
    extra = []
    for i, (mode, scale) in enumerate((("I", 200), ("F", 1 / 255))):
        a = np.asarray(draw_shape(SHAPES[i], rng, 64).convert("L"), np.float64) * scale
        p = root / f"small_{mode}.tif"
        Image.fromarray(a.astype(np.int32 if mode == "I" else np.float32), mode).save(p)
        extra.append(str(p))
    return jpegs, pngs, extra


@pytest.fixture(scope="module")
def open_world_run(tmp_path_factory):
    """A model that can answer "none of these" (enough images for a reject threshold) and has an operating point."""
    from conftest import make_shapes_dataset

    tmp = tmp_path_factory.mktemp("clients_run")
    data = make_shapes_dataset(tmp / "data", n_per_class=60, size=48, seed=21)
    model = fv.train(data, out=tmp / "run", targets=["circle:recall>=0.97"], progress=False)
    assert model.info.reject.threshold is not None and model.info.operating_point is not None
    return model, tmp / "run"


@pytest.fixture(scope="module")
def exported(open_world_run, tmp_path_factory):
    model, run = open_world_run
    tmp = tmp_path_factory.mktemp("clients")
    out = tmp / "model.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    jpegs, pngs, extra = make_images(tmp / "images")
    files = jpegs + pngs + extra
    table = fv.predict(fv.load_model(run), files, progress=False).set_index("path").loc[files]
    return model, out, files, table


def test_the_graph_resizes_as_predict_does(exported):
    """The in-graph crop and resize gives predict's pixels exactly (to_input), at any size: no rounding ties."""
    import onnx

    model, out, files, _ = exported
    m = onnx.load(str(out))
    m.graph.output.append(onnx.helper.make_tensor_value_info("fv_net_images", onnx.TensorProto.UINT8, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    pre = model.preprocessing
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1080, 0:1920]
    smooth = (127.5 + 127.5 * np.sin(xx[..., None] / np.array([7.0, 13.0, 29.0]) + yy[..., None] / 11.0))
    for h, w in [(1080, 1920), (270, 480), (300, 201), (449, 1000), (448, 449), (37, 5), (1, 1), (224, 224)]:
        for x in (rng.integers(0, 256, (h, w, 3), dtype=np.uint8), smooth[:h, :w].astype(np.uint8)):
            expected, _ = to_input(x, pre["input_size"], pre["crop_pct"], pre["interpolation"])
            got = sess.run(["fv_net_images"], {"images": x[None]})[0][0]
            np.testing.assert_array_equal(got, expected, err_msg=f"{h}x{w}")


def test_the_python_example_gives_predicts_answers(exported, capsys):
    model, out, files, table = exported
    client = _client_module().Client(str(out))
    got = [client.classify(f) for f in files]
    labels = [g["label"] for g in got]
    assert labels == list(table["label"])  # unknown included
    assert "unknown" in labels and len(set(labels) - {"unknown"}) >= 2  # the test covers both kinds of answer
    assert [g["runner_up"] for g in got] == list(table["runner_up"])
    probs = np.stack([g["probabilities"] for g in got])
    top = probs.max(1)
    diff = np.abs(top - table["most_probable_probability"].to_numpy())
    # The none-of-these score (not saturated like these easy shapes' probabilities) agrees as closely.
    ood_rel = np.abs(np.array([g["ood_score"] for g in got]) / table["ood_score"].to_numpy() - 1)
    assert ood_rel.max() < 1e-2
    with capsys.disabled():  # the measured difference, stated in the README
        print(f"\nmax |p(example) - p(predict)| over {len(files)} images: {diff.max():.2e} (1080p JPEGs "
              f"{diff[:20].max():.2e}, small PNGs and TIFFs {diff[20:].max():.2e}); labels: "
              f"{ {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))} }; max relative "
              f"ood_score difference {ood_rel.max():.1e}")
    assert diff.max() < 0.01
    np.testing.assert_allclose([g["runner_up_probability"] for g in got], table["runner_up_probability"], atol=0.01)
    decided = [g for g in got if g["label"] != "unknown"]
    assert decided and all(g["map"].shape == (7, 7) for g in decided)
    assert all(g["map"] is None for g in got if g["label"] == "unknown")
    # The command line prints one line per image, with its map.
    assert _client_module().main([str(out), files[0], files[-1]]) == 0
    printed = capsys.readouterr().out
    assert files[0] in printed and files[-1] in printed


def test_the_fixed_size_graph_gives_the_same_answers(exported, tmp_path, open_world_run):
    """--fixed-input gives a static graph (constant crop and weights) with the answers of the free-size one."""
    model, out, files, table = exported
    _, run = open_world_run
    jpegs = files[:6]
    decoded = np.stack([load_rgb_array(f, min_side=224) for f in jpegs])  # predict's decode: 1/4 scale, upright
    assert decoded.shape[1:] == (270, 480, 3)
    free = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    fixed = tmp_path / "fixed.onnx"
    assert main(["export", str(run), "--out", str(fixed), "--fixed-input", "480x270"]) == 0
    fs = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    assert fs.get_inputs()[0].shape[1:] == [270, 480, 3]
    names = ["probabilities", "decision", "runner_up"]
    for a, b in zip(free.run(names, {"images": decoded}), fs.run(names, {"images": decoded})):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert main(["export", str(run), "--out", str(tmp_path / "x.onnx"), "--fixed-input", "19x"]) != 0


def _node_skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        return f"no node_modules in {NODE_DIR}: run `npm ci` there (ONNXRUNTIME_NODE_INSTALL=skip offline)"
    return None


@pytest.mark.skipif(_node_skip_reason() is not None, reason=str(_node_skip_reason()))
def test_the_node_example_gives_predicts_labels(exported):
    model, out, files, table = exported
    files = files[:40]  # the JPEGs and PNGs (the example decodes those two formats)
    table = table.iloc[:40]
    proc = subprocess.run(["node", str(NODE_DIR / "client.js"), "--json", str(out), *files], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [g["path"] for g in got] == files
    assert [g["label"] for g in got] == list(table["label"])
    assert [g["runner_up"] for g in got] == list(table["runner_up"])
    diff = np.abs(np.array([g["most_probable_probability"] for g in got])
                  - table["most_probable_probability"].to_numpy())
    print(f"\nNode example: max |p - p(predict)| = {diff.max():.3f} (1080p JPEGs {diff[:20].max():.3f}, "
          f"small PNGs {diff[20:].max():.3f})")
    assert all(len(g["map"]) == 7 for g in got if g["label"] != "unknown")
