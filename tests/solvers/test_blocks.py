"""AsyB-ProxSGD and its synchronous baseline on coefficient blocks (``solvers/blocks.py``,
``solver="asyb"``/``"sync"``) against the exact optimum of the same objective
(scikit-learn), their history columns, staleness bound and between-epoch decisions."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification
from dask_asyncopt.solvers.steps import SAFETY

from ..conftest import (
    cluster_is_clean,
    logistic_objective,
    penalty_args,
    returned_objective,
    ridge_gap,
)

N, D = 5000, 2000


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
@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_default_settings_reach_optimum(data, optimum, penalty, solver, client):
    """Only loss, penalty and alpha given: proximal SVRG reaches a 1e-3 relative gap,
    and stops there because its gap bound or estimate says so (``tol=1e-3``)."""
    est, gap = _fit_gap(data, optimum, penalty, solver)
    assert gap <= 1e-3
    last = est.history_.iloc[-1]
    assert est.n_iter_ < est.max_iter
    assert last.gap_bound <= 1e-3 or last.gap_estimate <= 1e-3 / SAFETY
    assert est.history_.objective.is_monotonic_decreasing or gap <= 1e-4
    assert cluster_is_clean(client)


@pytest.mark.parametrize("solver", ["asyb", "sync"])
@pytest.mark.parametrize("dense", [False, True])
def test_last_epoch_objective_is_exact(data, solver, dense):
    """The last epoch evaluates only the loss (no snapshot): still the exact F."""
    X, y = data
    X = X[:2000, :300].toarray() if dense else X
    y = y[:2000] if dense else y
    est = AsyncSGDClassifier(loss="log_loss", penalty="elasticnet", l1_ratio=0.5, alpha=1e-4,
                             solver=solver, max_iter=3, tol=None, random_state=0).fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, 1e-4, 0.5)
    np.testing.assert_allclose(returned_objective(est.history_), f, rtol=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "amsgrad"])
def test_dense_storage_of_sparse_data_fits_as_the_sparse_one(data, optimizer):
    """A dense row touches the columns where it is non-zero, as the sparse row does:
    the same data stored either way makes the same progress, epoch by epoch (the
    chunks differ, so not bit for bit).  Counting every row as touching every column
    made rare columns' steps sqrt(n / n_j) times too long: the first epochs rose
    above the start and were undone."""
    X, y = data
    X, y = X[:2000, :300], y[:2000]
    kw = dict(loss="log_loss", penalty="elasticnet", l1_ratio=0.5, alpha=1e-4, solver="sync",
              optimizer=optimizer, max_iter=4, tol=None, random_state=0)
    sparse = AsyncSGDClassifier(**kw).fit(X, y).history_["objective"].to_numpy()
    dense = AsyncSGDClassifier(**kw).fit(X.toarray(), y).history_["objective"].to_numpy()
    assert dense[0] < np.log(2)  # the first epoch improves on w = 0
    np.testing.assert_allclose(dense, sparse, rtol=1e-3)


@pytest.mark.slow  # the exact optimum by scikit-learn's saga at tol 1e-8
def test_l1_finds_the_optimum_support(data):
    """The L1 fit is as sparse as the exact optimum and agrees on its support."""
    X, y = data
    alpha = 1e-4
    ref = LogisticRegression(**penalty_args("l1"), C=1.0 / (X.shape[0] * alpha),
                             solver="saga", tol=1e-8, max_iter=5000).fit(X, y)
    # sync with a seed: the same fit on every run (an asynchronous fit's support
    # near the stopping tolerance varies from run to run)
    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, solver="sync",
                             random_state=0).fit(X, y)
    ours, exact = est.coef_.ravel() != 0, ref.coef_.ravel() != 0
    jaccard = (ours & exact).sum() / (ours | exact).sum()
    assert jaccard >= 0.9, jaccard


@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_plain_sgd_close_to_optimum(data, optimum, solver):
    """Without variance reduction (the path of non-smooth losses): a 1e-2 gap, sparse."""
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=1e-4, solver=solver,
                             variance_reduction=None).fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, 1e-4, 1.0)
    assert (f - optimum("l1", 1e-4)) / optimum("l1", 1e-4) <= 1e-2
    assert np.count_nonzero(est.coef_) < est.coef_.size


@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_regressor_reaches_ridge_optimum(solver):
    """Squared error + L2 against scikit-learn's Ridge on the same objective."""
    assert ridge_gap(solver=solver) <= 1e-3


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
                             batch_size=25).fit(X, y)  # 100 exchanges a loop per epoch
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


def test_more_loops_than_workers_reach_optimum(data, optimum):
    """Four asynchronous loops on two workers still reach the L1 optimum.

    (``sync`` with four loops averages each round's deltas per coordinate and
    progresses slower per epoch: on this data the default ``tol`` stops it at a
    1.4e-3 gap, measured; see docs/status.md.)
    """
    X, y = data
    # tol below the asserted gap: where the default rule stops an asynchronous fit is
    # an estimate (the extrapolated decrease), and this test is about the optimum
    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=1e-4, n_workers=4,
                             tol=1e-4).fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, 1e-4, 1.0)
    assert (f - optimum("l1", 1e-4)) / optimum("l1", 1e-4) <= 1e-3


@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_adaptive_eta0_reaches_the_running_loops(client, solver):
    """``learning_rate="adaptive"`` divides ``eta0`` by 5 on every stall; the loops
    (one task for the whole fit) take it from the driver's decision: once it is
    tiny, the coefficients and so the epochs' losses stand still."""
    X, y = make_sparse_classification(4000, 500, random_state=3)
    est = AsyncSGDClassifier(loss="log_loss", penalty="l2", alpha=1e-4, solver=solver,
                             variance_reduction=None, learning_rate="adaptive", eta0=0.5,
                             max_iter=40, tol=10.0, n_iter_no_change=2,
                             random_state=0).fit(X, y)
    eta = est.history_.eta0.to_numpy()  # the step each epoch took
    loss = est.history_.loss.to_numpy()
    assert eta[0] == 0.5 and eta[-1] <= 1e-6 and set(np.round(eta[:-1] / eta[1:], 6)) == {
        1.0, 5.0}
    moves = np.abs(np.diff(loss))  # epoch k + 1's loss against epoch k's
    tiny = eta[1:] <= 1e-5
    assert tiny.sum() >= 2 and moves[tiny].max() < 1e-3 * moves[:2].max(), (eta, loss)
