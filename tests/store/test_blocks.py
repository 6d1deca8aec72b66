"""Coefficient blocks (``store/blocks.py``: ``BlockServer``) against a dense, eager
reference (``tests/reference.py``).

Most tests use ``BlockServer`` as a plain Python object (its methods are
ordinary methods; Dask only adds the actor transport).  The reference applies
every proximal step to every penalised coordinate at every push, one step at
a time, so it shares nothing with the lazy ``(D, S)`` history under test.
"""

import asyncio
import threading
import time

import numpy as np
import pytest

from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.store import blocks
from dask_asyncopt.store.blocks import BlockServer, FitStopped, IdSet
from dask_asyncopt.store.replies import Pulled, Pushed, StoreStats

from ..reference import L1_RATIOS, DenseRef, make_steps, ref_compose


def new_server(n_coords=20, K=2, alpha=0.0, l1_ratio=0.0, unpenalised=-1, mode="async",
               n_workers=1, max_staleness=None, init=None, samples=0):
    return BlockServer(0, 1, n_coords, K, ElasticNet(alpha, l1_ratio), unpenalised, mode,
                       n_workers, max_staleness, init=init, samples=samples)


def random_push(rng, n_coords, K, alpha, l1_ratio, n_steps=3, scale=1.0):
    size = int(rng.integers(1, 9))
    ids = np.sort(rng.choice(n_coords, size=size, replace=False)).astype(np.int64)
    delta = rng.normal(scale=scale, size=(size, K))
    steps = make_steps(rng, n_steps, alpha, l1_ratio)
    return ids, delta, steps


def assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def run_in_thread(fn, *args, **kwargs):
    """Start ``fn`` in a thread; the returned dict gets ``result`` or ``error``."""
    box = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    box["thread"] = thread
    return box


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


# --------------------------------------------------------------------------
# Async mode
# --------------------------------------------------------------------------
@pytest.mark.parametrize("unpenalised", [-1, 3])
@pytest.mark.parametrize("penalty", sorted(L1_RATIOS))
def test_async_lazy_prox_matches_dense_reference(penalty, unpenalised):
    rng = np.random.default_rng([len(penalty), unpenalised + 1])
    n_coords, K, alpha, l1_ratio = 20, 2, 0.8, L1_RATIOS[penalty]
    server = new_server(n_coords, K, alpha, l1_ratio, unpenalised)
    ref = DenseRef(np.zeros((n_coords, K)), unpenalised)
    icpt_sum = np.zeros(K)
    samples = 0
    n_pushes = 80  # more than the initial history length (64)
    for i in range(n_pushes):
        ids, delta, steps = random_push(rng, n_coords, K, alpha, l1_ratio)
        if unpenalised >= 0 and i % 4 == 0 and unpenalised not in ids:
            ids = np.sort(np.append(ids, unpenalised))
            delta = rng.normal(size=(ids.shape[0], K))
        icpt_sum += delta[ids == unpenalised].sum(axis=0)
        d, s = ref_compose(steps)
        samples += len(steps)
        pushed = server.push(0, ids, delta, d, s, len(steps), i)
        ref.push(ids, delta, steps)
        assert pushed == Pushed(version=i + 1, samples=samples, staleness=0)
        if i % 7 == 3:  # interleave materialising pulls of random coordinates
            q = np.sort(rng.choice(n_coords, size=6, replace=False)).astype(np.int64)
            pulled = server.pull(q)
            assert (pulled.version, pulled.samples) == (i + 1, samples)
            assert (pulled.drift, pulled.counts) == (None, None)  # no snapshot asked
            assert_close(pulled.values, ref.w[q])
            # a caller on this worker reads into a (strided) view of its work array
            work = np.full((q.shape[0], 2 * K), np.nan)
            assert server.pull(q, out=work[:, :K]) == Pulled(None, i + 1, samples)
            assert_close(work[:, :K], ref.w[q])
            assert np.isnan(work[:, K:]).all()
    pulled = server.pull(None)
    values = pulled.values
    assert (pulled.version, pulled.samples) == (n_pushes, samples)
    assert_close(values, ref.w)
    assert_close(server.coefficients(), ref.w)
    assert server.hist_d.shape[0] > 64  # the history grew
    if l1_ratio > 0:  # the L1 part sets coordinates to exactly zero
        assert np.count_nonzero(ref.w[ref.mask] == 0.0) > 0
        np.testing.assert_array_equal(values == 0.0, ref.w == 0.0)
    if unpenalised >= 0:  # the intercept is the plain sum of its deltas
        assert np.any(icpt_sum != 0.0)
        np.testing.assert_allclose(values[unpenalised], icpt_sum, rtol=1e-12)
    # penalty_value(): alpha * (l1_ratio |w|_1 + (1 - l1_ratio) |w|^2 / 2), intercept excluded
    wp = ref.w[ref.mask]
    want_pen = alpha * (l1_ratio * np.abs(wp).sum() + (1 - l1_ratio) * 0.5 * (wp ** 2).sum())
    assert server.penalty_value() == pytest.approx(want_pen, rel=1e-10)
    assert want_pen == pytest.approx(ref.penalty(alpha, l1_ratio), rel=1e-12)


