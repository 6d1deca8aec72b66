"""The AD-PSGD replica actor and its gossip: exact averaging, conservation, no deadlock."""

import numpy as np
import pytest
from distributed import Client, LocalCluster, wait

from dask_asyncopt.replica import Replica
from dask_asyncopt.solvers.adpsgd import peer_schedule, run_gossip_rounds
from dask_asyncopt.store import FitStopped

from .conftest import cluster_is_clean


def test_exchange_averages_and_conserves_the_sum():
    rng = np.random.default_rng(0)
    a, p = (Replica(r, 2, 50, 2, init=rng.normal(size=(50, 2))) for r in (1, 0))
    a.step(np.arange(3), np.zeros((3, 2)), 1.0, 0.0, 5, a.read(None)[1])
    total = a.values() + p.values()
    values, known = a.outgoing()
    a.step(np.arange(3), np.ones((3, 2)), 1.0, 0.0, 7, a.read(None)[1])  # in flight
    d, merged = p.exchange(values, known)
    a.absorb(d, merged)
    np.testing.assert_allclose(a.values() + p.values(), total + np.r_[np.ones((3, 2)),
                                                                      np.zeros((47, 2))])
    # equal but for the active side's step taken while the exchange was in flight
    np.testing.assert_allclose(a.values()[3:], p.values()[3:])
    np.testing.assert_allclose(a.values()[:3] - 1.0, p.values()[:3])
    # progress gossip: the passive side learns the count the active side sent
    assert list(merged) == [0, 5] and a.total_known() == 12 and p.total_known() == 5


def test_step_applies_delta_then_prox_except_the_intercept():
    r = Replica(0, 1, 4, 1, intercept=3, init=np.array([[1.0], [-0.2], [0.0], [0.05]]))
    staleness = r.step(np.array([2]), np.array([[0.5]]), 2.0, 0.1, 3, 0)
    np.testing.assert_allclose(r.values().ravel(), [0.45, -0.05, 0.2, 0.05])
    assert staleness == 0 and r.own() == 3


def test_step_matches_numpy_on_many_coordinates():
    """The in-place step kernel against the plain NumPy step it replaces."""
    rng = np.random.default_rng(3)
    init = rng.normal(size=(500, 3))
    ids = rng.choice(500, size=120, replace=False)
    delta = rng.normal(size=(120, 3))
    for prox_d, prox_s in [(1.0, 0.0), (1.3, 0.4), (1.0, 0.7)]:
        r = Replica(0, 1, 500, 3, intercept=17, init=init)
        r.step(ids, delta, prox_d, prox_s, 1, 0, loss=2.5, seconds=0.1)
        want = init.copy()
        want[ids] += delta
        keep = want[17].copy()
        want = np.sign(want) * np.maximum(np.abs(want) - prox_s, 0.0) / prox_d
        want[17] = keep
        np.testing.assert_allclose(r.values(), want, rtol=1e-13, atol=1e-15)
        stats = r.stats()
        assert stats["loss_sum"] == 2.5 and stats["kernel_time"] == 0.1


def test_shift_keeps_steps_taken_since_the_read():
    """The driver's move to the mean: read, steps happen, shift by mean - read."""
    rng = np.random.default_rng(1)
    reps = [Replica(i, 3, 40, 1, init=rng.normal(size=(40, 1))) for i in range(3)]
    read = [r.values() for r in reps]
    mean = np.mean(read, axis=0)
    reps[1].step(np.arange(5), np.ones((5, 1)), 1.0, 0.0, 1, 0)  # after the read
    for r, v in zip(reps, read, strict=True):
        r.shift(mean - v, 1)
    np.testing.assert_allclose(sum(r.values() for r in reps),
                               3 * mean + np.r_[np.ones((5, 1)), np.zeros((35, 1))])
    np.testing.assert_allclose(reps[0].values(), mean)
    np.testing.assert_allclose(reps[1].values()[5:], mean[5:])


def test_stopped_replica_refuses_calls():
    r = Replica(0, 2, 3, 1)
    r.stop()
    with pytest.raises(FitStopped):
        r.read(None)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_peer_graph_is_bipartite_and_covers_every_loop(n):
    peers = {rank: peer_schedule(rank, n) for rank in range(n)}
    for rank, mine in peers.items():
        assert all(p % 2 == 0 for p in mine)  # actives only call passives
        assert (mine == []) == (rank % 2 == 0)  # passives never call
    # connected: every passive is reached by every active, so all ranks are linked
    assert {p for mine in peers.values() for p in mine} == set(range(0, n, 2))


@pytest.fixture(scope="module")
def client3():
    """Three process workers: exchanges are real concurrent remote calls."""
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(
            cluster, set_as_default=False, direct_to_workers=True) as c:
        yield c


@pytest.mark.parametrize("n_replicas", [3, 4])
def test_many_gossip_rounds_no_deadlock_sum_conserved(client3, n_replicas):
    """Every loop steps its replica and (active ones) averages with a peer, 300
    times, concurrently; the sum of the replicas is the initial sum plus every
    step, exactly; gossip alone then drives them to consensus."""
    workers = sorted(client3.nthreads())
    rng = np.random.default_rng(1)
    inits = [rng.normal(size=(1000, 2)) for _ in range(n_replicas)]
    futures = [client3.submit(Replica, i, n_replicas, 1000, 2, -1, inits[i], actor=True,
                              workers=[workers[i % len(workers)]])
               for i in range(n_replicas)]
    try:
        actors = client3.gather(futures)
        rounds = [client3.submit(run_gossip_rounds, actors, i, 300, i, 1.0, pure=False,
                                 workers=[workers[i % len(workers)]])
                  for i in range(n_replicas)]
        wait(rounds, timeout=60)  # raises on a deadlock
        reports = client3.gather(rounds)
        assert sum(r["exchanges"] for r in reports) == 300 * (n_replicas // 2)
        values = [a.values().result(10) for a in actors]
        expected = sum(inits) + sum(r["applied"] for r in reports)
        np.testing.assert_allclose(sum(values), expected, rtol=0, atol=1e-9)
        spread = _distance(values)
        # gossip only: consensus, the sum still conserved
        rounds = [client3.submit(run_gossip_rounds, actors, i, 60, i, 0.0, pure=False,
                                 workers=[workers[i % len(workers)]])
                  for i in range(n_replicas)]
        wait(rounds, timeout=60)
        values = [a.values().result(10) for a in actors]
        np.testing.assert_allclose(sum(values), expected, rtol=0, atol=1e-9)
        assert _distance(values) < 1e-6 * spread
    finally:
        del actors
        client3.cancel(futures + rounds, force=True)
    assert cluster_is_clean(client3)


def _distance(values):
    mean = np.mean(values, axis=0)
    return np.sqrt(np.mean([np.sum((v - mean) ** 2) for v in values]))
