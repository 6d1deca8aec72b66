"""``optimizer="amsgrad"`` in every solver against the exact optimum (scikit-learn)."""

import numpy as np
import pytest

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor
from dask_asyncopt.datasets import make_sparse_classification

from .conftest import cluster_is_clean, logistic_objective

N, D, ALPHA = 5000, 2000, 1e-4


@pytest.mark.parametrize("solver", ["asyb", "sync"])
@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_amsgrad_default_settings_reach_optimum(data, optimum, penalty, solver, client):
    """Only the optimizer, loss, penalty and alpha given: a 1e-3 relative gap."""
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", penalty=penalty, alpha=ALPHA, solver=solver,
                             optimizer="amsgrad").fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, ALPHA,
                           1.0 if penalty == "l1" else 0.0)
    gap = (f - optimum(penalty)) / optimum(penalty)
    assert gap <= 1e-3, gap
    h = est.history_
    # the history's objective is the exact objective of the coefficients returned
    np.testing.assert_allclose(h.objective.iloc[-1], f, rtol=1e-9)
    if solver == "asyb":
        assert h.staleness_max.max() >= 1  # gradients really are delayed
    else:
        assert h.staleness_max.max() == 0
    assert cluster_is_clean(client)


def test_amsgrad_max_staleness_is_enforced(data):
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=ALPHA, optimizer="amsgrad", max_iter=2,
                             tol=None, max_staleness=2).fit(X, y)
    assert est.history_.staleness_max.max() <= 2
    free = AsyncSGDClassifier(loss="log_loss", alpha=ALPHA, optimizer="amsgrad", max_iter=2,
                              tol=None).fit(X, y)
    # without the bound: several gradients per exchange, the last ones > 2 versions old
    assert free.history_.staleness_max.max() > 2


def test_amsgrad_without_variance_reduction_and_nonsmooth_loss(data):
    """Plain stochastic gradients (decaying step): hinge loss and log-loss both learn."""
    X, y = data
    for kw in [dict(loss="hinge"), dict(loss="log_loss", variance_reduction=None)]:
        est = AsyncSGDClassifier(penalty="l1", alpha=ALPHA, optimizer="amsgrad", max_iter=8,
                                 random_state=0, **kw).fit(X, y)
        assert est.score(X, y) > 0.8
        assert (np.diff(est.history_.eta0) <= 0).all()  # the step decays


def test_amsgrad_dense_regression_and_multiclass():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 20)) * np.logspace(-2, 1, 20)  # badly scaled columns
    coef = rng.normal(size=20) / np.logspace(-2, 1, 20)
    y = X @ coef + 1.0 + 0.1 * rng.normal(size=2000)
    reg = AsyncSGDRegressor(optimizer="amsgrad", alpha=1e-6, random_state=0).fit(X, y)
    assert reg.score(X, y) > 0.99
    Xc, yc = make_sparse_classification(2000, 300, n_classes=3, random_state=1)
    clf = AsyncSGDClassifier(loss="log_loss", optimizer="amsgrad", n_blocks=3,
                             random_state=0).fit(Xc, yc)
    sgd = AsyncSGDClassifier(loss="log_loss", n_blocks=3, random_state=0).fit(Xc, yc)
    assert clf.coef_.shape == (3, 300)
    assert clf.score(Xc, yc) >= sgd.score(Xc, yc) - 0.01 and clf.score(Xc, yc) > 0.6


@pytest.mark.parametrize("param,value", [("beta1", 1.0), ("beta2", -0.1),
                                         ("adam_epsilon", 0.0), ("optimizer", "adam")])
def test_amsgrad_parameters_are_validated(data, param, value):
    X, y = data
    with pytest.raises(ValueError, match=param):
        AsyncSGDClassifier(**{"optimizer": "amsgrad", param: value}).fit(X[:50], y[:50])
