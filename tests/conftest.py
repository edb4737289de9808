"""Shared fixtures: generated images (no ../shared), an isolated cache, one trained model per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def _has_torch() -> bool:
    from frugalvision._optional import has_torch

    return has_torch()


#: Tests of what only the torch extra gives (fine-tuning, Grad-CAM, timm and ResNet backbones, the export path of
#: the shipped graphs); the core environment (README install) skips them, the full one runs them.
needs_torch = pytest.mark.skipif(not _has_torch(), reason="needs the torch extra: pip install -e '.[torch]'")


def draw_shape(kind: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A coloured shape on a noisy background; position, size and colours vary."""
    bg = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8) + rng.integers(0, 60, dtype=np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, size=2))
    colour = tuple(int(v) for v in rng.integers(150, 256, size=3))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def make_shapes_dataset(root: Path, n_per_class: int = 20, seed: int = 0, size: int = 96) -> Path:
    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            draw_shape(kind, rng, size).save(root / kind / f"{kind}_{i:03d}.png")
    return root


def make_split_shapes(root: Path, per_split: dict, *, size: int, rng: np.random.Generator) -> Path:
    """``root/<split>/<shape>/<shape>_NN.png``: a train/test layout of shapes, ``per_split[split]`` per class
    (``rng`` goes on drawing for the caller's planted images)."""
    for split, n in per_split.items():
        for kind in SHAPES:
            d = root / split / kind
            d.mkdir(parents=True)
            for i in range(n):
                draw_shape(kind, rng, size).save(d / f"{kind}_{i:02d}.png")
    return root


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test uses a throw-away cache; the user's ~/.cache is never touched."""
    cache = tmp_path_factory.mktemp("fvcache")
    old = os.environ.get("FRUGALVISION_CACHE")
    os.environ["FRUGALVISION_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield cache
    if old is None:
        os.environ.pop("FRUGALVISION_CACHE", None)
    else:
        os.environ["FRUGALVISION_CACHE"] = old


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray for the tests of one module (skips where ray is not installed)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=200 * 2 ** 20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shapes_dir):
    """One model trained on the shapes dataset, saved in a run folder."""
    import frugalvision as fv

    run = tmp_path_factory.mktemp("run") / "model"
    model = fv.train(shapes_dir, out=run, progress=False)
    return model, run


@pytest.fixture(scope="session")
def coffee_jpeg(tmp_path_factory) -> Path:
    from skimage import data

    p = tmp_path_factory.mktemp("photos") / "coffee.jpg"
    Image.fromarray(data.coffee()).save(p, quality=90)
    return p
