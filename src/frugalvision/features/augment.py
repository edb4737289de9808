"""Augmented views as cached embeddings: view k of an image is always the same picture.

Parameters of view k are drawn from a generator seeded by (image content hash, policy, k),
so a view is reproducible, cacheable like the clean image, and independent of thread
scheduling. The operations are torchvision's ``transforms.v2.functional`` on PIL images:
random resized crop (scale/"homothety"), horizontal flip, rotation, colour jitter.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..data.decode import DEFAULT_MAX_PIXELS, DecodedInput, load_rgb, to_input
from .cache import content_hash

__all__ = ["POLICIES", "Policy", "view_name", "augmented_decoder", "views_per_class"]


@dataclass(frozen=True)
class Policy:
    scale: tuple[float, float] = (0.6, 1.0)   # area fraction kept by the random crop
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    rotate: float = 15.0                      # degrees, uniform in [-rotate, rotate]
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


POLICIES = {
    "light": Policy(scale=(0.8, 1.0), rotate=5.0, brightness=0.1, contrast=0.1, saturation=0.1),
    "default": Policy(),
    "strong": Policy(scale=(0.4, 1.0), rotate=30.0, brightness=0.4, contrast=0.4, saturation=0.4),
}


def view_name(policy: str, k: int) -> str:
    return f"aug-{policy}-{k}"


def _params(p: Policy, seed: int, w: int, h: int) -> dict:
    rng = np.random.default_rng(seed)
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*p.scale)
        aspect = math.exp(rng.uniform(math.log(p.ratio[0]), math.log(p.ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw, ch = w, h
    return {"left": int(rng.integers(0, w - cw + 1)), "top": int(rng.integers(0, h - ch + 1)), "width": cw,
            "height": ch, "flip": bool(rng.random() < p.hflip), "angle": float(rng.uniform(-p.rotate, p.rotate)),
            "brightness": float(rng.uniform(1 - p.brightness, 1 + p.brightness)),
            "contrast": float(rng.uniform(1 - p.contrast, 1 + p.contrast)),
            "saturation": float(rng.uniform(1 - p.saturation, 1 + p.saturation))}


def _augmented(path, policy: str, k: int, size: int, crop_pct: float, interpolation: str,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedInput:
    from torchvision.transforms.v2 import functional as F

    try:
        seed = int(hashlib.blake2b(f"{content_hash(path)}:{policy}:{k}".encode(), digest_size=8).hexdigest(), 16)
        img = load_rgb(path, max_pixels=max_pixels, min_side=int(round(size / max(crop_pct, 1e-3))))
        pr = _params(POLICIES[policy], seed, *img.size)
        img = img.crop((pr["left"], pr["top"], pr["left"] + pr["width"], pr["top"] + pr["height"]))
        if pr["flip"]:
            img = F.hflip(img)
        img = F.rotate(img, pr["angle"], interpolation=F.InterpolationMode.BILINEAR, fill=[int(v) for v in
                       np.asarray(img).reshape(-1, 3).mean(axis=0)])
        img = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(img, pr["brightness"]), pr["contrast"]),
                                  pr["saturation"])
        arr, box = to_input(img, size, crop_pct, interpolation)
        return DecodedInput(arr, box, img.size)
    except Exception as exc:  # same contract as decode_for_input: never raise for one bad image
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return DecodedInput(None, error=reason)


def augmented_decoder(preprocessing: dict, policy: str, k: int, max_pixels: int = DEFAULT_MAX_PIXELS):
    """A picklable ``decoder(path)`` producing view ``k`` under ``policy`` (for the extraction engine)."""
    if policy not in POLICIES:
        raise ValueError(f"Unknown augmentation policy '{policy}'. Choose one of {', '.join(POLICIES)}.")
    return partial(_augmented, policy=policy, k=k, size=preprocessing["input_size"],
                   crop_pct=preprocessing["crop_pct"], interpolation=preprocessing["interpolation"],
                   max_pixels=max_pixels)


def views_per_class(labels, views: int, balance: bool, cap: int | None = None) -> dict:
    """Augmented views per image for each class; with ``balance``, minority classes get more
    (about as many rows per class as the largest class has with ``views``), capped at ``cap`` (4x views)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if not balance or views <= 0:
        return {c: views for c in classes}
    cap = cap or 4 * max(views, 1)
    top = counts.max() * (1 + views)
    return {c: int(min(cap, max(views, round(top / n) - 1))) for c, n in zip(classes, counts)}
