"""Image quality, measured so that one property does not masquerade as another.

* **Exposure** uses the grey-level percentiles, not only the mean: an under-exposed photo has dark
  *highlights* (its 99th percentile is low), while a product shot on black has a dark mean but bright
  highlights. ``too_dark`` needs the highlights to be dark both in absolute terms and relative to the
  data set's own median; ``too_bright`` mirrors it with the shadows (1st percentile). A mean below
  :data:`DARK_FLOOR` is too dark whatever the data set.
* **Blur** is ``var(Laplacian) / var(image)``: scaling the intensities (a dark copy of a sharp image)
  leaves it unchanged, so a dark image is never called blurry for being dark. An image is blurry when
  this ratio is far below the data set's median. Near-constant images (no contrast) are reported as
  such and are not judged for blur.
* A file that decodes for the embedding but fails this scan is reported (``quality scan failed: why``)
  instead of silently skipping the checks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["quality_metrics", "scan", "quality_flags", "DARK_FLOOR", "BRIGHT_CEILING"]

#: Mean grey level below which an image is too dark in any data set (and above which too bright).
DARK_FLOOR, BRIGHT_CEILING = 6.0, 250.0
#: Highlights (99th percentile) darker than this may be too dark; shadows (1st pct) brighter may be too bright.
DARK_HIGHLIGHTS, BRIGHT_SHADOWS = 70.0, 190.0
CONSTANT_STD, EXTREME_ASPECT = 4.0, 4.0


def quality_metrics(arr: np.ndarray) -> dict:
    """Exposure, contrast and sharpness of an RGB uint8 image.

    ``brightness`` mean grey level, ``highlights``/``shadows`` 99th/1st percentile, ``contrast`` std,
    ``sharpness`` variance of the Laplacian divided by the variance of the image (intensity-scale free).
    """
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
    scale = 256 / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float64)
    var = float(g.var())
    lap = float(cv2.Laplacian(g, cv2.CV_64F).var())
    lo, hi = np.percentile(g, [1, 99])
    return {"brightness": float(g.mean()), "highlights": float(hi), "shadows": float(lo), "contrast": float(np.sqrt(var)),
            "sharpness": lap / var if var > 1e-6 else 0.0}


def _scan_one(path: str) -> dict:
    from ..data.decode import load_rgb_array, open_image
    from .duplicates import crop_thumbnails, match_pixels

    try:
        arr = load_rgb_array(path, min_side=256)
        with open_image(path) as im:
            w, h = im.size
        pixels = match_pixels(arr)
        return {"width": w, "height": h, **quality_metrics(arr), "pixels": pixels, "thumbs": crop_thumbnails(pixels),
                "scan_error": ""}
    except Exception as exc:  # reported as a finding, never swallowed
        return {"scan_error": f"{type(exc).__name__}: {exc}"[:200]}


#: From this many files on, the scan runs in worker processes: a small image's scan is mostly Python between
#: short decoder and OpenCV calls, so threads share one core through the GIL.
PROCESS_FROM = 2000
_CHUNK = 256


def _scan_many(paths: list) -> list[dict]:
    return [_scan_one(p) for p in paths]


def scan(paths, workers: int = 4, progress: bool = False) -> list[dict]:
    """Size, quality metrics, and the grey pixels and crop thumbnails that near-duplicate matching uses
    (:mod:`.duplicates`), per file, in order; failures carry ``scan_error``.

    Many files: in worker processes, one per core (:mod:`frugalvision._processes`); fewer: ``workers`` threads.
    """
    from tqdm.auto import tqdm

    from .._processes import cores, process_map

    paths = list(paths)
    out: list[dict] = []
    with tqdm(total=len(paths), desc="Quality scan", unit="img", disable=not progress or len(paths) < 500,
              dynamic_ncols=True) as bar:
        if len(paths) >= PROCESS_FROM and cores() > 1:
            chunks = ((paths[s:s + _CHUNK],) for s in range(0, len(paths), _CHUNK))
            for res in process_map(_scan_many, chunks):
                out += res
                bar.update(len(res))
            return out
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(_scan_one, paths):
                out.append(r)
                bar.update(1)
    return out


def _robust(v: pd.Series) -> tuple[float, float]:
    med = float(np.nanmedian(v))
    return med, float(np.nanmedian(np.abs(v - med))) * 1.4826 + 1e-9


def quality_flags(q: pd.DataFrame, *, blur_ratio: float = 0.1) -> dict[int, list[tuple[str, str, float]]]:
    """``{row: [(issue, reason, severity)]}`` for the rows of ``q`` (columns from :func:`quality_metrics`).

    Severity is in [0, 1] (1 = worst), so grids can be sorted by it.
    """
    out: dict[int, list[tuple[str, str, float]]] = {}
    good = q[q.get("scan_error", pd.Series("", index=q.index)).fillna("") == ""].dropna(subset=["brightness"])
    if good.empty:
        return out
    hi_med = float(np.nanmedian(good["highlights"]))
    lo_med = float(np.nanmedian(good["shadows"]))
    b_med = float(np.nanmedian(good["brightness"]))
    s_med = float(np.nanmedian(good.loc[good["contrast"] >= CONSTANT_STD, "sharpness"])) if (
        good["contrast"] >= CONSTANT_STD).any() else 0.0
    sides = np.minimum(good["width"], good["height"])
    med_side = float(np.nanmedian(sides))
    cols = ["brightness", "highlights", "shadows", "contrast", "sharpness", "width", "height"]
    for i, r in zip(good.index, good[cols].to_dict("records")):  # iterrows builds a Series a row: 9 s at 50k
        f = []
        b, hi, lo = r["brightness"], r["highlights"], r["shadows"]
        if b < DARK_FLOOR or (hi < DARK_HIGHLIGHTS and hi < 0.4 * hi_med):
            f.append(("too_dark", f"too dark (mean brightness {b:.1f}/255, highlights {hi:.0f} vs data median "
                                  f"{hi_med:.0f}; data median brightness {b_med:.0f})", 1 - hi / max(hi_med, 1)))
        elif b > BRIGHT_CEILING or (lo > BRIGHT_SHADOWS and 255 - lo < 0.4 * (255 - lo_med)):
            f.append(("too_bright", f"too bright (mean brightness {b:.1f}/255, shadows {lo:.0f} vs data median "
                                    f"{lo_med:.0f})", 1 - (255 - lo) / max(255 - lo_med, 1)))
        if r["contrast"] < CONSTANT_STD:
            f.append(("low_information", f"nearly constant image (contrast {r['contrast']:.1f})", 1.0))
        elif s_med > 0 and r["sharpness"] < blur_ratio * s_med:
            f.append(("blurry", f"blurry (edge energy {r['sharpness']:.3f} vs data median {s_med:.3f}, "
                                f"independent of brightness)", 1 - r["sharpness"] / (blur_ratio * s_med)))
        side = min(r["width"], r["height"])
        if side < max(16, 0.25 * med_side):
            f.append(("tiny", f"tiny ({int(r['width'])}x{int(r['height'])} vs median side {med_side:.0f})",
                      1 - side / max(16, 0.25 * med_side)))
        aspect = max(r["width"], r["height"]) / max(side, 1)
        if aspect > EXTREME_ASPECT:
            f.append(("odd_aspect", f"extreme aspect ratio {int(r['width'])}x{int(r['height'])}",
                      min(1.0, aspect / 20)))
        if f:
            out[i] = [(k, why, float(np.clip(s, 0, 1))) for k, why, s in f]
    return out
