"""Heat maps on images. Inputs are RGB float images in [0, 1] or uint8; outputs are RGB uint8.

A CAM covers the square the network saw, which is a crop of the original image.
:func:`to_image_coordinates` places the map back inside that crop box, at the
original image's resolution, so hot spots land on the right pixels of the photo.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["to_image_coordinates", "normalise_map", "colorize", "overlay"]


def to_image_coordinates(cam: np.ndarray, box, size) -> np.ndarray:
    """Resize a ``(h, w)`` map into the crop ``box`` (fractions l, t, r, b) of an image of ``size`` (W, H).

    Pixels outside the box (what the network never saw) are NaN.
    """
    W, H = int(size[0]), int(size[1])
    l, t, r, b = box
    x0, y0 = int(round(l * W)), int(round(t * H))
    x1, y1 = max(int(round(r * W)), x0 + 1), max(int(round(b * H)), y0 + 1)
    patch = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F").resize((x1 - x0, y1 - y0),
                                                                                   Image.Resampling.BILINEAR)
    out = np.full((H, W), np.nan, dtype=np.float32)
    out[y0:y1, x0:x1] = np.asarray(patch)[: H - y0, : W - x0]
    return out


def normalise_map(cam: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Positive evidence scaled to [0, 1] (negative evidence -> 0); NaN stays NaN."""
    pos = np.maximum(np.nan_to_num(cam, nan=0.0), 0)
    top = vmax if vmax is not None else float(pos.max())
    out = pos / top if top > 0 else pos
    out = np.clip(out, 0, 1)
    out[np.isnan(cam)] = np.nan
    return out


def colorize(heat01: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """[0, 1] map -> RGB uint8 via a matplotlib colormap (NaN -> black)."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.nan_to_num(heat01, nan=0.0))
    return (rgba[..., :3] * 255).astype(np.uint8)


def overlay(image, heat01: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Alpha-blend a [0, 1] heat map over an RGB image (uint8 or float in [0, 1]); returns RGB uint8.

    Outside the network's crop (NaN) the image is shown dimmed, without colour.
    """
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if heat01.shape != img.shape[:2]:
        raise ValueError(f"Heat map {heat01.shape} and image {img.shape[:2]} differ in size.")
    colour = colorize(heat01, cmap).astype(np.float32) / 255.0
    seen = ~np.isnan(heat01)
    out = img * 0.5
    out[seen] = (1 - alpha) * img[seen] + alpha * colour[seen]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
