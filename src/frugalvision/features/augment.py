"""Augmented views as cached embeddings: view k of an image is always the same picture.

Parameters of view k are drawn from a generator seeded by (image content hash, policy, k),
so a view is reproducible, cacheable like the clean image, and independent of thread
scheduling. The operations, in OpenCV + numpy on the decoded uint8 array (no torch): random
resized crop (scale/"homothety"), horizontal flip, rotation, colour jitter. They redo the
torchvision-on-PIL ones this module used before with the same parameters: on 108 views (3 photos,
3 drawings, 3 policies) the crop boxes and sizes were identical and pixels differed by 1.9 grey
levels on average (OpenCV rounds where PIL truncates), at 2.0 instead of 4.9 ms CPU per view
(decode included); ``tests/test_heads_no_torch.py`` compares them where torchvision is installed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..data.decode import DEFAULT_MAX_PIXELS, DecodedInput, load_rgb_array, to_input
from ..data.resize import _cv2
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


def _rotate(img: np.ndarray, angle: float, fill) -> np.ndarray:
    """Counter-clockwise rotation about the centre, same size, bilinear, corners filled with ``fill``.

    PIL (what torchvision used) rotates about (w/2, h/2) with pixel centres at +0.5, i.e. about
    ((w-1)/2, (h-1)/2) in OpenCV's integer pixel-centre coordinates.
    """
    if angle == 0:
        return img
    cv2 = _cv2()
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=fill)


def _jitter(img: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Brightness, contrast, then saturation, as PIL's ImageEnhance (torchvision's PIL path) defines them:
    blend with black, with the mean grey level, with the image's own greyscale; uint8 after each step
    (rounded; PIL truncates, which made its pictures ~0.4 grey level darker per step)."""
    cv2 = _cv2()
    img = cv2.convertScaleAbs(img, alpha=brightness)  # factor > 0, so |x| is x
    mean = int(cv2.mean(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))[0] + 0.5)
    img = cv2.addWeighted(img, contrast, img, 0.0, (1 - contrast) * mean)  # saturates to 0..255
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(img, saturation, grey, 1 - saturation, 0.0)


def _augmented(path, policy: str, k: int, size: int, crop_pct: float, interpolation: str,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedInput:
    try:
        seed = int(hashlib.blake2b(f"{content_hash(path)}:{policy}:{k}".encode(), digest_size=8).hexdigest(), 16)
        img = load_rgb_array(path, max_pixels=max_pixels, min_side=int(round(size / max(crop_pct, 1e-3))))
        pr = _params(POLICIES[policy], seed, img.shape[1], img.shape[0])
        img = img[pr["top"]:pr["top"] + pr["height"], pr["left"]:pr["left"] + pr["width"]]
        if pr["flip"]:
            img = img[:, ::-1]
        img = np.ascontiguousarray(img)  # OpenCV wants contiguous rows
        fill = tuple(float(int(v)) for v in _cv2().mean(img)[:3])  # the crop's mean colour, as before
        img = _jitter(_rotate(img, pr["angle"], fill), pr["brightness"], pr["contrast"], pr["saturation"])
        arr, box = to_input(img, size, crop_pct, interpolation)
        return DecodedInput(arr, box, (img.shape[1], img.shape[0]))
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
