"""Each solver against the exact optimum of the same objective (scikit-learn)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification

from .conftest import cluster_is_clean, logistic_objective

N, D = 5000, 2000


@pytest.fixture(scope="module")
def data():
    return make_sparse_classification(N, D, random_state=3)


@pytest.fixture(scope="module")
def optimum(data):
    """Exact optimum of each penalty's objective, computed once per module."""
    X, y = data
    cache = {}

    def f_star(penalty, alpha):
        if (penalty, alpha) not in cache:
            # LogisticRegression minimises C * sum(loss) + R(w): the same minimiser as
            # mean(loss) + alpha * R(w) for C = 1 / (n * alpha).
            lr = LogisticRegression(penalty=penalty, C=1.0 / (X.shape[0] * alpha),
                                    solver="saga", tol=1e-8, max_iter=5000).fit(X, y)
            cache[penalty, alpha] = logistic_objective(X, y, lr.coef_, lr.intercept_, alpha,
                                                       _l1_ratio(penalty))
        return cache[penalty, alpha]

    return f_star


def _l1_ratio(penalty):
    return 1.0 if penalty == "l1" else 0.0


def _fit_gap(data, optimum, penalty, solver, alpha=1e-4):
    """Fit with default settings; return the estimator and its relative objective gap."""
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", penalty=penalty, alpha=alpha, solver=solver)
    est.fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, alpha, _l1_ratio(penalty))
    f_star = optimum(penalty, alpha)
    return est, (f - f_star) / f_star


@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_l2_default_settings_reach_optimum(data, optimum, solver, client):
    _, gap = _fit_gap(data, optimum, "l2", solver)
    assert gap <= 1e-3
    assert cluster_is_clean(client)


@pytest.mark.xfail(strict=True, reason="open: prox-SGD's noise floor on L1 leaves a relative "
                   "gap of ~3e-3 at default settings (scikit-learn's SGD: ~2e-3); needs "
                   "variance reduction, see docs/status.md")
@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_l1_default_settings_reach_optimum(data, optimum, solver):
    _, gap = _fit_gap(data, optimum, "l1", solver)
    assert gap <= 1e-3


@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_l1_close_to_optimum(data, optimum, solver):
    """What L1 reaches today (gap below 1e-2) and that it is sparse."""
    est, gap = _fit_gap(data, optimum, "l1", solver)
    assert gap <= 1e-2
    assert np.count_nonzero(est.coef_) < est.coef_.size


def test_sync_is_deterministic(data):
    X, y = data
    kw = dict(loss="log_loss", penalty="elasticnet", alpha=1e-4, solver="sync",
              random_state=7, max_iter=5, tol=None)
    a = AsyncSGDClassifier(**kw).fit(X, y)
    b = AsyncSGDClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)


def test_history_reports_staleness_and_compute(data):
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, max_iter=4, tol=None,
                             batch_size=200).fit(X, y)
    h = est.history_
    assert list(h.epoch) == [1, 2, 3, 4]
    assert (np.diff(h.samples) >= N).all()  # an epoch is n_samples processed in total
    assert (h.updates > 0).all()
    assert (h.staleness_max >= h.staleness_mean).all()
    assert h.staleness_max.max() >= 1  # two loops really interleave
    assert ((h.compute_fraction > 0) & (h.compute_fraction <= 1)).all()
    assert np.isfinite(h.objective).all()


def test_max_staleness_is_enforced(data):
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, max_iter=3, tol=None,
                             batch_size=100, max_staleness=1).fit(X, y)
    assert est.history_.staleness_max.max() <= 1


def test_single_worker_loop_has_no_staleness(data):
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, max_iter=2, tol=None,
                             n_workers=1).fit(X, y)
    assert est.history_.staleness_max.max() == 0


def test_multiclass_and_more_blocks(data):
    X, _ = make_sparse_classification(3000, 500, n_classes=3, random_state=1)
    _, y = make_sparse_classification(3000, 500, n_classes=3, random_state=1)
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, n_blocks=5, random_state=0)
    est.fit(X, y)
    assert est.coef_.shape == (3, 500)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert est.score(X, y) > 0.6


def test_warm_start_continues_schedule(data):
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, max_iter=2, tol=None,
                             warm_start=True, random_state=0).fit(X, y)
    t1 = est.t_
    est.fit(X, y)
    assert est.t_ >= t1 + 2 * N
