"""Heads and augmentation without torch: the frugal install.

Checks that fitting both heads and building augmented views never imports torch (in a fresh
interpreter, and with torch made unimportable), that the numpy/scipy linear solver reaches
scikit-learn's multinomial minimiser, that the hand-written MLP backward pass is the gradient, that
its AdamW step is torch's, and (where torchvision is installed) that the OpenCV augmentation gives
the pictures the torchvision one gave.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from frugalvision.heads import LinearHead, MLPHead
from frugalvision.heads import _numpy_fit

_SCRIPT = """
import sys
{block}
import numpy as np
from PIL import Image

import frugalvision as fv
from frugalvision.features.augment import augmented_decoder
from frugalvision.heads import MLPHead

rng = np.random.default_rng(0)
X = rng.normal(size=(300, 12)).astype(np.float32)
y = np.array(list("abcd"))[rng.integers(0, 4, 300)]
for head in (fv.LinearHead(), fv.LinearHead(class_weight="balanced"), MLPHead(hidden=8, max_epochs=3)):
    assert head.fit(X, y).predict(X).shape == (300,)
fv.LinearHead.fit_many([fv.LinearHead(C=c) for c in (0.01, 0.1)], X, y)
fv.LinearHead().fit(X, y == "a")  # two classes
for ext in ("png", "jpg"):
    path = sys.argv[1] + "/img." + ext
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(path)
    prep = {{"input_size": 64, "crop_pct": 0.875, "interpolation": "bicubic"}}
    for policy in ("light", "default", "strong"):
        view = augmented_decoder(prep, policy, 1)(path)
        assert view.error is None and view.array.shape == (64, 64, 3), view.error
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))
assert not loaded, loaded
print("ok")
"""

# Makes torch unimportable, as in an install without it.
_BLOCK = """
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ImportError(f"{name} is not installed (blocked by the test)")
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.mark.parametrize("torch_importable", [True, False], ids=["torch-installed", "torch-missing"])
def test_heads_and_augmentation_never_import_torch(tmp_path, torch_importable):
    script = _SCRIPT.format(block="" if torch_importable else _BLOCK)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def _problem(n_classes, n=400, d=8, seed=0, imbalanced=False):
    rng = np.random.default_rng(seed)
    p = np.geomspace(1, 6, n_classes) if imbalanced else np.ones(n_classes)
    y = rng.choice(n_classes, size=n, p=p / p.sum())
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, d) + rng.normal(size=(n_classes, d))[y] * 3 + 7
    return X, np.array(list("abcdefgh"))[y]


