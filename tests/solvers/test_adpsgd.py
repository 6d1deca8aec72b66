"""AD-PSGD over model replicas (``solvers/adpsgd.py``, ``solver="adpsgd"``): fits against
the exact optimum, the peer graph, gossip rounds on real process workers, the lead bound."""

import numpy as np
import pytest
from distributed import Client, LocalCluster, wait
from sklearn.linear_model import SGDClassifier

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor
from dask_asyncopt.datasets import make_sparse_classification
from dask_asyncopt.solvers.adpsgd import (
    MAX_LEAD,
    _ahead,
    consensus,
    global_ids,
    passive_ranks,
    peer_schedule,
    run_gossip_rounds,
)
from dask_asyncopt.store.replicas import Replica

from ..conftest import cluster_is_clean, logistic_objective, returned_objective, ridge_gap

N, D = 5000, 2000


@pytest.fixture(scope="module")
def threads3():
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


@pytest.mark.parametrize("penalty", ["l2", pytest.param("l1", marks=pytest.mark.slow)])
def test_two_replicas_reach_optimum(data, optimum, penalty, client):
    est, gap = _gap(data, optimum, penalty)
    assert gap <= 1e-3
    h = est.history_
    assert {"consensus_distance", "exchanges"} <= set(h.columns)
    assert (h.consensus_distance >= 0).all() and h.exchanges.sum() > 0
    assert cluster_is_clean(client)


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_three_replicas_reach_optimum(data, optimum, penalty, threads3):
    with threads3.as_current():
        est, gap = _gap(data, optimum, penalty)
        assert gap <= 1e-3
        # replicas drift apart within an epoch (two passives, one active between them)
        assert est.history_.consensus_distance.max() > 0
        assert cluster_is_clean(threads3)


def test_process_workers_reach_optimum(data, optimum, process_client):
    """Replicas in two processes: exchanges are remote actor calls."""
    with process_client.as_current():
        est, gap = _gap(data, optimum, "l1")
        assert gap <= 1e-3
        assert est.history_.exchanges.sum() > 0
        assert cluster_is_clean(process_client)


def test_dense_regressor_reaches_ridge_optimum():
    # tol below the asserted gap: where the default rule stops is an estimate (the
    # extrapolated gap of gossiping replicas; see the user guide, "When a fit stops")
    assert ridge_gap(solver="adpsgd", tol=1e-4) <= 1e-3


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
    Xbig = rng.normal(loc=1e100, scale=1e99, size=(200, 3))
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


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_two_replicas_amsgrad_reach_optimum(data, optimum, penalty, client):
    """Default settings plus optimizer="amsgrad": a 1e-3 relative gap."""
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", penalty=penalty, alpha=1e-4, solver="adpsgd",
                             optimizer="amsgrad").fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, 1e-4,
                           1.0 if penalty == "l1" else 0.0)
    gap = (f - optimum(penalty)) / optimum(penalty)
    assert gap <= 1e-3, gap
    h = est.history_
    # the history's objective is the exact objective of the consensus returned
    np.testing.assert_allclose(returned_objective(h), f, rtol=1e-9)
    assert h.exchanges.sum() > 0 and h.consensus_distance.max() > 0
    assert cluster_is_clean(client)


def test_amsgrad_dense_regressor_and_plain_gradients(data, client):
    """Dense ridge regression (intercept unpenalised) and the non-variance-reduced
    path (hinge loss, decaying step) on replicas."""
    assert ridge_gap(solver="adpsgd", optimizer="amsgrad") <= 1e-3
    Xs, ys = data
    clf = AsyncSGDClassifier(loss="hinge", penalty="l1", alpha=1e-4, solver="adpsgd",
                             optimizer="amsgrad", max_iter=8, random_state=0).fit(Xs, ys)
    assert clf.score(Xs, ys) > 0.8
    assert (np.diff(clf.history_.eta0) <= 0).all() and clf.history_.eta0.iloc[-1] < 0.03
    assert cluster_is_clean(client)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_peer_graph_is_bipartite_and_covers_every_loop(n):
    peers = {rank: peer_schedule(rank, n) for rank in range(n)}
    for rank, mine in peers.items():
        assert all(p % 2 == 0 for p in mine)  # actives only call passives
        assert (mine == []) == (rank % 2 == 0)  # passives never call
    # connected: every passive is reached by every active, so all ranks are linked
    assert {p for mine in peers.values() for p in mine} == set(range(0, n, 2))


