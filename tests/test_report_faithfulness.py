"""The faithfulness curves share the full, grey and blurred images between orders: fewer passes, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from frugalvision.explain.faithfulness import _cell_masks, deletion_insertion


def _reference(prob_fn, images, maps, class_idx, n_steps, seed=0):
    """The straightforward version: every step of every curve evaluated on its own."""
    rng = np.random.default_rng(seed)
    n, H, W, _ = images.shape
    h, w = maps.shape[-2:]
    out = {k: [] for k in ("deletion", "insertion", "deletion_random", "insertion_random")}
    for i in range(n):
        img = images[i]
        grey = np.broadcast_to(img.reshape(-1, 3).mean(axis=0).astype(np.uint8), img.shape)
        blur = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=max(H // 16, 2))))
        for suffix, order in (("", np.argsort(-maps[i].ravel(), kind="stable")), ("_random", rng.permutation(h * w))):
            masks = _cell_masks(order, h, w, H, W, n_steps)[..., None]
            out["deletion" + suffix].append(prob_fn(np.where(masks, grey, img).astype(np.uint8))[:, class_idx[i]])
            out["insertion" + suffix].append(prob_fn(np.where(masks, img, blur).astype(np.uint8))[:, class_idx[i]])
    x = np.linspace(0, 1, n_steps + 1)
    return {f"{k}_auc": np.trapezoid(np.asarray(v), x, axis=1) for k, v in out.items()}


@pytest.mark.parametrize("n_steps", [3, 5, 8])
def test_shared_passes_give_the_same_curves_with_fewer_forward_passes(n_steps):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    maps = rng.normal(size=(5, 6, 6))
    W = rng.normal(size=(48 * 48 * 3 // 64, 3))

    def prob_fn(a):
        z = (a.reshape(len(a), -1, 64).mean(axis=2) / 255) @ W
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    calls = []
    got = deletion_insertion(lambda a: (calls.append(len(a)), prob_fn(a))[1], images, maps, [0, 1, 2, 0, 1],
                             n_steps=n_steps)
    want = _reference(prob_fn, images, maps, [0, 1, 2, 0, 1], n_steps)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-9)
    assert sum(calls) == 5 * (3 + 4 * (n_steps - 1)) < 5 * 4 * (n_steps + 1)