@pytest.mark.parametrize("n_classes,class_weight", [(4, None), (4, "balanced"), (3, "balanced")])
def test_linear_head_matches_scikit_learn_multinomial(n_classes, class_weight):
    X, y = _problem(n_classes, imbalanced=class_weight is not None)
    Xs = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=0.2, class_weight=class_weight, tol=1e-10, max_iter=10_000).fit(Xs, y)
    head = LinearHead(C=0.2, class_weight=class_weight, tol=1e-7).fit(X, y)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(Xs), atol=1e-3)  # measured <= 9e-5
    # The default tolerance stops earlier: measured 6e-4 to 1.2e-3 here (the torch solver it replaces: 8e-4).
    head = LinearHead(C=0.2, class_weight=class_weight).fit(X, y)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(Xs), atol=2.5e-3)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_numpy_solver_on_two_classes_matches_scikit_learn(class_weight):
    # scikit-learn fits 2 classes with a sigmoid: the 2-class softmax objective at C is the sigmoid one at
    # 2C (at the optimum w1 = -w0 = z/2, so ½(‖w0‖² + ‖w1‖²) = ¼‖z‖²), with the same probabilities.
    X, y = _problem(2, imbalanced=class_weight is not None)
    Xs = StandardScaler().fit_transform(X)
    y_idx = (y == "b").astype(int)
    sw = compute_sample_weight(class_weight, y) if class_weight else None
    W, b, _ = _numpy_fit.fit_softmax(Xs, y_idx, 2, C=0.1, sample_weights=[sw], tol=1e-7)
    z = Xs @ W[0].T + b[0]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = LogisticRegression(C=0.2, class_weight=class_weight, tol=1e-10, max_iter=10_000).fit(Xs, y_idx)
    np.testing.assert_allclose(p, ref.predict_proba(Xs), atol=1e-3)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_numpy_solver_with_fewer_rows_than_dimensions_matches_scikit_learn(class_weight):
    # Few labels: the solver works in the span of the rows (exact), with and without intercept (the small-data
    # path's CL2N logistic regression has none). 70 rows of 200 dimensions with a decaying spectrum and near-duplicate
    # rows; judged on the weights and on held-out rows (training rows are nearly separable, their probabilities
    # saturate and would hide an error).
    from frugalvision.small_data import _cl2n, _fit

    rng = np.random.default_rng(5)
    X, y = _problem(4, n=160, d=200, imbalanced=class_weight is not None)
    X = X * np.geomspace(1, 1e-3, 200)  # decaying spectrum
    X[60:70] = X[:10] + 1e-4 * rng.normal(size=(10, 200))  # near-duplicates
    y[60:70] = y[:10]
    tr, te = np.arange(70), np.arange(70, 160)
    y_idx = np.unique(y, return_inverse=True)[1]
    sw = compute_sample_weight(class_weight, y_idx[tr]) if class_weight else None
    scaler = StandardScaler().fit(X[tr])
    c = X[tr].mean(0)
    for rows, intercept in ((scaler.transform(X), True), (_cl2n(X, c), False)):
        span = _numpy_fit.row_span(rows[tr])
        assert span is not None and span[1].shape[1] < 200  # the reduced path is the one tested
        ref = LogisticRegression(C=10, fit_intercept=intercept, class_weight=class_weight, tol=1e-10,
                                 max_iter=10_000).fit(rows[tr], y_idx[tr])
        W, b, _ = _numpy_fit.fit_softmax(rows[tr], y_idx[tr], 4, C=10, sample_weights=[sw], tol=1e-8,
                                         fit_intercept=intercept)
        assert W.shape == (1, 4, 200) and (intercept or not b.any())
        np.testing.assert_allclose(W[0], ref.coef_, atol=2e-3 * np.abs(ref.coef_).max())
        z = rows[te] @ W[0].T + b[0]
        p = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(p / p.sum(1, keepdims=True), ref.predict_proba(rows[te]), atol=2e-3)
    # The small-data candidate (default tolerance) against scikit-learn's default: the same weights, deployed on
    # raw rows as W x - W c.
    Wd, bd = _fit("cl2n", 10, X[tr], y_idx[tr], 4, class_weight)
    ref = LogisticRegression(C=10, fit_intercept=False, class_weight=class_weight, tol=1e-10,
                             max_iter=10_000).fit(_cl2n(X[tr], c), y_idx[tr])
    np.testing.assert_allclose(Wd, ref.coef_, atol=0.02 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(bd, -Wd @ c)


def test_the_row_span_is_skipped_where_it_would_not_pay():
    X = np.random.default_rng(0).normal(size=(101, 200)).astype(np.float32)
    assert _numpy_fit.row_span(X) is None and _numpy_fit.row_span(X[:100]) is not None


def _softmax(X, W, b):
    """Probabilities of each of the G stacked problems, (G, n, K)."""
    z = np.einsum("nd,gkd->gnk", X, W) + b[:, None, :]
    e = np.exp(z - z.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def test_the_threaded_blocked_solver_equals_one_pass(monkeypatch):
    # 5,000 rows: several 512-row blocks per thread; the threads' partial sums must add up to one pass.
    X, y = _problem(5, n=5000, d=30, seed=3)
    Xs = StandardScaler().fit_transform(X)
    y_idx = np.unique(y, return_inverse=True)[1]
    sws = [None, compute_sample_weight("balanced", y)]
    solutions, early = [], []
    for workers in (1, 2, 3):
        monkeypatch.setattr(_numpy_fit, "_workers", lambda n, w=workers: w)
        solutions.append(_numpy_fit.fit_softmax(Xs, y_idx, 5, C=0.05, sample_weights=sws, tol=1e-7)[:2])
        early.append(_numpy_fit.fit_softmax(Xs, y_idx, 5, C=0.05, sample_weights=sws, max_iter=3)[:2])
    # The sums themselves: after 3 iterations the split into threads changes nothing beyond float32 rounding.
    for W, b in early[1:]:
        np.testing.assert_allclose(W, early[0][0], atol=1e-5)
        np.testing.assert_allclose(b, early[0][1], atol=1e-5)
    # Converged: that rounding steers L-BFGS a little (parameters differ by up to 1.6e-4 on an AVX2 CPU, where
    # OpenBLAS sums in another order than with AVX-512); what a user gets, the probabilities, agree.
    P = [_softmax(Xs, W, b) for W, b in solutions]
    for p in P[1:]:
        np.testing.assert_allclose(p, P[0], atol=1e-4)
    ref = LogisticRegression(C=0.05, tol=1e-10, max_iter=10_000).fit(Xs, y_idx)
    z = Xs @ solutions[0][0][0].T + solutions[0][1][0]
    np.testing.assert_allclose(np.exp(z - np.log(np.exp(z).sum(1, keepdims=True))), ref.predict_proba(Xs), atol=1e-3)


def test_mlp_backward_pass_is_the_gradient():
    # float64 central differences on a tiny stacked model (3 heads, dropout masks, class weights).
    rng = np.random.default_rng(0)
    g, hidden, d, K, n = 3, 5, 4, 3, 9
    P = {"w1": rng.normal(size=(g, hidden, d)), "b1": rng.normal(size=(g, hidden)),
         "w2": rng.normal(size=(g, K, hidden)), "b2": rng.normal(size=(g, K))}
    X, y = rng.normal(size=(n, d)), rng.integers(0, K, n)
    w = rng.uniform(0.5, 2.0, size=(g, n))
    mask = (rng.random((n, g, hidden)) < 0.7) / 0.7
    _, grads = _numpy_fit._loss_and_grads(P, X, y, w, mask)
    eps = 1e-6
    for k, a in P.items():
        num = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = _numpy_fit._loss_and_grads(P, X, y, w, mask)[0].sum()
            a[i] = old - eps
            down = _numpy_fit._loss_and_grads(P, X, y, w, mask)[0].sum()
            a[i] = old
            num[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[k], num, atol=1e-6, err_msg=k)


def test_adamw_step_is_torchs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(6, 7)).astype(np.float32)
    grads = [rng.normal(size=p0.shape).astype(np.float32) for _ in range(5)]
    t = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.AdamW([t], lr=3e-3, weight_decay=0.05)
    p, m, v, tmp = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), np.empty_like(p0)
    for step, gr in enumerate(grads, 1):
        t.grad = torch.tensor(gr)
        opt.step()
        _numpy_fit._adamw(p, gr, m, v, tmp, np.float32(3e-3), np.float32(0.05), step)
    np.testing.assert_allclose(p, t.detach().numpy(), rtol=0, atol=1e-6)


