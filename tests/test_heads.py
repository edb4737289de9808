"""Heads behave as scikit-learn estimators."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from frugalvision.heads import LinearHead


@parametrize_with_checks(
    [LinearHead(max_iter=200)],
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data":
            "float32 L-BFGS: weighted and repeated fits agree to ~1e-7, the check wants float64 exactness"},
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _objective(W, b, Xs, y_idx, C):
    z = Xs @ W.T + b
    z = z - z.max(1, keepdims=True)
    nll = -(z[np.arange(len(z)), y_idx] - np.log(np.exp(z).sum(1))).sum()
    return C * nll + 0.5 * (W ** 2).sum()


@pytest.mark.parametrize("solver", ["lbfgs", "sklearn"])
def test_same_objective_as_scikit_learn(solver):
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(300, 6))
    X = Z * [1, 10, 100, 1, 1, 1] + 5  # badly scaled on purpose
    y = np.array(["a", "b", "c"])[(Z[:, 0] + rng.normal(size=300) > 0).astype(int) + (Z[:, 3] > 0.5)]
    head = LinearHead(C=0.3, solver=solver, tol=1e-9).fit(X, y)
    Xs = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=0.3, max_iter=5000, tol=1e-10).fit(Xs, y)
    y_idx = np.searchsorted(ref.classes_, y)
    ours = _objective(head.coef_std_, head.intercept_std_, Xs, y_idx, 0.3)
    theirs = _objective(ref.coef_, ref.intercept_, Xs, y_idx, 0.3)
    assert ours <= theirs * (1 + 1e-5)  # at least as good a minimum
    # Folding the scaler into coef_ keeps the model identical on raw embeddings.
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(Xs), atol=1e-3)


def test_binary_head_has_one_row_per_class():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 4))
    y = (X[:, 0] > 0).astype(int)
    head = LinearHead().fit(X, y)
    assert head.coef_.shape == (2, 4)
    ref = LogisticRegression(C=head.C, max_iter=2000).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(StandardScaler().fit(X).transform(X)),
                               atol=1e-8)


def test_an_unknown_saved_head_kind_is_named_in_the_error():
    from frugalvision.heads import head_class
    from frugalvision.heads.numpy_head import InferenceHead

    for build in (lambda: head_class("ForestHead"), lambda: InferenceHead("ForestHead", {}, {}, ["a", "b"])):
        with pytest.raises(ValueError, match="unknown head type 'ForestHead'; known: LinearHead, MLPHead"):
            build()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_overwrite_X_standardises_the_callers_buffer_and_fits_the_same_head(n_classes):
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(200, 5)) * [1, 10, 100, 1, 1] + 5).astype(np.float32)
    y = (X[:, 0] > 5).astype(int) + (n_classes == 3) * (X[:, 3] > 5.5)
    copied = LinearHead(C=0.3).fit(X, y)
    buf = X.copy()
    in_place = LinearHead(C=0.3).fit(buf, y, overwrite_X=True)
    np.testing.assert_allclose(in_place.coef_, copied.coef_, rtol=1e-6)
    np.testing.assert_allclose(buf, StandardScaler().fit_transform(X.astype(np.float64)), atol=1e-5)  # in place
    x64 = X.astype(np.float64)  # not float32: copied whatever the flag says
    LinearHead(C=0.3).fit(x64, y, overwrite_X=True)
    assert np.array_equal(x64, X.astype(np.float64))
    if n_classes == 2:
        return  # two classes are solved by scikit-learn, which takes no warm start
    # A warm start from another solution ends at the same head, within the solver's tolerance.
    warm = LinearHead(C=0.3, tol=1e-8).fit(X, y, init=(copied.coef_std_ * 0.5, copied.intercept_std_))
    np.testing.assert_allclose(warm.predict_proba(X), LinearHead(C=0.3, tol=1e-8).fit(X, y).predict_proba(X),
                               atol=1e-4)
