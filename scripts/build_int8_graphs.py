"""Build the int8 backbone graph(s) that ship beside the fp32 ones (ONNX Runtime static quantization, QDQ).

    python scripts/build_int8_graphs.py                 # efficientnet_lite0 -> efficientnet_lite0.int8.onnx/.json
    python scripts/build_int8_graphs.py --check         # build twice into a temporary folder, compare bytes

Reads the shipped fp32 graph ``src/frugalvision/backbones/graphs/<name>.onnx`` (made by
build_backbone_graphs.py) and writes ``<name>.int8.onnx`` plus ``<name>.int8.json`` (weights identity of
the fp32 graph + ":int8:" + the first 12 hex digits of its SHA-256, the quantization settings, the calibration set's recipe and digest, SHA-256).
Quantization is ``frugalvision.backbones.quantize.quantize_backbone`` with its default settings.

The calibration set is fixed and public, and remade here from sources anyone has:

- crops of scikit-image's sample photos (``skimage.data``; public domain / CC0 images shipped with
  scikit-image): for each photo, its full view plus random square crops (25-100 % of the short side,
  random position, random horizontal flip) resized to the input size exactly as frugalvision resizes
  (``data.decode.to_input``: OpenCV bicubic, area averaging for big reductions); grey photos are
  replicated to RGB. ``rocket``, ``coffee`` and ``camera`` are held out (bench/int8.py evaluates on them).
- Fashion-MNIST (Debian package ``dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist, MIT
  licence): the first images of the *training* split (28 x 28 grey, upscaled like any small image).
  The test split (t10k) is never used for calibration.

A seeded ``numpy.random.default_rng`` drives every choice, so the set (and the graph) is reproducible;
``calibration_digest`` is the SHA-256 of the calibration array.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "src" / "frugalvision" / "backbones" / "graphs"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: skimage.data photos used for calibration (colour and grey natural/scientific images)
CALIB_PHOTOS = ("astronaut", "chelsea", "hubble_deep_field", "immunohistochemistry", "retina",
                "stereo_motorcycle", "colorwheel", "logo", "brick", "grass", "gravel", "moon", "coins",
                "page", "text", "clock", "cell")
#: held out for evaluation (bench/int8.py)
EVAL_PHOTOS = ("rocket", "coffee", "camera")

RECIPE = {"seed": 20240601, "crops_per_photo": 11, "fashion_mnist_train": 156, "crop_scale": [0.25, 1.0]}


def _photo(name: str) -> np.ndarray:
    from skimage import data

    a = getattr(data, name)()
    if isinstance(a, tuple):  # stereo_motorcycle: (left, right, disparity)
        a = a[0]
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:  # RGBA logo: composite on white, as frugalvision decodes transparency
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = np.round(a[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a, dtype=np.uint8)


def photo_crops(names, size: int, crops: int, rng, scale=(0.25, 1.0)) -> np.ndarray:
    """Full view + ``crops`` random square crops (random flip) of each skimage photo, at ``size``."""
    from frugalvision.data.decode import to_input

    out = []
    for name in names:
        img = _photo(name)
        out.append(to_input(img, size, 1.0)[0])
        h, w = img.shape[:2]
        for _ in range(crops):
            side = max(8, int(round(min(h, w) * rng.uniform(*scale))))  # noqa: RUF046 (numpy scalar)
            t, l = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            patch = img[t:t + side, l:l + side]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            out.append(to_input(np.ascontiguousarray(patch), size, 1.0)[0])
    return np.stack(out)


def fashion_mnist(split: str = "train", n: int | None = None, size: int = 224, root: Path = FASHION_MNIST):
    """Fashion-MNIST images (first ``n`` of ``split``), resized like frugalvision resizes, as RGB uint8."""
    from frugalvision.data.decode import to_input

    prefix = "t10k" if split == "test" else "train"
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz") as fh:
        raw = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    raw, labels = raw[:n], labels[:n]
    imgs = np.stack([to_input(np.repeat(x[:, :, None], 3, axis=2), size, 1.0)[0] for x in raw])
    return imgs, labels


def calibration_set(size: int = 224, recipe: dict = RECIPE) -> tuple[np.ndarray, dict]:
    """The fixed public calibration images (uint8 N x size x size x 3) and their description."""
    rng = np.random.default_rng(recipe["seed"])
    parts = [photo_crops(CALIB_PHOTOS, size, recipe["crops_per_photo"], rng, tuple(recipe["crop_scale"]))]
    n_fm = recipe["fashion_mnist_train"]
    if n_fm:
        if not FASHION_MNIST.is_dir():
            sys.exit(f"{FASHION_MNIST} not found: apt-get install dataset-fashion-mnist")
        parts.append(fashion_mnist("train", n_fm, size)[0])
    images = np.concatenate(parts)
    order = rng.permutation(len(images))  # mix photo crops and Fashion-MNIST in every batch
    images = np.ascontiguousarray(images[order])
    desc = {
        "images": len(images),
        "skimage_photos": list(CALIB_PHOTOS),
        "skimage_photo_views": len(parts[0]),
        "skimage_held_out": list(EVAL_PHOTOS),
        "fashion_mnist": f"first {n_fm} images of the train split (Debian dataset-fashion-mnist)" if n_fm else None,
        "recipe": recipe,
        "resize": "frugalvision.data.decode.to_input (OpenCV bicubic / area)",
        "digest": hashlib.sha256(images.tobytes()).hexdigest(),
    }
    return images, desc


def build(name: str, out: Path, settings: dict | None = None) -> dict:
    from importlib.metadata import version

    from frugalvision.backbones.quantize import quantize_backbone

    fp32 = GRAPHS / f"{name}.onnx"
    info32 = json.loads((GRAPHS / f"{name}.json").read_text())
    from frugalvision.backbones.registry import get_spec

    size = get_spec(name).input_size
    images, calib = calibration_set(size)
    graph = out / f"{name}.int8.onnx"
    rec = quantize_backbone(fp32, graph, images, **(settings or {}))
    sha = rec.pop("sha256")
    info = {
        "backbone": name,
        # The graph's digest is part of its identity: a rebuilt graph (other settings) gives other embeddings, so
        # it gets its own cache entries, and a model trained on another int8 graph says so instead of drifting.
        "weights_id": f"{info32['weights_id']}:int8:{sha[:12]}",
        "sha256": sha,
        "fp32_graph": {"file": fp32.name, "sha256": info32["sha256"]},
        "input": info32.get("input"),
        "outputs": info32.get("outputs"),
        "quantization": {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", **rec},
        "calibration": calib,
        "license": info32.get("license"),
        "built_with": {"onnxruntime": version("onnxruntime"), "onnx": version("onnx"),
                       "numpy": version("numpy"), "scikit-image": version("scikit-image"),
                       "opencv": version("opencv-python-headless") if _has("opencv-python-headless")
                       else version("opencv-python")},
    }
    (out / f"{name}.int8.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _has(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GRAPHS)
    ap.add_argument("--check", action="store_true", help="build twice in a temporary folder and compare bytes")
    ap.add_argument("names", nargs="*", default=["efficientnet_lite0"])
    args = ap.parse_args()
    for name in args.names:
        if args.check:
            with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
                ia, ib = build(name, Path(a)), build(name, Path(b))
                same = (Path(a) / f"{name}.int8.onnx").read_bytes() == (Path(b) / f"{name}.int8.onnx").read_bytes()
                print(f"{name}: sha256 {ia['sha256'][:16]} / {ib['sha256'][:16]}, calibration digest "
                      f"{ia['calibration']['digest'][:16]} / {ib['calibration']['digest'][:16]}: "
                      f"{'reproducible' if same else 'NOT byte-identical'}")
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        info = build(name, args.out)
        size = (args.out / f"{name}.int8.onnx").stat().st_size / 1e6
        print(f"{name}.int8: {size:.1f} MB, {info['weights_id']}, sha256 {info['sha256'][:16]}, "
              f"{info['calibration']['images']} calibration images")


if __name__ == "__main__":
    main()