def test_mlp_head_class_weights_and_stacking():
    X, y = _problem(3, n=600, d=10, seed=5, imbalanced=True)
    heads = MLPHead.fit_many([MLPHead(hidden=16, lr=1e-2, class_weight=cw, max_epochs=40)
                              for cw in (None, "balanced")], X, y)
    minority = y == "a"
    recall = [(h.predict(X)[minority] == "a").mean() for h in heads]
    assert recall[1] >= recall[0]  # balancing does what it says on the rarest class
    assert all((h.predict(X) == y).mean() > 0.8 for h in heads)


def test_opencv_views_are_the_torchvision_views(tmp_path):
    """Same crop box and picture size as the torchvision-on-PIL implementation, pixels within rounding:
    PIL truncates to uint8 after each of its 4 steps (about 0.5 grey level darker each), OpenCV rounds."""
    pytest.importorskip("torchvision")
    import hashlib

    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    from frugalvision.data.decode import load_rgb, to_input
    from frugalvision.features import augment
    from frugalvision.features.cache import content_hash

    def torchvision_view(path, policy, k, size=96, crop_pct=0.875):  # the replaced implementation, verbatim
        seed = int(hashlib.blake2b(f"{content_hash(path)}:{policy}:{k}".encode(), digest_size=8).hexdigest(), 16)
        img = load_rgb(path, min_side=int(round(size / max(crop_pct, 1e-3))))
        pr = augment._params(augment.POLICIES[policy], seed, *img.size)
        img = img.crop((pr["left"], pr["top"], pr["left"] + pr["width"], pr["top"] + pr["height"]))
        if pr["flip"]:
            img = F.hflip(img)
        img = F.rotate(img, pr["angle"], interpolation=F.InterpolationMode.BILINEAR,
                       fill=[int(v) for v in np.asarray(img).reshape(-1, 3).mean(axis=0)])
        img = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(img, pr["brightness"]), pr["contrast"]),
                                  pr["saturation"])
        arr, box = to_input(img, size, crop_pct, "bicubic")
        return arr, box, img.size

    # A smooth picture (gradients and a disc), so that differences measure the operations, not aliasing.
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([xx * 1.5, yy * 2.0, 255 - xx], -1)
    img[(yy - 60) ** 2 + (xx - 70) ** 2 < 900] = (240, 200, 40)
    path = tmp_path / "smooth.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    for policy in ("light", "default", "strong"):
        for k in range(4):
            arr, box, size = torchvision_view(str(path), policy, k)
            new = augment.augmented_decoder({"input_size": 96, "crop_pct": 0.875, "interpolation": "bicubic"},
                                            policy, k)(str(path))
            assert new.box == box and new.size == size
            diff = np.abs(new.array.astype(int) - arr.astype(int))
            assert diff.mean() < 3 and np.percentile(diff, 99) <= 8, (policy, k, diff.mean())