def test_async_push_all_coordinates_with_ids_none():
    rng = np.random.default_rng(1)
    server = new_server(8, 3, 0.5, 0.5, unpenalised=0)
    ref = DenseRef(np.zeros((8, 3)), 0)
    for i in range(5):
        delta = rng.normal(size=(8, 3))
        steps = make_steps(rng, 4, 0.5, 0.5)
        server.push(0, None, delta, *ref_compose(steps), 4, i)
        ref.push(None, delta, steps)
    assert_close(server.pull(None).values, ref.w)
    assert_close(server.pull(np.array([7, 0, 3], dtype=np.int64)).values, ref.w[[7, 0, 3]])
    out = np.empty((8, 3))
    assert server.pull_when(None, 0, 1.0, out=out).values is None
    assert_close(out, ref.w)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_id_sets_name_coordinates_sent_once(mode):
    """A call may name a chunk's ids by an ``IdSet``: sent with the first call, by
    key afterwards; every entry point resolves it as it would the ids."""
    rng = np.random.default_rng(3)
    ids = np.array([5, 1, 7], dtype=np.int64)
    delta = rng.normal(size=(3, 2))
    named, plain = new_server(10, mode=mode), new_server(10, mode=mode)
    named.pull(IdSet("c", ids), worker=0)
    for server, first, later in ((named, IdSet("c"), IdSet("c")),
                                 (plain, ids, ids)):
        server.push(0, first, delta, 1.0, 0.0, 3, 0)
        server.add_snapshot((0, 0), later, delta, (np.ones(3, dtype=np.int64), np.ones(3)))
        server.finish_snapshot(30)
    np.testing.assert_array_equal(named.pull(IdSet("c")).values, plain.pull(ids).values)
    np.testing.assert_array_equal(named.pull_when(IdSet("c"), 1, 1.0).values,
                                  plain.pull(ids).values)
    np.testing.assert_array_equal(named.drift, plain.drift)
    with pytest.raises(KeyError):  # a name never sent
        named.pull(IdSet("other"))


def test_version_and_staleness_stats():
    server = new_server(4, 1)
    ids = np.array([1, 2], dtype=np.int64)
    delta = np.ones((2, 1))
    v0 = server.pull(ids, worker=0).version
    assert v0 == 0
    # three pushes all computed from version 0, then one from the latest version
    assert server.push(0, ids, delta, 1.0, 0.0, 5, 0) == Pushed(1, 5, 0)
    assert server.push(1, ids, delta, 1.0, 0.0, 5, 0) == Pushed(2, 10, 1)
    assert server.push(2, ids, delta, 1.0, 0.0, 5, 0) == Pushed(3, 15, 2)
    assert server.push(0, ids, delta, 1.0, 0.0, 2, 3) == Pushed(4, 17, 0)
    stats = server.stats(reset=False)
    assert stats == StoreStats(block=0, version=4, samples=17, pushes=4, staleness_sum=3,
                               staleness_max=2, penalty=server.penalty_value())
    assert server.stats().pushes == 4  # reset=True returns, then resets
    stats = server.stats()
    assert (stats.pushes, stats.staleness_sum, stats.staleness_max) == (0, 0, 0)
    assert (stats.version, stats.samples) == (4, 17)
    assert server.push(0, ids, delta, 1.0, 0.0, 1, 2) == Pushed(5, 18, 2)
    assert server.stats().staleness_max == 2
    np.testing.assert_array_equal(server.pull(None).values[:, 0], [0.0, 5.0, 5.0, 0.0])


def test_warm_init_and_samples():
    rng = np.random.default_rng(2)
    init = rng.normal(size=(10, 2))
    original = init.copy()
    server = new_server(10, 2, alpha=1.0, l1_ratio=1.0, unpenalised=9, init=init, samples=100)
    init[:] = 0.0  # the server keeps its own copy
    pulled = server.pull(None)
    np.testing.assert_array_equal(pulled.values, original)
    assert (pulled.version, pulled.samples) == (0, 100)
    ref = DenseRef(original, 9)
    steps = make_steps(rng, 10, 1.0, 1.0, lo=0.05, hi=0.1)
    ids = np.array([2, 5], dtype=np.int64)
    delta = rng.normal(size=(2, 2))
    assert server.push(0, ids, delta, *ref_compose(steps), 10, 0) == Pushed(1, 110, 0)
    ref.push(ids, delta, steps)
    values = server.pull(None).values
    assert_close(values, ref.w)
    np.testing.assert_array_equal(values[9], original[9])  # unpenalised: untouched
    assert not np.allclose(values[:9], original[:9])


@pytest.mark.parametrize("l1_ratio", [0.0, 0.3])
def test_renormalisation_keeps_values(monkeypatch, l1_ratio):
    monkeypatch.setattr(blocks, "_RENORMALISE_ABOVE", 20.0)
    rng = np.random.default_rng(3)
    n_coords, K, alpha = 12, 2, 2.0
    server = new_server(n_coords, K, alpha, l1_ratio, unpenalised=5)
    ref = DenseRef(np.zeros((n_coords, K)), 5)
    n_renorm, previous = 0, 0
    for i in range(60):
        ids, delta, steps = random_push(rng, n_coords, K, alpha, l1_ratio, n_steps=2)
        server.push(0, ids, delta, *ref_compose(steps), 2, i)
        ref.push(ids, delta, steps)
        if server.now < previous + 1:
            n_renorm += 1
        previous = server.now
        assert server.hist_d[server.now] <= 20.0
        if i % 9 == 0:
            q = np.sort(rng.choice(n_coords, size=5, replace=False)).astype(np.int64)
            assert_close(server.pull(q).values, ref.w[q])
    assert n_renorm >= 2
    assert_close(server.pull(None).values, ref.w)
    assert server.version == 60


