"""The faithfulness curves share the full, grey and blurred images between orders: fewer passes, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from frugalvision.explanation.faithfulness import _cell_masks, deletion_insertion


def _toy_model(W, pool: int):
    """Softmax over ``W`` of the image's means over runs of ``pool`` values: cheap, and sensitive to every region."""

    def prob_fn(a):
        z = (a.reshape(len(a), -1, pool).mean(axis=2) / 255) @ W
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return prob_fn


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
    prob_fn = _toy_model(rng.normal(size=(48 * 48 * 3 // 64, 3)), 64)

    calls = []
    got = deletion_insertion(lambda a: (calls.append(len(a)), prob_fn(a))[1], images, maps, [0, 1, 2, 0, 1],
                             n_steps=n_steps)
    want = _reference(prob_fn, images, maps, [0, 1, 2, 0, 1], n_steps)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-9)
    assert sum(calls) == 5 * (3 + 4 * (n_steps - 1)) < 5 * 4 * (n_steps + 1)


def test_a_known_full_image_probability_saves_a_pass_and_changes_nothing():
    from frugalvision.explanation.faithfulness import passes_per_image

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    maps = rng.normal(size=(6, 4, 4))
    prob_fn = _toy_model(rng.normal(size=(32 * 32 * 3 // 16, 3)), 16)

    cls = [0, 1, 2, 0, 1, 2]
    full = prob_fn(images)[np.arange(6), cls]
    calls = []
    a = deletion_insertion(prob_fn, images, maps, cls, n_steps=3, batch_images=4)
    b = deletion_insertion(lambda x: (calls.append(len(x)), prob_fn(x))[1], images, maps, cls, n_steps=3,
                           batch_images=4, full_probs=full)
    for k in ("deletion_auc", "insertion_auc", "deletion_random_auc", "insertion_random_auc", "deletion_curves"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)
    assert sum(calls) == b["passes"] == 6 * passes_per_image(3) == 6 * 10 and a["passes"] == 6 * 11
    assert len(calls) == 2  # 4 images' copies in one call, then the other 2: batched, not one call per image
    assert b["deletion_curves"].shape == (6, 4) and (b["deletion_curves"][:, 0] == full).all()


def test_the_check_is_computed_once_per_model_and_images(trained, tmp_path, monkeypatch):
    """A second report of the same model on the same images reuses the check kept in the run folder; a changed
    image makes it compute again."""
    import json
    import os

    import frugalvision as fv
    import frugalvision.reporting.sections as sections

    model, run = trained
    model = fv.load_model(run)
    (run / sections.FAITHFULNESS_FILE).unlink(missing_ok=True)
    calls = []
    real = sections._faithfulness
    monkeypatch.setattr(sections, "_faithfulness", lambda *a, **k: calls.append(1) or real(*a, **k))
    ev = fv.evaluate(model, progress=False, n_boot=50)
    first = sections.faithfulness_once(model, ev, 30, "auto", None)
    again = sections.faithfulness_once(model, ev, 30, "auto", None)
    assert len(calls) == 1 and again.pop("cached") is True
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    path = ev.predictions["path"].iloc[0]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the image changed: its identity did
    sections.faithfulness_once(model, ev, 30, "auto", None)
    assert len(calls) == 2
