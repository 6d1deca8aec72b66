"""Parameter blocks updated by a rule from pushed gradients (``store/rule_blocks.py``:
``RuleServer``) against the masked NumPy AMSGrad of ``tests/reference.py``."""

import asyncio
import threading

import numpy as np
import pytest

from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.rules import AMSGradRule, pack_steps
from dask_asyncopt.store.replies import Pushed
from dask_asyncopt.store.rule_blocks import RuleServer, merge_rounds

from ..reference import NumpyAMSGrad, dense_of, random_steps


def server(mode="async", n_workers=2, max_staleness=None, n=20, unpenalised=-1):
    return RuleServer(0, 1, n, 1, ElasticNet(0.01, 1.0), unpenalised, mode, n_workers,
                      max_staleness, rule=AMSGradRule(lr=0.05))


def packed(rng, n, n_steps, steps=None):
    steps = random_steps(rng, n, 1, n_steps, 0.3) if steps is None else steps
    ptr, ids, g, pen, scale = pack_steps(steps)
    return ptr, ids, g, pen, np.rint(1.0 / scale).astype(np.int64)


def test_rule_server_counts_a_version_and_staleness_per_step():
    rng = np.random.default_rng(6)
    s = server()
    v0 = s.pull(np.arange(5), worker=0).version
    v1 = s.pull(np.arange(5), worker=1).version
    assert s.push_grads(0, *packed(rng, 20, 3), v0).version == 3
    pushed = s.push_grads(1, *packed(rng, 20, 2), v1)
    assert isinstance(pushed, Pushed)
    # read at 0, its steps applied at versions 3 and 4
    assert pushed.version == 5 and pushed.staleness == 4
    st = s.stats()
    assert st.pushes == 5 and st.staleness_max == 4
    assert st.staleness_sum == (0 + 1 + 2) + (3 + 4)


def test_rule_server_sync_round_is_the_all_reduce_minibatch():
    """A sync round applies, per step index, the summed gradient of all workers over
    their summed rows -- the same as one push of the merged steps, in any arrival order."""
    rng = np.random.default_rng(7)
    a, b = packed(rng, 20, 3), packed(rng, 20, 2)
    results = []
    for order in [(0, 1), (1, 0)]:
        s = server("sync")
        for worker in order:
            s.push_grads(worker, *(a if worker == 0 else b), 0)
        results.append(s.coefficients())
        assert s.stats().version == 1
    ref = server("async", n_workers=1)
    ptr, ids, g, pen, rows = merge_rounds([a, b], 1)
    assert ptr.shape[0] == 4 and rows[0] == a[4][0] + b[4][0] and rows[2] == a[4][2]
    ref.push_grads(0, ptr, ids, g, pen, rows, 0)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], ref.coefficients(), rtol=1e-12)


def test_merge_rounds_sums_step_by_step():
    """Step ``i`` of the merged push: the union of the pushes' step-``i`` ids, their
    gradient and penalty sums added, their rows added."""
    a = (np.array([0, 2, 3]), np.array([1, 3, 5]), np.array([[1.0], [2.0], [3.0]]),
         np.array([1.0, 1.0, 1.0]), np.array([4, 5]))
    b = (np.array([0, 2]), np.array([3, 4]), np.array([[10.0], [20.0]]),
         np.array([2.0, 2.0]), np.array([6]))
    ptr, ids, g, pen, rows = merge_rounds([a, b], 1)
    np.testing.assert_array_equal(ptr, [0, 3, 4])
    np.testing.assert_array_equal(ids, [1, 3, 4, 5])
    np.testing.assert_array_equal(g.ravel(), [1.0, 12.0, 20.0, 3.0])
    np.testing.assert_array_equal(pen, [1.0, 3.0, 2.0, 1.0])
    np.testing.assert_array_equal(rows, [10, 5])


def test_pulls_penalty_and_moments_are_the_reference_iterates():
    """Every read (a pull, the penalty, the rule's moments) sees the masked NumPy
    AMSGrad's iterate, across a change of step; moments come as copies."""
    rng = np.random.default_rng(8)
    n = 20
    s = server(n_workers=1, unpenalised=4)
    ref = NumpyAMSGrad(n, 1, 0.05, 0.9, 0.999, 1e-8, 0.01, 1.0, skip=4)
    for lr in (0.05, 0.01):
        s.set_lr(lr)
        ref.lr = lr
        for _ in range(6):
            steps = random_steps(rng, n, 1, 3, 0.2)
            s.push_grads(0, *packed(rng, n, 0, steps), s.version)
            for step in steps:
                ref.step(*dense_of(step, n, 1))
            ids = np.sort(rng.choice(n, 4, replace=False))
            np.testing.assert_allclose(s.pull(ids).values, ref.x[ids], rtol=1e-10,
                                       atol=1e-12)
    w = ref.x[np.arange(n) != 4]
    assert s.penalty_value() == pytest.approx(0.01 * np.abs(w).sum(), rel=1e-10)
    m, v, vhat = s.moments()
    assert s.state.t[0] == 36
    np.testing.assert_allclose(m, ref.m, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(vhat, ref.vhat, rtol=1e-10, atol=1e-14)
    m[:] = 0.0  # a copy
    assert np.abs(s.moments()[0]).max() > 0
    np.testing.assert_allclose(s.coefficients(), ref.x, rtol=1e-10, atol=1e-12)


def test_given_moments_are_where_the_rule_starts():
    """A warm start's moments (``moments=``) are the state the first step updates."""
    n = 6
    moments = tuple(np.full((n, 1), x) for x in (0.5, 4.0, 4.0))
    s = RuleServer(0, 1, n, 1, ElasticNet(), -1, "async", 1, None,
                   rule=AMSGradRule(lr=0.1, beta1=0.5, beta2=0.5, eps=0.0), moments=moments)
    s.push_grads(0, *packed(None, n, 0, [(np.array([2]), np.array([[1.0]]), np.ones(1), 1)]),
                 0)
    # m = (0.5 + 1) / 2, v = (4 + 1) / 2, vhat = max(4, 2.5): x = -0.1 * 0.75 / 2
    assert s.coefficients()[2, 0] == pytest.approx(-0.0375, rel=1e-14)
    assert s.coefficients()[0, 0] == 0.0 and s.moments()[0][0, 0] == 0.5


def test_bounded_push_waits_for_the_straggler_and_async_twin():
    """Admission under ``max_staleness`` counts every step of a push."""
    rng = np.random.default_rng(9)
    s = server(max_staleness=2)
    s.pull(np.arange(3), worker=0)  # worker 0 reads version 0 and stalls
    s.pull(np.arange(3), worker=1)
    assert s.push_grads(1, *packed(rng, 20, 2), 0, timeout=5).version == 2  # 2 <= 2
    s.pull(np.arange(3), worker=1)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault(
        "result", s.push_grads(1, *packed(rng, 20, 1), 2, timeout=30)))
    t.start()
    t.join(0.2)
    assert t.is_alive() and s.version == 2  # would leave worker 0's read 3 behind
    assert s.push_grads(0, *packed(rng, 20, 1), 0, timeout=5) == Pushed(3, s.samples, 2)
    t.join(30)
    assert box["result"].version == 4

    async def main():
        return await s.push_grads_async(0, *packed(rng, 20, 1), 4, timeout=5)

    assert asyncio.run(main()).version == 5
