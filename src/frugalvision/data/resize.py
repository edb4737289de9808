"""The resize to the network's size, in exact integer arithmetic, shared by ``predict`` and the exported graph.

OpenCV's kernels (``cv2.resize``: INTER_CUBIC with a = -0.75, INTER_LINEAR, INTER_NEAREST, INTER_AREA when
shrinking more than 2x) are rebuilt here as integer weights, so that any program that sums the same integers gets
the same pixels, whatever the order of its additions: numpy here, ONNX Runtime's MatMul in the exported graph
(:mod:`frugalvision.export`), another runtime. A float resize cannot promise that: OpenCV's fixed-point code and a
float32 MatMul disagreed by one grey level on ~0.004 % of pixels (rounding ties), which an int8 network turned into
decisions that differed.

How: each tap weight is computed in float32 by the same elementwise operations the graph uses (IEEE-exact, so
identical everywhere), rounded to a multiple of ``2**-WEIGHT_BITS``, and each row is made to sum to exactly one (the
remainder goes to its largest weight, the first one on ties). Rows first, then columns; between the two passes the
values are rounded to ``2**-CARRY_BITS`` of a grey level. Every partial sum is an integer below ``2**24``, so float32
holds it exactly (checked in :func:`_check_range`), given a true float32 product: a runtime that multiplies in
TF32, bfloat16 or float16 (some GPU and ARM fast-math settings) would round.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["WEIGHT_BITS", "CARRY_BITS", "CUBIC_A", "resize_matrix", "resize_square", "uses_area"]

#: Weights are integers in units of 2**-11 (OpenCV's INTER_RESIZE_COEF_BITS).
WEIGHT_BITS = 11
#: Between the passes a value keeps 4 bits below the grey level: the worst sum (bicubic's weights add up to at most
#: 1.375 in absolute value: 255 x 1.375**2 x 2**15 ~ 15.8M) then stays below 2**24.
CARRY_BITS = 4
CUBIC_A = -0.75  # OpenCV's INTER_CUBIC kernel
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_F = np.float32
_CV2 = None


def _cv2():
    """OpenCV, on one thread: parallelism comes from the extraction lanes, not from inside one image."""
    global _CV2
    if _CV2 is None:
        import cv2

        cv2.setNumThreads(1)
        _CV2 = cv2
    return _CV2


def uses_area(crop_side: int, size: int) -> bool:
    """Area averaging (antialiased) when the crop shrinks more than 2x, as ``to_input`` has always done."""
    return crop_side > 2 * size


def _kernel(d: np.ndarray, interpolation: str) -> np.ndarray:
    """Tap weights at distances ``d`` (float32), by the graph's own sequence of operations."""
    if interpolation == "bicubic":
        a = _F(CUBIC_A)
        near = ((d * (a + _F(2)) - (a + _F(3))) * d) * d + _F(1)
        far = (((d * a - _F(5) * a) * d + _F(8) * a) * d) - _F(4) * a
        return np.where(d <= _F(1), near, np.where(d < _F(2), far, _F(0)))
    return np.maximum(_F(0), _F(1) - d)  # bilinear


@lru_cache(maxsize=64)
def resize_matrix(n: int, size: int, interpolation: str, area: bool) -> np.ndarray:
    """``size x n`` integer matrix (int32, rows summing to ``2**WEIGHT_BITS``) such that ``W @ x`` resizes a
    length-``n`` signal as ``cv2.resize`` does, scaled by ``2**WEIGHT_BITS``. Read-only (cached)."""
    if interpolation not in INTERPOLATIONS:
        interpolation = "bicubic"
    one = _F(1 << WEIGHT_BITS)
    nf = _F(n)
    s = nf / _F(size)
    j = np.arange(n, dtype=_F)[None, :]
    i = np.arange(size, dtype=_F)[:, None]
    if area:  # overlap of [j, j+1] with [i s, (i+1) s], over s
        lo = i * s
        hi = lo + s
        w = np.round(np.maximum(_F(0), np.minimum(j + _F(1), hi) - np.maximum(j, lo)) / s * one)
    elif interpolation == "nearest":
        w = (np.minimum(np.floor(i * s), nf - _F(1)) == j).astype(_F) * one
    else:
        offsets = np.array([[-1, 0, 1, 2]] if interpolation == "bicubic" else [[0, 1]], dtype=_F)
        fx = (i + _F(0.5)) * s - _F(0.5)
        taps = np.floor(fx) + offsets  # size x taps
        idx = np.clip(taps, _F(0), nf - _F(1))  # edge pixels repeated
        k = np.round(_kernel(np.abs(fx - taps), interpolation) * one)  # integers: their sums are exact
        w = ((idx[:, :, None] == j[None]) * k[:, :, None]).sum(1)
    w = w.astype(np.int64)
    first_max = np.argmax(w, axis=1)
    w[np.arange(size), first_max] += (1 << WEIGHT_BITS) - w.sum(1)
    out = w.astype(np.int32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=64)
def _sparse(n: int, size: int, interpolation: str, area: bool):
    """The matrix as float32 CSR: a few taps a row, and scipy's sparse product is ~6x a numpy loop over taps."""
    from scipy.sparse import csr_matrix

    return csr_matrix(resize_matrix(n, size, interpolation, area).astype(np.float32))


@lru_cache(maxsize=64)
def _check_range(h: int, w: int, size: int, interpolation: str) -> None:
    """Every partial sum below 2**24 (float32 exact): true for these kernels; checked, not assumed."""
    area = uses_area(w, size)
    first = 255 * int(np.abs(resize_matrix(h, size, interpolation, area)).sum(1).max())
    carried = (first >> (WEIGHT_BITS - CARRY_BITS)) + 1
    if carried * int(np.abs(resize_matrix(w, size, interpolation, area)).sum(1).max()) >= 1 << 24:
        raise AssertionError(f"resize weights too large for exact float32 sums ({h}x{w} -> {size})")


def _pass(x: np.ndarray, weights, shift: int) -> np.ndarray:
    """``floor(W @ x / 2**shift + 1/2)`` over axis 0 of ``x`` (float32 n x m). Every value is an integer below
    2**24, so the float32 sums are exact in any order."""
    out = np.asarray(weights @ x, dtype=np.float32)
    out *= np.float32(2.0 ** -shift)
    out += np.float32(0.5)
    return np.floor(out, out=out)


def resize_square(patch: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """``patch`` (uint8 h x w x c, c <= 4, or h x w) resized to ``size x size``, exactly as the exported graph does
    it: rows, rounded to ``2**-CARRY_BITS``, then columns, rounded to whole grey levels and clipped."""
    cv2 = _cv2()  # its transpose: ~8x numpy's on interleaved channels
    h, w = patch.shape[:2]
    c = patch.shape[2] if patch.ndim == 3 else 1
    _check_range(h, w, size, interpolation)
    area = uses_area(w, size)
    rows = _pass(patch.reshape(h, w * c).astype(np.float32), _sparse(h, size, interpolation, area),
                 WEIGHT_BITS - CARRY_BITS)
    rows_t = cv2.transpose(rows.reshape(size, w, c) if c > 1 else rows)  # w x size (x c): columns become rows
    out = _pass(rows_t.reshape(w, size * c), _sparse(w, size, interpolation, area), WEIGHT_BITS + CARRY_BITS)
    out = np.clip(out, 0, 255, out=out).astype(np.uint8)
    return cv2.transpose(out.reshape(size, size, c) if c > 1 else out).reshape((size, size, *patch.shape[2:]))
