"""Heads behave as scikit-learn estimators."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from frugalvision.heads import LinearHead


@parametrize_with_checks([LinearHead(max_iter=200)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_folded_weights_equal_the_scaled_pipeline():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)) * [1, 10, 100, 1, 1, 1] + 5
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 120)]
    head = LinearHead(C=0.3).fit(X, y)
    ref = LogisticRegression(C=0.3, max_iter=2000).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(StandardScaler().fit(X).transform(X)),
                               atol=1e-8)


def test_binary_head_has_one_row_per_class():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 4))
    y = (X[:, 0] > 0).astype(int)
    head = LinearHead().fit(X, y)
    assert head.coef_.shape == (2, 4)
    ref = LogisticRegression(C=head.C, max_iter=2000).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(StandardScaler().fit(X).transform(X)),
                               atol=1e-8)