def test_renormalisation_at_default_threshold():
    """Two pushes with ``D = 1e80`` each cross 1e150 and restart the history."""
    rng = np.random.default_rng(4)
    server = new_server(6, 1, unpenalised=2)
    ref = DenseRef(np.zeros((6, 1)), 2)
    for i in range(4):
        delta = rng.normal(size=(6, 1))
        ids = np.arange(6) if i % 2 == 0 else np.array([1, 2, 4])
        delta = delta[: ids.shape[0]]
        server.push(0, ids.astype(np.int64), delta, 1e80, 0.0, 1, i)
        ref.push(ids, delta, [(0.0, 1e80)])
        if i == 1:
            assert server.now == 0  # renormalised
    values = server.pull(None).values
    np.testing.assert_allclose(values, ref.w, rtol=1e-10, atol=0.0)
    assert np.all(values != 0.0)  # tiny (divided by 1e80 per push) but exact


# --------------------------------------------------------------------------
# Sync mode
# --------------------------------------------------------------------------
def _sync_rounds(arrivals, seed=5):
    """Run sync rounds with the given arrival orders; return the server and reference."""
    rng = np.random.default_rng(seed)
    n_coords, K, alpha, l1_ratio = 10, 2, 1.0, 0.5
    init = rng.normal(size=(n_coords, K))
    server = new_server(n_coords, K, alpha, l1_ratio, unpenalised=7, mode="sync",
                        n_workers=2, init=init)
    ref = DenseRef(init, 7)
    for rnd, arrival in enumerate(arrivals):
        pushes = {}
        for worker in (0, 1):
            ids = np.array([0, 3, 7, 8] if worker == 0 else [3, 5, 7], dtype=np.int64)
            delta = rng.normal(size=(ids.shape[0], K))
            steps = make_steps(rng, 5, alpha, l1_ratio, lo=0.1, hi=0.3)
            pushes[worker] = (ids, delta, steps)
        before = server.pull(None).values
        first, second = arrival
        ids, delta, steps = pushes[first]
        assert server.push(first, ids, delta, *ref_compose(steps), 5, rnd) == Pushed(
            rnd, 10 * rnd, 0)
        pulled = server.pull(None)
        assert pulled.version == rnd  # round not complete: nothing applied
        np.testing.assert_array_equal(pulled.values, before)
        ids, delta, steps = pushes[second]
        assert server.push(second, ids, delta, *ref_compose(steps), 5, rnd) == Pushed(
            rnd + 1, 10 * (rnd + 1), 0)
        # both deltas summed, then the prox maps of both chunks (worker 0's first)
        ref.add(pushes[0][0], pushes[0][1])
        ref.add(pushes[1][0], pushes[1][1])
        ref.prox(pushes[0][2] + pushes[1][2])
        pulled = server.pull(None)
        assert (pulled.version, pulled.samples) == (rnd + 1, 10 * (rnd + 1))
        assert_close(pulled.values, ref.w)
    return server, ref


def test_sync_round_applied_in_worker_order():
    server, ref = _sync_rounds([(1, 0), (0, 1), (1, 0)])
    stats = server.stats()
    assert (stats.version, stats.pushes, stats.staleness_max) == (3, 6, 0)
    assert np.count_nonzero(ref.w == 0.0) > 0  # the L1 part thresholds
    # the result does not depend on arrival order, to the last bit
    other, _ = _sync_rounds([(0, 1), (1, 0), (0, 1)])
    np.testing.assert_array_equal(other.pull(None).values, server.pull(None).values)


def test_sync_push_for_an_old_round_raises():
    server = new_server(3, 1, mode="sync", n_workers=1)
    server.push(0, None, np.ones((3, 1)), 1.0, 0.0, 1, 0)
    assert server.version == 1
    with pytest.raises(RuntimeError, match="round 0 arrived at round 1"):
        server.push(0, None, np.ones((3, 1)), 1.0, 0.0, 1, 0)


def test_pull_when_times_out_quickly():
    server = new_server(3, 1, mode="sync", n_workers=2)
    server.push(0, None, np.ones((3, 1)), 1.0, 0.0, 1, 0)
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="round 1 not completed"):
        server.pull_when(None, 1, 0.05)
    assert time.perf_counter() - start < 5.0
    pulled = server.pull_when(None, 0, 0.05)  # already reached
    assert pulled.version == 0
    np.testing.assert_array_equal(pulled.values, 0.0)


def test_pull_when_wakes_on_round_completion():
    server = new_server(3, 1, mode="sync", n_workers=2)
    box = run_in_thread(server.pull_when, np.array([0, 2], dtype=np.int64), 1, 5.0)
    box["thread"].join(0.1)
    assert box["thread"].is_alive()
    server.push(1, None, np.full((3, 1), 2.0), 1.0, 0.0, 1, 0)
    box["thread"].join(0.1)
    assert box["thread"].is_alive()
    server.push(0, None, np.full((3, 1), 1.0), 1.0, 0.0, 1, 0)
    box["thread"].join(10.0)
    assert not box["thread"].is_alive()
    pulled = box["result"]
    assert (pulled.version, pulled.samples) == (1, 2)
    np.testing.assert_array_equal(pulled.values, [[3.0], [3.0]])