@pytest.fixture(scope="module")
def processes3():
    """Three process workers: exchanges are real concurrent remote calls."""
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(
            cluster, set_as_default=False, direct_to_workers=True) as c:
        yield c


@pytest.mark.slow  # a 3-process cluster of its own, 300 rounds of exchanges
@pytest.mark.parametrize("n_replicas", [3, 4])
def test_many_gossip_rounds_no_deadlock_sum_conserved(processes3, n_replicas):
    """Every loop steps its replica and (active ones) averages with a peer, 300
    times, concurrently; the sum of the replicas is the initial sum plus every
    step, exactly; gossip alone then drives them to consensus."""
    workers = sorted(processes3.nthreads())
    rng = np.random.default_rng(1)
    inits = [rng.normal(size=(1000, 2)) for _ in range(n_replicas)]
    futures = [processes3.submit(Replica, i, n_replicas, 1000, 2, -1, inits[i], actor=True,
                              workers=[workers[i % len(workers)]])
               for i in range(n_replicas)]
    try:
        actors = processes3.gather(futures)
        rounds = [processes3.submit(run_gossip_rounds, actors, i, 300, i, 1.0, pure=False,
                                 workers=[workers[i % len(workers)]])
                  for i in range(n_replicas)]
        wait(rounds, timeout=60)  # raises on a deadlock
        reports = processes3.gather(rounds)
        assert sum(r["exchanges"] for r in reports) == 300 * (n_replicas // 2)
        values = [a.values().result(10) for a in actors]
        expected = sum(inits) + sum(r["applied"] for r in reports)
        np.testing.assert_allclose(sum(values), expected, rtol=0, atol=1e-9)
        spread = _distance(values)
        # gossip only: consensus, the sum still conserved
        rounds = [processes3.submit(run_gossip_rounds, actors, i, 60, i, 0.0, pure=False,
                                 workers=[workers[i % len(workers)]])
                  for i in range(n_replicas)]
        wait(rounds, timeout=60)
        values = [a.values().result(10) for a in actors]
        np.testing.assert_allclose(sum(values), expected, rtol=0, atol=1e-9)
        assert _distance(values) < 1e-6 * spread
    finally:
        del actors
        processes3.cancel(futures + rounds, force=True)
    assert cluster_is_clean(processes3)


def _distance(values):
    mean = np.mean(values, axis=0)
    return np.sqrt(np.mean([np.sum((v - mean) ** 2) for v in values]))


def test_passive_ranks_and_consensus():
    assert passive_ranks(1) == [0] and passive_ranks(4) == [0, 2]
    assert peer_schedule(0, 1) == [] and peer_schedule(1, 2) == [0]
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(7, 2)) for _ in range(3)]
    mean, distance = consensus(values)
    np.testing.assert_allclose(mean, (values[0] + values[1] + values[2]) / 3)
    want = np.sqrt(np.mean([((v - mean) ** 2).sum() for v in values]))
    assert distance == pytest.approx(want, rel=1e-12)
    assert consensus([values[0]] * 2)[1] == 0.0


def test_global_ids_invert_the_interleaved_block_numbering():
    """A chunk's local coordinates are runs of in-block ids, one run per block:
    global id = in-block id * n_blocks + block (cached on the chunk)."""
    import scipy.sparse as sp

    from dask_asyncopt.data.shards import ShardLayout, make_shard

    X = sp.random(30, 11, density=0.3, format="csr", random_state=1)
    shard = make_shard(X, np.ones((30, 1)), ShardLayout(11, 3, True, 10), 0)
    for i, chunk in enumerate(shard.chunks):  # chunk i: rows 10 i .. 10 i + 9, in order
        gids = global_ids(chunk, 3)
        assert global_ids(chunk, 3) is gids
        assert gids[chunk.intercept] == 11  # the intercept: global coordinate n_features
        local = chunk.X.toarray()
        for c, g in enumerate(gids):
            if c != chunk.intercept:
                np.testing.assert_array_equal(local[:, c], X[10 * i:10 * i + 10].toarray()[:, g])
