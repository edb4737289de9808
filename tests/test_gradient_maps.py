"""Grad-CAM for any head on average-pooled features, in numpy: the head's own gradient, checked numerically."""

from __future__ import annotations

import numpy as np

import frugalvision as fv
from frugalvision.heads import LinearHead
from frugalvision.heads.mlp import MLPHead
from frugalvision.inference import map_support
from frugalvision.maps.cam import class_activation_maps
from frugalvision.maps.head_gradient import gradient_maps, head_gradients


def _data(seed=0, n=240, d=16):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)).astype(np.float32) + np.eye(3, d, dtype=np.float32)[y] * 2
    return X, np.array(["a", "b", "c"])[y]


def test_mlp_head_gradient_matches_finite_differences():
    X, y = _data()
    head = MLPHead(hidden=32, max_epochs=30, random_state=0).fit(X, y)
    x = X[:5].astype(np.float64)
    picks = [[0, 2]] * 5
    g = head_gradients(head, x, picks)
    eps = 1e-3
    for c in range(0, X.shape[1], 5):
        step = np.zeros_like(x)
        step[:, c] = eps
        numeric = (head.logits(x + step) - head.logits(x - step)) / (2 * eps)
        np.testing.assert_allclose(g[:, :, c], numeric[:, [0, 2]], rtol=1e-2, atol=1e-3)


def test_gradient_maps_are_cam_for_a_linear_head_and_average_to_the_linearised_logit():
    X, y = _data(1)
    rng = np.random.default_rng(2)
    fm = rng.random((4, X.shape[1], 7, 7)).astype(np.float32)
    emb = fm.mean(axis=(2, 3))
    lin = LinearHead(C=1.0).fit(X, y)
    picks = [[0, 1, 2]] * 4
    np.testing.assert_allclose(gradient_maps(fm, emb, lin, picks), class_activation_maps(fm, lin.coef_), atol=1e-4)
    mlp = MLPHead(hidden=32, max_epochs=30, random_state=0).fit(X, y)
    maps = gradient_maps(fm, emb, mlp, picks)
    g = head_gradients(mlp, emb, picks)
    np.testing.assert_allclose(maps.mean(axis=(2, 3)), np.einsum("nrc,nc->nr", g, emb), rtol=1e-4, atol=1e-4)


def test_an_mlp_model_explains_in_the_core_install(shapes_dir):
    """What failed before ("Grad-CAM maps need PyTorch"): explain of an MLP head, with numpy only."""
    model = fv.train(shapes_dir, head="mlp", progress=False)
    assert map_support(model).method == "gradient"
    path = str(sorted(shapes_dir.rglob("*.png"))[0])
    maps = fv.explain(model, path, cls="circle")
    assert maps.shape == (7, 7) and np.isfinite(maps).all() and np.abs(maps).max() > 0