def test_async_entry_points_pull_when_async_push_async():
    server = new_server(4, 1, alpha=1.0, l1_ratio=1.0)

    async def main():
        r = await server.push_async(0, None, np.full((4, 1), 2.0), 1.0, 0.5, 3, 0,
                                    timeout=1.0)
        pulled = await server.pull_when_async(np.array([1], dtype=np.int64), 1, 1.0)
        return r, pulled

    r, pulled = asyncio.run(main())
    assert r == Pushed(1, 3, 0)
    assert (pulled.version, pulled.samples) == (1, 3)
    np.testing.assert_allclose(pulled.values, [[1.5]])


# --------------------------------------------------------------------------
# Bounded staleness (admission control)
# --------------------------------------------------------------------------
def test_max_staleness_one_waits_for_the_straggler():
    rng = np.random.default_rng(6)
    alpha, l1_ratio = 1.0, 1.0
    server = new_server(6, 1, alpha, l1_ratio, n_workers=2, max_staleness=1)
    ref = DenseRef(np.zeros((6, 1)))
    ids = np.arange(6, dtype=np.int64)
    pushes = [(rng.normal(size=(6, 1)), make_steps(rng, 3, alpha, l1_ratio)) for _ in range(3)]

    assert server.pull(ids, worker=0).version == 0
    assert server.pull(ids, worker=1).version == 0
    # worker 1's first push leaves worker 0's read 1 version behind: allowed
    assert server.push(1, ids, pushes[0][0], *ref_compose(pushes[0][1]), 3, 0,
                       timeout=1) == Pushed(1, 3, 0)
    ref.push(ids, *pushes[0])
    assert server.pull(ids, worker=1).version == 1
    # its second would leave worker 0's read 2 behind: it must wait
    box = run_in_thread(server.push, 1, ids, pushes[1][0], *ref_compose(pushes[1][1]), 3, 1,
                        timeout=5)
    box["thread"].join(0.2)
    assert box["thread"].is_alive()
    assert server.version == 1
    # the straggler pushes (staleness 1); then worker 1's waiting push goes in
    assert server.push(0, ids, pushes[2][0], *ref_compose(pushes[2][1]), 3, 0,
                       timeout=1) == Pushed(2, 6, 1)
    box["thread"].join(10.0)
    assert not box["thread"].is_alive()
    assert box["result"] == Pushed(3, 9, 1)
    ref.push(ids, *pushes[2])
    ref.push(ids, *pushes[1])
    assert_close(server.pull(None).values, ref.w)
    stats = server.stats()
    assert (stats.pushes, stats.staleness_sum, stats.staleness_max) == (3, 2, 1)
    assert server.ready == {} and server.reading == {}


def test_ready_pushes_go_oldest_read_first():
    server = new_server(3, 1, n_workers=3, max_staleness=1)
    ids = np.arange(3, dtype=np.int64)
    for w in range(3):
        server.pull(ids, worker=w)
    assert server.push(2, ids, np.full((3, 1), 1.0), 1.0, 0.0, 1, 0, timeout=1).version == 1
    server.pull(ids, worker=2)  # worker 2 reads version 1
    late = run_in_thread(server.push, 2, ids, np.full((3, 1), 2.0), 1.0, 0.0, 1, 1, timeout=5)
    wait_until(lambda: 2 in server.ready)
    early = run_in_thread(server.push, 1, ids, np.full((3, 1), 3.0), 1.0, 0.0, 1, 0, timeout=5)
    wait_until(lambda: 1 in server.ready)
    time.sleep(0.05)
    assert late["thread"].is_alive() and early["thread"].is_alive()
    assert server.version == 1
    assert server.push(0, ids, np.full((3, 1), 4.0), 1.0, 0.0, 1, 0, timeout=1) == Pushed(2, 2, 1)
    early["thread"].join(10.0)
    late["thread"].join(10.0)
    # worker 1 (read at 0) before worker 2 (read at 1), whatever the wake-up order
    assert early["result"] == Pushed(3, 3, 2)
    assert late["result"] == Pushed(4, 4, 2)
    np.testing.assert_array_equal(server.pull(None).values, 10.0)


def test_forget_reader_releases_a_waiting_push():
    server = new_server(2, 1, n_workers=2, max_staleness=1)
    ids = np.arange(2, dtype=np.int64)
    server.pull(ids, worker=0)
    server.pull(ids, worker=1)
    server.push(1, ids, np.ones((2, 1)), 1.0, 0.0, 1, 0, timeout=1)
    server.pull(ids, worker=1)
    box = run_in_thread(server.push, 1, ids, np.ones((2, 1)), 1.0, 0.0, 1, 1, timeout=5)
    box["thread"].join(0.1)
    assert box["thread"].is_alive()
    server.forget_reader(0)
    box["thread"].join(10.0)
    assert box["result"] == Pushed(2, 2, 0)


def test_admission_timeout():
    server = new_server(2, 1, n_workers=2, max_staleness=1)
    ids = np.arange(2, dtype=np.int64)
    server.pull(ids, worker=0)
    server.push(1, ids, np.ones((2, 1)), 1.0, 0.0, 1, 0, timeout=1)
    server.pull(ids, worker=1)
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="push waited"):
        server.push(1, ids, np.ones((2, 1)), 1.0, 0.0, 1, 1, timeout=0.05)
    assert time.perf_counter() - start < 5.0
    assert server.version == 1 and server.ready == {}


