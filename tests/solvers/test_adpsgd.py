"""solver="adpsgd" (AD-PSGD over model replicas) against the exact optimum."""

import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.linear_model import SGDClassifier

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor
from dask_asyncopt.datasets import make_sparse_classification

from .conftest import cluster_is_clean, logistic_objective, ridge_gap

N, D = 5000, 2000


@pytest.fixture(scope="module")
def client3():
    """Three thread workers: an odd number of replicas, one per worker."""
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(
            cluster, set_as_default=False) as c:
        yield c


def _gap(data, optimum, penalty, **kw):
    X, y = data
    alpha = 1e-4
    est = AsyncSGDClassifier(loss="log_loss", penalty=penalty, alpha=alpha, solver="adpsgd",
                             **kw).fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, alpha,
                           1.0 if penalty == "l1" else 0.0)
    return est, (f - optimum(penalty, alpha)) / optimum(penalty, alpha)


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_two_replicas_reach_optimum(data, optimum, penalty, client):
    est, gap = _gap(data, optimum, penalty)
    assert gap <= 1e-3
    h = est.history_
    assert {"consensus_distance", "exchanges"} <= set(h.columns)
    assert (h.consensus_distance >= 0).all() and h.exchanges.sum() > 0
    assert cluster_is_clean(client)


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_three_replicas_reach_optimum(data, optimum, penalty, client3):
    with client3.as_current():
        est, gap = _gap(data, optimum, penalty)
        assert gap <= 1e-3
        # replicas drift apart within an epoch (two passives, one active between them)
        assert est.history_.consensus_distance.max() > 0
        assert cluster_is_clean(client3)


def test_process_workers_reach_optimum(data, optimum, process_client):
    """Replicas in two processes: exchanges are remote actor calls."""
    with process_client.as_current():
        est, gap = _gap(data, optimum, "l1")
        assert gap <= 1e-3
        assert est.history_.exchanges.sum() > 0
        assert cluster_is_clean(process_client)


def test_dense_regressor_reaches_ridge_optimum():
    assert ridge_gap(solver="adpsgd") <= 1e-3


def test_plain_sgd_hinge_multiclass_like_sklearn(client):
    """The non-smooth path (plain proximal SGD, prox applied on each replica), K=3."""
    X, y = make_sparse_classification(3000, 500, n_classes=3, random_state=1)
    est = AsyncSGDClassifier(loss="hinge", penalty="l1", alpha=1e-4, solver="adpsgd",
                             random_state=0).fit(X, y)
    ref = SGDClassifier(loss="hinge", penalty="l1", alpha=1e-4, random_state=0).fit(X, y)
    assert est.coef_.shape == (3, 500)
    assert est.score(X, y) >= ref.score(X, y) - 0.03
    # the prox is applied on every replica: a 100x stronger L1 penalty shrinks the model
    strong = AsyncSGDClassifier(loss="hinge", penalty="l1", alpha=1e-2, solver="adpsgd",
                                max_iter=5, tol=None, random_state=0).fit(X, y)
    assert np.abs(strong.coef_).sum() < 0.2 * np.abs(est.coef_).sum()
    assert cluster_is_clean(client)


def test_divergence_leaves_cluster_clean(client):
    rng = np.random.default_rng(0)
    Xbig = rng.normal(loc=1e160, scale=1e159, size=(200, 3))
    est = AsyncSGDRegressor(learning_rate="constant", eta0=10.0, max_iter=5, tol=None,
                            solver="adpsgd", variance_reduction=None)
    with pytest.raises(FloatingPointError):
        est.fit(Xbig, rng.normal(size=200))
    assert cluster_is_clean(client)


def test_plain_sgd_runs_all_epochs_in_one_go(data, client):
    """Plain SGD has no epoch barrier: the driver records a row each time the
    loops' total crosses another epoch, and each row covers about one epoch of
    samples even on data this small (loops wait when a row is due)."""
    X, y = data
    n = X.shape[0]
    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=1e-4, solver="adpsgd",
                             variance_reduction=None, max_iter=6, tol=None,
                             random_state=0).fit(X, y)
    h = est.history_
    assert list(h.epoch) == [1, 2, 3, 4, 5, 6] and est.n_iter_ == 6
    per_row = np.diff(np.concatenate([[0], h.samples]))
    assert (per_row >= 0.5 * n).all() and (per_row <= 1.6 * n).all(), per_row
    assert h.samples.iloc[-1] >= 6 * n
    assert (h.loss > 0).all() and np.isfinite(h.objective).all()
    assert h.loss.iloc[-1] < h.loss.iloc[0]
    assert cluster_is_clean(client)


def test_plain_sgd_early_stopping_and_adaptive_steps(data, client):
    X, y = data
    common = dict(loss="log_loss", penalty="l2", alpha=1e-4, solver="adpsgd",
                  variance_reduction=None, max_iter=30, tol=10.0, n_iter_no_change=2,
                  random_state=0)
    stopped = AsyncSGDClassifier(**common).fit(X, y)
    assert stopped.n_iter_ == 3  # no epoch improves by 10: stop after 1 + 2
    adaptive = AsyncSGDClassifier(learning_rate="adaptive", eta0=0.1, **common).fit(X, y)
    eta = adaptive.history_.eta0.to_numpy()
    # each stall divides the step by 5 (sent to every replica) until it is tiny
    assert eta[0] == 0.1 and (np.diff(eta) <= 0).all() and eta[-1] <= 1e-6
    assert set(np.round(eta[:-1] / eta[1:], 6)) == {1.0, 5.0}
    assert adaptive.n_iter_ < 30 and np.isfinite(adaptive.coef_).all()
    assert cluster_is_clean(client)


def test_a_loop_waits_when_too_far_ahead_of_the_slowest():
    """The lead bound of barrier-free fits: passes over own rows (shards taken as
    equal) at most MAX_LEAD times the slowest loop's, plus one pass."""
    from dask_asyncopt.replica import Replica
    from dask_asyncopt.solvers.adpsgd import MAX_LEAD, _ahead

    me = Replica(0, 3, 4, 1)
    n_samples = 300  # 100 rows per loop
    me.known[:] = [100, 0, 50]  # one pass, the others 0 and 0.5 passes: 1 <= 4 * 0 + 1
    assert not _ahead(me, 3, n_samples)
    me.known[0] = 101
    assert _ahead(me, 3, n_samples)
    me.known[1] = 20  # slowest now 0.2 passes: bound 4 * 0.2 + 1 = 1.8 passes
    assert MAX_LEAD == 4.0 and not _ahead(me, 3, n_samples)
    me.known[0] = 181
    assert _ahead(me, 3, n_samples)
