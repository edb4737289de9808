"""OOD scores on synthetic embeddings: Gaussian clusters in, points elsewhere out (fast, numpy only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frugalvision.ood import (
    METHODS,
    OODState,
    fit_ood,
    ood_score,
    threshold_for_accept_rate,
)

D, C = 48, 3


def _clusters(rng, n_per, centres, spread=1.0):
    X = np.vstack([c + spread * rng.standard_normal((n_per, D)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array([f"c{i}" for i in range(len(centres))]), n_per)
    return X, y


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = 6 * rng.standard_normal((C, D))
    # Embeddings of a real backbone are non-negative and away from the origin; keep the clusters there too.
    centres += 20
    X_tr, y_tr = _clusters(rng, 200, centres)
    X_val, _ = _clusters(rng, 200, centres)
    X_te, _ = _clusters(rng, 100, centres)
    # A linear head like LinearHead's: logits = X @ coef.T + intercept, class c's logit highest at its centre.
    m = centres.mean(0)
    coef = (centres - m) / 10
    intercept = -(coef * (centres + m) / 2).sum(1)
    # Feature-space OOD: another cluster, far from the training ones.
    X_far = (20 + 6 * rng.standard_normal(D) + 8 * rng.standard_normal((300, D))).astype(np.float32)
    X_far += 25 * rng.standard_normal(D).astype(np.float32)
    # Logit-space OOD: midpoints between two class centres (the head cannot tell which class).
    pairs = rng.integers(0, C, (300, 2))
    pairs[:, 1] = (pairs[:, 0] + 1) % C
    X_mid = ((centres[pairs[:, 0]] + centres[pairs[:, 1]]) / 2 + rng.standard_normal((300, D))).astype(np.float32)
    lg = lambda X: X @ coef.T + intercept
    return {"X_tr": X_tr, "y_tr": y_tr, "L_tr": lg(X_tr), "X_val": X_val, "L_val": lg(X_val), "X_te": X_te,
            "L_te": lg(X_te), "X_far": X_far, "L_far": lg(X_far), "X_mid": X_mid, "L_mid": lg(X_mid), "coef": coef,
            "intercept": intercept}


CONFIGS = [
    {"method": "msp"}, {"method": "energy"},
    {"method": "mahalanobis"}, {"method": "mahalanobis", "n_components": 16}, {"method": "rmd", "n_components": 16},
    {"method": "knn", "k": 5, "normalize": "l2"}, {"method": "knn", "k": 5, "normalize": "std_l2"},
    {"method": "knn", "k": 5, "normalize": "whiten_l2", "n_components": 8},
    {"method": "vim", "n_components": 8}, {"method": "knn_energy", "k": 5, "weight": 0.5},
    {"method": "knn", "k": 5, "normalize": "center_l2"},
    {"method": "knn_vim", "k": 5, "normalize": "center_l2", "vim_components": 8},
    {},  # the defaults
]


def _fit(d, hp):
    return fit_ood(d["X_tr"], d["y_tr"], d["L_tr"], head_coef=d["coef"], head_intercept=d["intercept"], **hp)


def _auroc(s_in, s_out):
    return float(np.mean(s_out[:, None] > s_in[None, :]) + 0.5 * np.mean(s_out[:, None] == s_in[None, :]))


@pytest.mark.parametrize("hp", CONFIGS, ids=lambda hp: "-".join(f"{v}" for v in hp.values()) or "defaults")
def test_ood_scores_higher_out_of_distribution(data, hp):
    st = _fit(data, hp)
    s_in = ood_score(st, data["X_te"], data["L_te"])
    assert s_in.shape == (len(data["X_te"]),) and np.isfinite(s_in).all()
    # Logit-only scores see ambiguity, not novelty (a far point can get a confident logit): test them on midpoints.
    key = "mid" if st.method in ("msp", "energy") else "far"
    s_out = ood_score(st, data[f"X_{key}"], data[f"L_{key}"])
    assert _auroc(s_in, s_out) > 0.95, st.method


@pytest.mark.parametrize("hp", CONFIGS, ids=lambda hp: "-".join(f"{v}" for v in hp.values()) or "defaults")
def test_state_round_trips_exactly(data, hp, tmp_path):
    from safetensors.numpy import load_file, save_file

    st = _fit(data, hp)
    tensors, params = st.to_tensors(), st.params()
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    # Through a real safetensors file and JSON text, as in the model file.
    f = tmp_path / "ood.safetensors"
    save_file({f"ood.{k}": v for k, v in tensors.items()}, str(f), metadata={"ood": json.dumps(params)})
    loaded = {k[4:]: v for k, v in load_file(str(f)).items()}
    back = OODState.from_state(json.loads(json.dumps(params)), loaded)
    assert back.method == st.method and back.hyper == st.hyper
    assert set(back.arrays) == set(st.arrays)
    for k in st.arrays:
        assert back.arrays[k].dtype == st.arrays[k].dtype and np.array_equal(back.arrays[k], st.arrays[k])
    # Same state, same scores (up to BLAS rounding, which may depend on the buffers' alignment).
    np.testing.assert_allclose(ood_score(back, data["X_far"], data["L_far"]),
                               ood_score(st, data["X_far"], data["L_far"]), rtol=1e-6, atol=1e-9)


def test_from_state_rejects_unknown_or_incomplete():
    with pytest.raises(ValueError):
        OODState.from_state({"format": 99, "method": "knn"}, {})
    with pytest.raises(ValueError):
        OODState.from_state({"format": 1, "method": "knn", "k": 3}, {})


@pytest.mark.parametrize("rate", [0.8, 0.95, 0.99])
def test_threshold_accepts_that_share(data, rate):
    st = _fit(data, {})
    s_val = ood_score(st, data["X_val"], data["L_val"])
    t = threshold_for_accept_rate(s_val, rate)
    assert abs(np.mean(s_val <= t) - rate) <= 1 / len(s_val) + 1e-9
    # On fresh in-distribution images the share is close too (sampling error of 600 validation rows).
    s_te = ood_score(st, data["X_te"], data["L_te"])
    assert abs(np.mean(s_te <= t) - rate) < 0.06


def test_threshold_keeps_at_least_the_stated_share_of_new_images_on_few_validation_images():
    """Split-conformal rank: on 27 validation scores a new image from the same distribution is kept with
    probability >= 95 % (the plain 95th percentile keeps 26/28 = 92.9 %)."""
    rng = np.random.default_rng(0)
    kept = plain = 0
    for _ in range(4000):
        val, new = rng.standard_normal(27), rng.standard_normal(20)
        kept += int((new <= threshold_for_accept_rate(val, 0.95)).sum())
        plain += int((new <= np.quantile(val, 0.95, method="higher")).sum())
    n = 4000 * 20
    assert kept / n >= 0.95 and plain / n < 0.94, (kept / n, plain / n)
    # With too few scores for any rank to guarantee the rate, the largest one is the threshold.
    assert threshold_for_accept_rate(np.arange(10.0), 0.95) == 9.0


def test_vim_part_keeps_held_out_scores_on_the_training_scale_with_few_rows():
    """126 training rows in 1,280 dimensions: a 128-axis ViM subspace spans them, so in-sample residuals are ~0 and
    held-out z-scores ran into the thousands; at most a quarter of the rows as axes keeps them comparable."""
    rng = np.random.default_rng(1)
    centres = 20 + 6 * rng.standard_normal((3, 1280))
    X = np.vstack([c + rng.standard_normal((42, 1280)) for c in centres]).astype(np.float32)
    y = np.repeat(["a", "b", "c"], 42)
    Xv = np.vstack([c + rng.standard_normal((10, 1280)) for c in centres]).astype(np.float32)
    coef = (centres - centres.mean(0)) / 10
    lg = lambda Z: Z @ coef.T  # noqa: E731
    st = fit_ood(X, y, lg(X), head_coef=coef, head_intercept=np.zeros(3))
    assert st.method == "knn_vim"
    s_tr, s_val = ood_score(st, X, lg(X)), ood_score(st, Xv, lg(Xv))
    assert np.median(s_val) < 10 * max(1.0, np.median(np.abs(s_tr))), (np.median(s_tr), np.median(s_val))


def test_threshold_validates():
    with pytest.raises(ValueError):
        threshold_for_accept_rate(np.array([]), 0.95)
    with pytest.raises(ValueError):
        threshold_for_accept_rate(np.ones(3), 1.5)


def test_knn_blocks_and_bank_cap(data):
    st = _fit(data, {"method": "knn", "k": 7})
    q = np.vstack([data["X_te"], data["X_far"]])
    # Small query blocks (memory bound) give the same scores as one block.
    np.testing.assert_allclose(ood_score(st, q, block_elems=1000), ood_score(st, q, block_elems=1 << 24),
                               rtol=1e-5, atol=1e-6)
    # Brute force agrees with a direct computation (2 - 2 cos to the unit bank rows, stored at float16 precision).
    bank = st.arrays["bank"].astype(np.float64)
    assert np.allclose(np.linalg.norm(bank, axis=1), 1, atol=1e-3)
    qn = q / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
    d2 = 2 - 2 * qn @ bank.T
    np.testing.assert_allclose(ood_score(st, q), np.sort(d2, axis=1)[:, 6], rtol=1e-4, atol=1e-5)
    # The bank cap keeps a stratified sample of that size.
    capped = fit_ood(data["X_tr"], data["y_tr"], method="knn", k=7, max_bank=150)
    assert len(capped.arrays["bank"]) == 150


def test_methods_listed_and_logits_required(data):
    assert set(METHODS) >= {"msp", "energy", "mahalanobis", "knn", "vim"}
    st = _fit(data, {"method": "energy"})
    with pytest.raises(ValueError):
        ood_score(st, data["X_te"], None)
    with pytest.raises(ValueError):
        fit_ood(data["X_tr"], data["y_tr"], None, method="vim")