def test_max_staleness_zero_single_worker_push_is_admitted():
    server = new_server(4, 1, max_staleness=0)
    ids = np.arange(4, dtype=np.int64)
    assert server.pull(ids, worker=0).version == 0
    # staleness 0 <= 0 and nobody else is reading: must be applied at once
    assert server.push(0, ids, np.ones((4, 1)), 1.0, 0.0, 1, 0, timeout=0.2) == Pushed(1, 1, 0)


def test_max_staleness_zero_two_workers():
    server = new_server(4, 1, n_workers=2, max_staleness=0)
    ids = np.arange(4, dtype=np.int64)
    server.pull(ids, worker=0)
    server.pull(ids, worker=1)
    # applying worker 1's push would leave worker 0's read 1 > 0 versions behind
    box = run_in_thread(server.push, 1, ids, np.full((4, 1), 1.0), 1.0, 0.0, 1, 0, timeout=3)
    try:
        box["thread"].join(0.2)
        assert box["thread"].is_alive()
        assert server.version == 0
        # worker 0 pushes: no read is outstanding any more, so its push (staleness 0)
        # is applied, then worker 1's (staleness 1: both read version 0, one of the two
        # pushes necessarily lands second; no work is dropped)
        assert server.push(0, ids, np.full((4, 1), 2.0), 1.0, 0.0, 1, 0, timeout=0.5) == Pushed(
            1, 1, 0)
        box["thread"].join(10.0)
        assert box.get("result") == Pushed(2, 2, 1)
        np.testing.assert_array_equal(server.pull(None).values, 3.0)
        assert server.stats().staleness_max == 1
    finally:
        server.stop()
        box["thread"].join(5.0)


# --------------------------------------------------------------------------
# stop()
# --------------------------------------------------------------------------
def test_stop_refuses_calls_and_wakes_waiters():
    server = new_server(3, 1, mode="sync", n_workers=2)
    waiting = run_in_thread(server.pull_when, None, 1, 10.0)
    waiting["thread"].join(0.1)
    assert waiting["thread"].is_alive()
    start = time.perf_counter()
    server.stop()
    waiting["thread"].join(10.0)
    assert not waiting["thread"].is_alive()
    assert time.perf_counter() - start < 5.0
    assert isinstance(waiting.get("error"), FitStopped)
    with pytest.raises(FitStopped):
        server.pull(None)
    with pytest.raises(FitStopped):
        server.pull(np.array([0], dtype=np.int64), worker=0)
    with pytest.raises(FitStopped):
        server.push(0, None, np.ones((3, 1)), 1.0, 0.0, 1, 0)
    with pytest.raises(FitStopped):
        server.pull_when(None, 0, 0.05)
    with pytest.raises(FitStopped):
        server.coefficients()
    assert server.version == 0


def test_stop_wakes_a_push_waiting_for_admission():
    server = new_server(2, 1, n_workers=2, max_staleness=1)
    ids = np.arange(2, dtype=np.int64)
    server.pull(ids, worker=0)
    server.push(1, ids, np.ones((2, 1)), 1.0, 0.0, 1, 0)
    server.pull(ids, worker=1)
    box = run_in_thread(server.push, 1, ids, np.ones((2, 1)), 1.0, 0.0, 1, 1, timeout=10)
    box["thread"].join(0.1)
    assert box["thread"].is_alive()
    server.stop()
    box["thread"].join(10.0)
    assert not box["thread"].is_alive()
    assert isinstance(box.get("error"), FitStopped)
    assert server.version == 1 and server.ready == {}


# --------------------------------------------------------------------------
# Through a real Dask actor
# --------------------------------------------------------------------------
def test_block_server_as_dask_actor(client):
    rng = np.random.default_rng(7)
    n_coords, K, alpha, l1_ratio = 9, 2, 0.7, 0.5
    init = rng.normal(size=(n_coords, K))
    fut = client.submit(BlockServer, 0, 1, n_coords, K, ElasticNet(alpha, l1_ratio), 4,
                        "async", 1, None, init, 10, actor=True, key="test-store-actor")
    try:
        actor = fut.result(timeout=10)
        ref = DenseRef(init, 4)
        ids = np.array([0, 4, 6], dtype=np.int64)
        pulled = actor.pull(ids, 0).result(timeout=10)
        assert isinstance(pulled, Pulled)
        np.testing.assert_array_equal(pulled.values, init[ids])
        assert (pulled.version, pulled.samples) == (0, 10)
        for i in range(3):
            delta = rng.normal(size=(3, K))
            steps = make_steps(rng, 4, alpha, l1_ratio, lo=0.1, hi=0.2)
            call = actor.push if i % 2 == 0 else actor.push_async
            r = call(0, ids, delta, *ref_compose(steps), 4, i).result(timeout=10)
            assert r == Pushed(i + 1, 10 + 4 * (i + 1), 0)
            ref.push(ids, delta, steps)
        pulled = actor.pull(None).result(timeout=10)
        assert pulled.version == 3
        assert_close(pulled.values, ref.w)
        pulled = actor.pull_when_async(np.array([8, 4], dtype=np.int64), 3, 5.0).result(
            timeout=10)
        assert_close(pulled.values, ref.w[[8, 4]])
        assert actor.stats().result(timeout=10).pushes == 3
        assert actor.penalty_value().result(timeout=10) == pytest.approx(
            ref.penalty(alpha, l1_ratio), rel=1e-10)
        del actor
    finally:
        client.cancel([fut], force=True)
        del fut

    def n_actors():
        return sum(client.run(lambda dask_worker: len(dask_worker.state.actors)).values())

    wait_until(lambda: n_actors() == 0, timeout=10)


