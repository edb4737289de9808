"""Exact and near-duplicate groups that cannot chain.

A pair of images is *near* when two independent signals agree (see :func:`near_pairs`): thumbnail
correlation and perceptual hash, or embedding cosine and thumbnail correlation. One signal alone does
not do on uniform data sets (Fashion-MNIST: different sneakers have
embedding cosine 0.96 and thumbnail correlation 0.99, while a JPEG re-encoded copy of a 28-px image
can drop to 0.90).

Groups are built by **complete linkage** on the pair graph: two groups merge only if *every* member
of one is near *every* member of the other, so A~B and B~C never put A and C together unless A~C.
(The old union-find turned chains of look-alikes into one group of 97 different sneakers.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["thumbnail_vector", "near_pairs", "complete_linkage_groups"]

THUMB = 16


def thumbnail_vector(img) -> np.ndarray:
    """Zero-mean, unit-norm 16x16 grey thumbnail of a PIL image (or RGB uint8 array), from its own pixels."""
    from PIL import Image

    im = img if isinstance(img, Image.Image) else Image.fromarray(np.ascontiguousarray(img))
    g = im.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    v = np.asarray(g, np.float32).ravel()
    v = v - v.mean()
    return v / (np.linalg.norm(v) + 1e-6)


def near_pairs(X: np.ndarray, thumbs: np.ndarray, phash: np.ndarray, *, min_thumb: float = 0.99,
               max_hamming: int = 6, min_cos: float = 0.97, min_thumb_cos: float = 0.95,
               block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, score)`` (``i < j``) that two independent signals call copies of each other:

    * pixels: thumbnail correlation >= ``min_thumb`` *and* pHash distance <= ``max_hamming`` (re-encoded,
      resized copies; the embedding of a noisy texture can move a lot under JPEG, so it is not required), or
    * content: embedding cosine >= ``min_cos`` *and* thumbnail correlation >= ``min_thumb_cos`` (crops).

    ``score`` is the thumbnail correlation.
    """
    n = len(X)
    if n < 2:
        return []
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    bits = np.unpackbits(phash.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    pairs = []
    for s in range(0, n, block):
        cos = Xn[s:s + block] @ Xn.T
        tc = thumbs[s:s + block] @ thumbs.T
        for i, j in np.argwhere((tc >= min_thumb_cos) & ((tc >= min_thumb) | (cos >= min_cos))):
            gi = s + int(i)
            if gi >= j:
                continue
            if cos[i, j] >= min_cos or np.count_nonzero(bits[gi] != bits[j]) <= max_hamming:
                pairs.append((gi, int(j), float(tc[i, j])))
    return pairs


def complete_linkage_groups(n: int, pairs) -> list[list[int]]:
    """Groups of size >= 2 in which every two members form a pair (greedy, strongest pairs first)."""
    near = {(a, b) if a < b else (b, a) for a, b, *_ in pairs}
    group_of = {}
    members: dict[int, set] = {}
    for a, b, *rest in sorted(pairs, key=lambda p: -(p[2] if len(p) > 2 else 1.0)):
        ga, gb = group_of.get(a, ("s", a)), group_of.get(b, ("s", b))
        if ga == gb:
            continue
        ma = members.get(ga, {a})
        mb = members.get(gb, {b})
        if all(((x, y) if x < y else (y, x)) in near for x in ma for y in mb):
            key = ("g", min(ma | mb))
            members.pop(ga, None)
            members.pop(gb, None)
            members[key] = ma | mb
            for x in members[key]:
                group_of[x] = key
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])
