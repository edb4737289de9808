"""Benchmark data, generated from real photos available offline (never from ../shared at test time)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_IDX = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def fashion4(shared: Path) -> Path:
    """The 2,000-image fashion4 set (train 1,600 / test 400) from ../shared/data."""
    p = shared / "data" / "fashion4"
    if not p.exists():
        raise SystemExit(f"{p} not found: the benchmark needs ../shared/data/fashion4 (see shared/README.md).")
    return p


def _idx(name: str) -> np.ndarray:
    for cand in (FASHION_IDX / name, FASHION_IDX / f"{name}.gz"):
        if cand.exists():
            raw = gzip.open(cand).read() if cand.suffix == ".gz" else cand.read_bytes()
            ndim = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise SystemExit(f"Fashion-MNIST IDX files not found under {FASHION_IDX}: apt-get install dataset-fashion-mnist")


def fashion_pngs(root: Path, n: int) -> list[tuple[str, str]]:
    """``n`` distinct Fashion-MNIST training images as PNG files (all 10 classes); returns (path, label)."""
    images, labels = _idx("train-images-idx3-ubyte"), _idx("train-labels-idx1-ubyte")
    out = []
    for i in range(n):
        label = FASHION_NAMES[int(labels[i])]
        p = root / label / f"{i:05d}.png"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(p)
        out.append((str(p), label))
    return out


def fashion4_t10k(root: Path) -> Path:
    """All Fashion-MNIST *test* images of fashion4's 4 classes (4,000), named like fashion4's (t10k-<index>).

    fashion4's own 400 test images are among them and its training images come from the training file,
    so none of these was trained on: a 10x larger test set for the same task.
    """
    images, labels = _idx("t10k-images-idx3-ubyte"), _idx("t10k-labels-idx1-ubyte")
    for i, lab in enumerate(labels):
        name = FASHION_NAMES[int(lab)]
        if name in ("t-shirt", "shirt", "sandal", "bag"):
            p = root / name / f"t10k-{i:05d}.png"
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).save(p)
    return root


def photos_1080p(root: Path, n: int, quality: int = 85, seed: int = 0) -> list[str]:
    """``n`` distinct 1920x1080 JPEGs from scikit-image's real photos (random crop, flip, colour shift)."""
    from skimage import data

    sources = [data.coffee(), data.chelsea(), data.astronaut(), data.rocket()]
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"photo_{i:05d}.jpg"
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        # Draw every random number even for files made by an earlier run, so photo i is always the same.
        ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        shift, flip = rng.integers(-20, 21, size=3), rng.random() < 0.5
        if not p.exists():
            img = Image.fromarray(src[y:y + ch, x:x + cw]).resize((1920, 1080), Image.Resampling.BICUBIC)
            arr = np.asarray(img).astype(np.int16) + shift
            if flip:
                arr = arr[:, ::-1]
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(p, quality=quality)
        out.append(str(p))
    return out


def cpu_info() -> dict:
    return {"cpus": os.cpu_count(), "model": _cpu_model()}


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