def test_sync_average_rounds_mean_over_touching_pushes():
    """With ``average_rounds`` a coordinate moves by the mean of the deltas that
    touched it: both pushes -> their mean, one push -> its whole delta."""
    server = BlockServer(0, 1, 6, 2, ElasticNet(), -1, "sync", 2, None, average_rounds=True)
    server.w[:] = 1.0
    d0 = np.arange(6.0).reshape(3, 2)
    d1 = -np.ones((2, 2))
    server.push(0, np.array([0, 1, 2]), d0, 1.0, 0.0, 5, 0)
    server.push(1, np.array([2, 4]), d1, 1.0, 0.0, 5, 0)
    want = np.ones((6, 2))
    want[0] += d0[0]
    want[1] += d0[1]
    want[2] += (d0[2] + d1[0]) / 2
    want[4] += d1[1]
    np.testing.assert_array_equal(server.coefficients(), want)
    assert server.version == 1 and server.samples == 10


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_snapshot_terms(mode):
    """Drift is the gradient sum over the rows touching a coordinate; counts are
    kept across snapshots, gradient sums restart; sync sums in key order."""
    server = new_server(n_coords=5, K=1, mode=mode)
    server.reset_snapshot()
    server.add_snapshot((1, 0), np.array([1, 3]), np.array([[2.0], [6.0]]),
                        (np.array([1, 3]), np.array([4.0, 9.0])))
    server.add_snapshot((0, 0), np.array([3, 4]), np.array([[3.0], [4.0]]),
                        (np.array([2, 2]), np.array([16.0, 0.25])))
    server.finish_snapshot()
    pulled = server.pull(np.array([1, 3, 4]), -1, True)
    np.testing.assert_array_equal(pulled.counts, [1, 5, 2])
    np.testing.assert_allclose(pulled.drift.ravel(), [2.0, 9.0 / 5, 2.0])
    # the sweeps' preconditioner: sqrt(rows touching) / sum of squares, 0 where no row
    # touches (coordinate 3: 5 rows, 9 + 16; coordinate 4: 2 rows, 0.25), kept in float32
    np.testing.assert_allclose(server.svrg_terms()[:, 2],
                               [0.0, 1 / 4, 0.0, np.sqrt(5) / 25, np.sqrt(2) / 0.25], rtol=1e-7)
    assert server.precond.dtype == np.float32 and server.counts.dtype == np.int32
    server.reset_snapshot()
    server.add_snapshot((0, 0), None, np.ones((5, 1)))
    server.finish_snapshot()
    pulled = server.pull(None, -1, True)
    np.testing.assert_array_equal(pulled.counts, [0, 1, 0, 5, 2])
    np.testing.assert_allclose(pulled.drift.ravel(), [1.0, 1.0, 1.0, 1 / 5, 1 / 2])


