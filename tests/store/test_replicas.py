"""Model replicas of AD-PSGD (``store/replicas.py``): exact pairwise averaging, the sum
conserved, eager proximal steps, per-replica update rules."""

import numpy as np
import pytest

from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.rules import AMSGradRule, pack_steps
from dask_asyncopt.store.blocks import FitStopped
from dask_asyncopt.store.replicas import Replica
from dask_asyncopt.store.replies import Averaged, Pulled, StoreStats


def test_exchange_averages_and_conserves_the_sum():
    rng = np.random.default_rng(0)
    a, p = (Replica(r, 2, 50, 2, init=rng.normal(size=(50, 2))) for r in (1, 0))
    a.step(np.arange(3), np.zeros((3, 2)), 1.0, 0.0, 5, a.read(None).version)
    total = a.values() + p.values()
    sent = a.outgoing()
    assert isinstance(sent, Averaged)
    a.step(np.arange(3), np.ones((3, 2)), 1.0, 0.0, 7, a.read(None).version)  # in flight
    reply = p.exchange(sent.delta, sent.known)
    merged = reply.known
    a.absorb(reply.delta, merged)
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
        assert isinstance(stats, StoreStats)
        assert stats.loss_sum == 2.5 and stats.kernel_time == 0.1


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


def test_read_returns_values_version_and_snapshot_terms():
    rng = np.random.default_rng(2)
    init = rng.normal(size=(6, 2))
    r = Replica(0, 1, 6, 2, init=init)
    ids = np.array([4, 1], dtype=np.int64)
    got = r.read(ids)
    assert isinstance(got, Pulled) and got.version == 0 and got.drift is None
    np.testing.assert_array_equal(got.values, init[ids])
    out = np.full((2, 2), np.nan)
    assert r.read(ids, out=out).values is out
    np.testing.assert_array_equal(out, init[ids])
    # the snapshot: gradient sums over the row counts, counts kept, sums restarted; the
    # first snapshot's column statistics (row counts, sums of squares) give the
    # preconditioner sqrt(counts) / energy (0 where no row touches)
    counts, energy = np.array([1, 2, 3, 0, 6, 2]), np.array([1.0, 4.0, 9.0, 0.0, 36.0, 1.0])
    r.add_snapshot(np.ones((6, 2)) * 6.0, (counts, energy))
    got = r.read(ids, snapshot=True)
    np.testing.assert_array_equal(got.counts, [6, 2])
    np.testing.assert_allclose(got.drift, [[1.0, 1.0], [3.0, 3.0]])
    np.testing.assert_allclose(got.precond, [np.sqrt(6) / 36, np.sqrt(2) / 4])
    np.testing.assert_allclose(r.read(None, snapshot=True).precond,
                               [1.0, np.sqrt(2) / 4, np.sqrt(3) / 9, 0.0, np.sqrt(6) / 36,
                                np.sqrt(2)])
    r.reset_snapshot()
    r.add_snapshot(np.ones((6, 2)))
    again = r.read(ids, snapshot=True)
    np.testing.assert_allclose(again.drift, [[1 / 6] * 2, [0.5] * 2])
    np.testing.assert_array_equal(again.counts, [6, 2])  # kept
    # staleness of a step counts the modifications by others since the read
    version = r.read(ids).version
    r.assign(init)
    r.exchange(init, np.zeros(1, dtype=np.int64))
    assert r.step(ids, np.zeros((2, 2)), 1.0, 0.0, 4, version) == 2
    assert r.stats().staleness_max == 2 and r.progress() == 4 == r.own()


def test_assign_and_halt_set_params_for_the_driver():
    r = Replica(1, 2, 3, 1)
    r.assign(np.full((3, 1), 2.0), np.array([5, 7]))
    np.testing.assert_array_equal(r.values(), 2.0)
    assert r.total_known() == 12 and r.own() == 7
    params = np.arange(3.0)
    r.set_params(params)
    r.halt()
    assert r.params is params and r.halted
    stats, values = r.report()
    assert stats.block == 1 and stats.samples == 7
    np.testing.assert_array_equal(values, 2.0)


def _steps(rng, n_coords, n_steps):
    return pack_steps([(np.sort(rng.choice(n_coords, 3, replace=False)),
                        rng.normal(size=(3, 1)), np.ones(3), 2) for _ in range(n_steps)])


def test_replica_amsgrad_is_the_rule_and_averages_values_only():
    """A replica applies the rule's steps to its values; an exchange averages the
    values and leaves each replica its own moments; a warm start's moments are
    where a replica's rule starts."""
    n = 12
    rule = AMSGradRule(lr=0.1)
    penalty = ElasticNet(0.01, 0.5)
    a = Replica(1, 2, n, 1, rule=AMSGradRule(lr=0.1), penalty=penalty)
    b = Replica(0, 2, n, 1, rule=AMSGradRule(lr=0.1), penalty=penalty)
    refs = [np.zeros((n, 1)), np.zeros((n, 1))]
    states = [rule.init(n, 1), rule.init(n, 1)]
    for replica, ref, state, seed in zip((a, b), refs, states, (1, 2), strict=True):
        steps = _steps(np.random.default_rng(seed), n, 20)
        replica.apply_grads(steps[1], steps[0], *steps[2:4], np.full(20, 2), 0)
        rule.update(state, ref, *steps, penalty=penalty, skip=-1)
        np.testing.assert_array_equal(replica.w, ref)
    values, known = a.outgoing()
    np.testing.assert_allclose(values, refs[0], rtol=1e-12)
    d, known = b.exchange(values, known)
    a.absorb(d, known)
    mean = (refs[0] + refs[1]) / 2
    np.testing.assert_allclose(a.values(), mean, rtol=1e-12)
    np.testing.assert_allclose(b.values(), mean, rtol=1e-12)
    # moments stay per replica: b's are still its own steps' moments
    np.testing.assert_allclose(b.state.m, states[1].m, rtol=1e-12)
    assert not np.allclose(a.state.m, b.state.m)
    assert a.stats().pushes == 1 and a.own() == 40
    warm = Replica(0, 1, n, 1, rule=AMSGradRule(lr=0.1), penalty=penalty,
                   moments=a.moments())
    np.testing.assert_array_equal(warm.state.vhat, a.state.vhat)