def test_barrier_releases_all_loops_and_starts_the_snapshot():
    """arrive: nobody passes before the last loop arrives; the next snapshot's
    first part starts a new gradient sum; snapshot_done by every loop completes
    the snapshot (drift and penalty scale fixed)."""
    server = new_server(n_coords=4, K=1, n_workers=3)
    server.reset_snapshot()
    server.add_snapshot((0, 0), None, np.ones((4, 1)), (np.array([1, 2, 0, 4]), np.ones(4)))
    server.finish_snapshot(8)
    np.testing.assert_allclose(server.svrg_terms()[:, 1], [8.0, 4.0, 8.0, 2.0])
    passed = []

    def loop(i):
        server.arrive("e1", i, 10)
        passed.append((i, server.drift.copy()))  # the drift, until the first part

    threads = [threading.Thread(target=loop, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert passed == []  # two of three arrived
    loop(2)
    for t in threads:
        t.join(5)
    assert sorted(i for i, _ in passed) == [0, 1, 2]
    drift = [1.0, 0.5, 1.0, 0.25]  # kept until the next snapshot's first part
    assert all(np.array_equal(g.ravel(), drift) for _, g in passed)
    for i in range(3):
        server.add_snapshot((i, 0), np.array([i]), np.array([[2.0]]))
        assert server.drift[i, 0] == 2.0  # the sum, not yet divided by the count
        server.snapshot_done("e1", i, 8)
    np.testing.assert_allclose(server.drift.ravel(), [2.0, 1.0, 2.0 / 1, 0.0])


def test_barrier_times_out_and_stop_wakes_it():
    server = new_server(n_coords=3, K=1, n_workers=2)
    with pytest.raises(TimeoutError, match="barrier"):
        server.arrive("e", 0, 0.1)
    errors = []

    def wait():
        try:
            server.arrive("f", 0, 30)
        except FitStopped as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    server.stop()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1



# --------------------------------------------------------------------------
# Column statistics, going back to a kept iterate, serving another fit
# --------------------------------------------------------------------------
def test_preconditioner_and_column_scale():
    counts = np.array([4, 0, 1, 9, 3])
    energy = np.array([16.0, 0.0, 0.25, 9.0, 0.0])  # column 4: explicit zeros only
    want = [np.sqrt(4) / 16, 0.0, 1 / 0.25, np.sqrt(9) / 9, 0.0]
    np.testing.assert_allclose(blocks.preconditioner(counts, energy), want, rtol=1e-15)
    out = np.full(5, np.nan)
    assert blocks.preconditioner(counts, energy, out=out) is out  # in place (a block's)
    np.testing.assert_allclose(out, want, rtol=1e-15)
    # a column 1000 times larger takes steps 1000**2 times smaller: sqrt(n) / energy
    # is what makes the preconditioned steps invariant to a column's scale
    big = blocks.preconditioner(counts, energy * 1e6)
    np.testing.assert_allclose(big * 1e6, want, rtol=1e-12)
    # the rules' scale: root mean square of the non-zeros, 1 where unknown
    np.testing.assert_allclose(blocks.column_scale(counts, energy),
                               [2.0, 1.0, 0.5, 1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(blocks.column_scale(counts, energy * 1e6),
                               [2e3, 1.0, 5e2, 1e3, 1.0], rtol=1e-12)


def test_begin_serves_another_fit_from_the_coefficients_as_they_are():
    """``partial_fit``'s kept store: the coefficients and sample count carry over;
    the last fit's version, stop, snapshot and column statistics do not; with
    ``undoable`` a restore goes back to where the new fit began."""
    rng = np.random.default_rng(6)
    server = new_server(10, 1, alpha=0.2, l1_ratio=1.0, samples=40)
    for i in range(2):
        ids, delta, steps = random_push(rng, 10, 1, 0.2, 1.0)
        server.push(0, ids, delta, *ref_compose(steps), len(steps), i)
    server.add_snapshot((0, 0), None, np.ones((10, 1)), (np.ones(10, dtype=np.int64),
                                                          np.ones(10)))
    server.finish_snapshot(10)
    server.keep()
    values, samples = server.coefficients(), server.samples
    assert samples > 40 and server.precond.any()
    server.stop()  # the last fit's end
    server.begin(3, undoable=True)
    assert (server.n_workers, server.version, server.samples) == (3, 0, samples)
    np.testing.assert_array_equal(server.pull(None).values, values)  # running again
    # the last fit's snapshot and column statistics are gone (the new data's are taken)
    assert server.drift is None and server.counts is None and server.precond is None
    assert server.energy is None and server.active is None
    # an undoable block takes no proximal maps (the SVRG sweeps apply theirs)
    ids = np.array([1, 4, 7])
    server.push(0, ids, rng.normal(size=(3, 1)), 1.0, 0.0, 3, 0)
    server.restore()  # the new fit's first epoch undone: back to where it began
    np.testing.assert_array_equal(server.coefficients(), values)
    server.begin(1)  # not undoable: there is nothing to go back to
    with pytest.raises(RuntimeError, match="not made undoable"):
        server.restore()


# --------------------------------------------------------------------------
# What a block keeps: memory per coordinate, the undo log, the changes
# --------------------------------------------------------------------------
def _arrays(server):
    """Every NumPy array the block holds (attributes, lists and dicts of them)."""
    found = []
    for value in vars(server).values():
        items = value.values() if isinstance(value, dict) else (
            value if isinstance(value, list | tuple) else [value])
        found += [a for a in items if isinstance(a, np.ndarray)]
    return found


def _svrg_block(n_coords, touched, undoable=True, track=True):
    """A block after an SVRG fit's first snapshot over the ``touched`` coordinates."""
    server = BlockServer(0, 1, n_coords, 1, ElasticNet(1e-3, 1.0), int(touched[-1]), "async",
                         1, None, undoable=undoable, track=track)
    grad = np.linspace(-1.0, 1.0, touched.shape[0])[:, None]
    server.add_snapshot((0, 0), touched, grad, (np.full(touched.shape[0], 3),
                                                np.full(touched.shape[0], 0.5)))
    server.finish_snapshot(1000)
    return server


def test_bytes_per_coefficient_follow_the_data():
    """An SVRG block keeps 24 bytes per coordinate (w, drift, int32 counts, float32
    preconditioner); everything else it holds -- the undo and change log, the
    active coordinates, the history -- grows with the coordinates pushes touched,
    not with the block.  A plain SGD block: w and int32 timestamps, 12 bytes."""
    n_coords = 1 << 16
    rng = np.random.default_rng(0)
    touched = np.sort(rng.choice(n_coords, size=n_coords // 64, replace=False))
    server = _svrg_block(n_coords, touched)
    n_changed = 0
    for i in range(40):  # an epoch: pushes at touched coordinates, then kept
        ids = np.sort(rng.choice(touched, size=200, replace=False))
        server.push(0, ids, rng.normal(size=(200, 1)) * 1e-3, 1.0, 0.0, 200, i)
        n_changed += ids.shape[0]
    server.keep()
    server.changes()
    server.stats()
    arrays = _arrays(server)
    wide = sum(a.nbytes for a in arrays if a.shape[0] == n_coords)
    assert wide == 24 * n_coords
    rest = sum(a.nbytes for a in arrays if a.shape[0] != n_coords)
    # active ids (int32) + their kept values (float64) + history: no log once active is known
    assert rest <= 12 * touched.shape[0] + 2048 < 12 * n_changed
    assert server.energy is None and server.active.shape == touched.shape
    sgd = BlockServer(0, 1, n_coords, 1, ElasticNet(1e-3, 1.0), -1, "async", 1, None)
    sgd.push(0, touched, np.ones((touched.shape[0], 1)), 1.0, 1e-4, 10, 0)
    assert sum(a.nbytes for a in _arrays(sgd) if a.shape[0] == n_coords) == 12 * n_coords


@pytest.mark.parametrize("track", [True, False])
def test_undo_log_restores_the_kept_iterate(track):
    """restore() goes back to the last keep() (the fit's start before any) through the
    log of replaced values, also after the log compacted itself many times."""
    rng = np.random.default_rng(1)
    init = rng.normal(size=(50, 2))
    server = BlockServer(0, 1, 50, 2, ElasticNet(), -1, "async", 1, None, init=init,
                         undoable=True, track=track)

    def pushes(n, version):
        for i in range(n):
            ids = np.sort(rng.choice(50, size=9, replace=False))
            server.push(0, ids, rng.normal(size=(9, 2)), 1.0, 0.0, 9, version + i)
        return version + n

    version = pushes(300, 0)  # > 1024 entries: compacted
    server.restore()
    np.testing.assert_array_equal(server.pull(None).values, init)
    version = pushes(200, version)
    kept = server.pull(None).values
    server.keep()
    pushes(250, version)
    assert not np.array_equal(server.pull(None).values, kept)
    server.restore()
    np.testing.assert_array_equal(server.pull(None).values, kept)
    assert server.log_ids.shape[0] <= 4 * 50 + 2048


@pytest.mark.parametrize("n_touched", [30, 200])
def test_restore_once_active_is_known_goes_back_without_a_log(n_touched):
    """Once the first snapshot fixed the active coordinates (all, when they are many),
    restore() goes back to the last keep() (the snapshot's iterate before any) from
    the kept values of those coordinates, changes() reports them, and the pushes log
    nothing."""
    rng = np.random.default_rng(4)
    n = 300
    touched = np.sort(rng.choice(n, size=n_touched, replace=False))
    server = _svrg_block(n, touched)
    assert (server.active is None) == (n_touched == 200)
    versions = iter(range(1000))

    def pushes():
        for _ in range(20):
            ids = np.sort(rng.choice(touched, size=5, replace=False))
            server.push(0, ids, rng.normal(size=(5, 1)), 1.0, 0.0, 5, next(versions))

    pushes()
    server.restore()
    np.testing.assert_array_equal(server.pull(None).values, 0.0)
    pushes()
    kept = server.pull(None).values
    server.keep()
    pushes()
    assert server.n_log == 0 and not np.array_equal(server.pull(None).values, kept)
    server.restore()
    np.testing.assert_array_equal(server.pull(None).values, kept)
    ids, values = server.changes()
    copy = np.zeros((n, 1))
    copy[slice(None) if ids is None else ids] = values
    np.testing.assert_array_equal(copy, kept)


def test_changes_bring_a_copy_up_to_date():
    """A copy of the block updated with changes() equals the block, through pushes,
    keeps, restores and log compaction; a proximal map (plain SGD) or a block
    that does not track its changes reports the whole block."""
    rng = np.random.default_rng(2)
    n = 400
    touched = np.sort(rng.choice(n, size=40, replace=False))
    server = _svrg_block(n, touched)
    copy = np.zeros((n, 1))
    version = 0
    for epoch in range(6):
        for _ in range(60):
            ids = np.sort(rng.choice(touched, size=7, replace=False))
            server.push(0, ids, rng.normal(size=(7, 1)), 1.0, 0.0, 7, version)
            version += 1
        if epoch % 3 == 2:
            server.restore()
        else:
            server.keep()
        if epoch % 2:
            ids, values = server.changes()
            assert ids is not None and np.isin(ids, touched).all()
            copy[ids] = values
            np.testing.assert_array_equal(copy, server.pull(None).values)
    sgd = BlockServer(0, 1, n, 1, ElasticNet(0.1, 1.0), -1, "async", 1, None, track=True)
    sgd.push(0, touched[:3], np.ones((3, 1)), 1.0, 0.0, 3, 0)
    assert sgd.changes()[0].tolist() == touched[:3].tolist()
    sgd.push(0, touched[:3], np.ones((3, 1)), 1.0, 1e-2, 3, 1)  # shrinks every coordinate
    ids, values = sgd.changes()
    assert ids is None and values.shape == (n, 1)
    untracked = new_server(n, 1)
    assert untracked.changes()[0] is None


def test_penalty_over_the_active_coordinates():
    """Once the data's coordinates are known, the penalty is summed over them plus
    the constant rest (a warm start's values no row touches)."""
    n = 1000
    rng = np.random.default_rng(3)
    touched = np.sort(rng.choice(n, size=30, replace=False))
    init = np.zeros((n, 1))
    init[::7] = 0.5
    server = BlockServer(0, 1, n, 1, ElasticNet(0.1, 0.5), int(touched[-1]), "async", 1, None,
                         init=init, undoable=True, track=True)
    server.add_snapshot((0, 0), touched, np.ones((30, 1)), (np.ones(30, dtype=np.int64),
                                                            np.ones(30)))
    server.finish_snapshot(10)
    assert server.active is not None
    server.push(0, touched, rng.normal(size=(30, 1)), 1.0, 0.0, 30, 0)
    w = server.pull(None).values
    np.testing.assert_allclose(server.stats().penalty,
                               ElasticNet(0.1, 0.5).value(w, int(touched[-1])), rtol=1e-12)
