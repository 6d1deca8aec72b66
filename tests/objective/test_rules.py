"""Update rules (``rules.py``), gradient kernels, ``RuleServer`` and the gradient loop
against plain-numpy references written out here.

The AMSGrad reference is the textbook dense update: every coordinate every step
(a zero gradient and no proximal map where a step does not touch it), so it
shares nothing with the lazy closed-form catch-up under test.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt.grad_kernels import minibatch_grads_csr, minibatch_grads_dense
from dask_asyncopt.kernels import N_PARAMS, P_EPSILON
from dask_asyncopt.losses import LOG_LOSS
from dask_asyncopt.rule_store import RuleServer, merge_rounds
from dask_asyncopt.rules import AMSGradRule, SGDRule, pack_steps
from dask_asyncopt.shards import make_shard
from dask_asyncopt.solvers.adaptive import run_grad_epoch

PENALTIES = {"l1": 1.0, "l2": 0.0, "elasticnet": 0.4}


def soft(x, a):
    return np.sign(x) * np.maximum(np.abs(x) - a, 0.0)


class NumpyAMSGrad:
    """Dense AMSGrad with the elastic-net prox in the sqrt(vhat) metric."""

    def __init__(self, n, K, lr, beta1, beta2, eps, alpha, l1_ratio, skip=-1):
        self.x = np.zeros((n, K))
        self.m = np.zeros((n, K))
        self.v = np.zeros((n, K))
        self.vhat = np.zeros((n, K))
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.alpha, self.l1, self.skip = alpha, l1_ratio, skip
        self.zeroed = 0  # coordinates the prox set to exactly 0, summed over steps

    def step(self, g, omega):
        """``g`` (n, K) dense gradient, ``omega`` (n,) penalty weights."""
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        self.vhat = np.maximum(self.vhat, self.v)
        denom = np.sqrt(self.vhat) + self.eps
        x = self.x - self.lr * self.m / denom
        a = self.lr * self.alpha * omega[:, None] / denom
        if self.skip >= 0:
            a[self.skip] = 0.0
        self.x = soft(x, a * self.l1) / (1 + a * (1 - self.l1))
        self.zeroed += int(((self.x == 0) & (x != 0)).sum())


def random_steps(rng, n, K, n_steps, density):
    steps = []
    for _ in range(n_steps):
        ids = np.flatnonzero(rng.random(n) < density)
        rows = int(rng.integers(1, 20))
        steps.append((ids, rng.normal(size=(len(ids), K)) * rows,
                      rng.uniform(0.5, 3.0, size=len(ids)) * rows, rows))
    return steps


def dense_of(step, n, K):
    ids, g, pen, rows = step
    gd, od = np.zeros((n, K)), np.zeros(n)
    gd[ids] = g / rows
    od[ids] = pen / rows
    return gd, od


@pytest.mark.parametrize("penalty", list(PENALTIES))
@pytest.mark.parametrize("density", [1.0, 0.05])
def test_amsgrad_rule_equals_dense_numpy(penalty, density):
    """Lazy, sparse AMSGrad == dense AMSGrad over 150 steps (dense and sparse steps),
    also when the steps arrive packed several at a time and with reads in between."""
    rng = np.random.default_rng(0)
    n, K, alpha, l1 = 40, 2, 0.5, PENALTIES[penalty]
    rule = AMSGradRule(lr=0.05, beta1=0.9, beta2=0.99, eps=1e-8)
    state, w = rule.init(n, K), np.zeros((n, K))
    ref = NumpyAMSGrad(n, K, 0.05, 0.9, 0.99, 1e-8, alpha, l1, skip=3)
    steps = random_steps(rng, n, K, 150, density)
    i = 0
    while i < len(steps):
        batch = steps[i:i + int(rng.integers(1, 6))]
        rule.update(state, w, *pack_steps(batch), alpha=alpha, l1_ratio=l1, skip=3)
        for step in batch:
            ref.step(*dense_of(step, n, K))
        i += len(batch)
        if rng.random() < 0.3:  # a read of some coordinates mid-way
            ids = np.sort(rng.choice(n, 5, replace=False))
            rule.materialise(state, w, ids)
            np.testing.assert_allclose(w[ids], ref.x[ids], rtol=1e-10, atol=1e-12)
    rule.materialise(state, w)
    assert state["t"][0] == 150
    np.testing.assert_allclose(w, ref.x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state["m"], ref.m, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(state["vhat"], ref.vhat, rtol=1e-10, atol=1e-14)
    if penalty != "l2":
        assert ref.zeroed > 0  # the L1 prox really acted


def test_amsgrad_set_lr_catches_up_with_the_old_step():
    rng = np.random.default_rng(1)
    n, K = 30, 1
    rule = AMSGradRule(lr=0.1)
    state, w = rule.init(n, K), np.zeros((n, K))
    ref = NumpyAMSGrad(n, K, 0.1, 0.9, 0.999, 1e-8, 0.01, 1.0)
    for lr in [0.1, 0.02]:
        rule.set_lr(state, w, lr)
        ref.lr = lr
        for step in random_steps(rng, n, K, 60, 0.1):
            rule.update(state, w, *pack_steps([step]), alpha=0.01, l1_ratio=1.0, skip=-1)
            ref.step(*dense_of(step, n, K))
    rule.materialise(state, w)
    np.testing.assert_allclose(w, ref.x, rtol=1e-10, atol=1e-12)


def test_sgd_rule_equals_numpy():
    rng = np.random.default_rng(2)
    n, K, lr, alpha, l1 = 25, 2, 0.1, 0.1, 0.4
    rule = SGDRule(lr)
    state, w = rule.init(n, K), np.zeros((n, K))
    x = np.zeros((n, K))
    steps = random_steps(rng, n, K, 120, 0.2)
    rule.update(state, w, *pack_steps(steps), alpha=alpha, l1_ratio=l1, skip=0)
    for step in steps:
        g, omega = dense_of(step, n, K)
        a = lr * alpha * omega[:, None] * np.ones((1, K))
        a[0] = 0.0
        x = soft(x - lr * g, a * l1) / (1 + a * (1 - l1))
    np.testing.assert_allclose(w, x, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------
# Minibatch gradient kernels
# --------------------------------------------------------------------------
def logistic_derivative(p, y):
    return -y / (np.exp(p * y) + 1.0)


@pytest.mark.parametrize("vr", [False, True])
def test_minibatch_grads_csr_equal_numpy(vr):
    rng = np.random.default_rng(3)
    n_rows, n_local, K, batch = 23, 15, 2, 5
    X = sp.random(n_rows, n_local - 1, density=0.2, format="csr", random_state=4)
    Y = np.where(rng.random((n_rows, K)) < 0.5, 1.0, -1.0)
    w = rng.normal(size=(n_local, K))
    icpt = n_local - 1
    rows = rng.permutation(n_rows).astype(np.int64)
    dsnap = rng.normal(size=(n_rows, K)) * 0.1
    drift = rng.normal(size=(n_local, K))
    pen_scale = rng.uniform(1, 4, size=n_local)
    n_steps = -(-n_rows // batch)
    size = X.nnz + n_steps
    ptr, idx = np.empty(n_steps + 1, dtype=np.int64), np.empty(size, dtype=np.int64)
    g, pen, out_rows = np.empty((size, K)), np.empty(size), np.empty(n_steps, dtype=np.int64)
    minibatch_grads_csr(X.indptr, X.indices, X.data, Y, rows, w, icpt, LOG_LOSS, 0.1, batch,
                        vr, dsnap, drift, pen_scale, ptr, idx, g, pen, out_rows)
    Xd = np.hstack([X.toarray(), np.ones((n_rows, 1))])
    for s in range(n_steps):
        r = rows[s * batch:(s + 1) * batch]
        d = logistic_derivative(Xd[r] @ w, Y[r]) - (dsnap[r] if vr else 0.0)
        touches = (Xd[r] != 0).sum(axis=0)
        exp_ids = np.flatnonzero(touches)
        exp_g = (Xd[r].T @ d + (touches[:, None] * drift if vr else 0.0))[exp_ids]
        sl = slice(ptr[s], ptr[s + 1])
        np.testing.assert_array_equal(idx[sl], exp_ids)
        np.testing.assert_allclose(g[sl], exp_g, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(pen[sl], (touches * pen_scale)[exp_ids], rtol=1e-12)
        assert out_rows[s] == len(r)


def test_minibatch_grads_dense_equal_numpy():
    rng = np.random.default_rng(5)
    n_rows, n_local, K, batch = 17, 6, 1, 4
    X = rng.normal(size=(n_rows, n_local))
    Y = np.where(rng.random((n_rows, K)) < 0.5, 1.0, -1.0)
    w = rng.normal(size=(n_local, K))
    rows = rng.permutation(n_rows).astype(np.int64)
    dsnap = rng.normal(size=(n_rows, K)) * 0.1
    drift = rng.normal(size=(n_local, K))
    pen_scale = np.ones(n_local)
    n_steps = -(-n_rows // batch)
    g, pen = np.empty((n_steps * n_local, K)), np.empty(n_steps * n_local)
    out_rows = np.empty(n_steps, dtype=np.int64)
    minibatch_grads_dense(X, Y, rows, w, LOG_LOSS, 0.1, batch, True, dsnap, drift, pen_scale,
                          g, pen, out_rows)
    for s in range(n_steps):
        r = rows[s * batch:(s + 1) * batch]
        d = logistic_derivative(X[r] @ w, Y[r]) - dsnap[r]
        np.testing.assert_allclose(g[s * n_local:(s + 1) * n_local],
                                   X[r].T @ d + len(r) * drift, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(pen[s * n_local:(s + 1) * n_local], len(r))


# --------------------------------------------------------------------------
# RuleServer
# --------------------------------------------------------------------------
def server(mode="async", n_workers=2, max_staleness=None, n=20):
    return RuleServer(0, 1, n, 1, 0.01, 1.0, -1, mode, n_workers, max_staleness,
                      rule=AMSGradRule(lr=0.05))


def packed(rng, n, n_steps):
    ptr, ids, g, pen, scale = pack_steps(random_steps(rng, n, 1, n_steps, 0.3))
    return ptr, ids, g, pen, np.rint(1.0 / scale).astype(np.int64)


def test_rule_server_counts_a_version_and_staleness_per_step():
    rng = np.random.default_rng(6)
    s = server()
    _, v0, _ = s.pull(np.arange(5), worker=0)
    _, v1, _ = s.pull(np.arange(5), worker=1)
    assert s.push_grads(0, *packed(rng, 20, 3), v0)[0] == 3
    version, samples, stale = s.push_grads(1, *packed(rng, 20, 2), v1)
    assert version == 5 and stale == 4  # read at 0, its steps applied at versions 3 and 4
    st = s.stats()
    assert st["pushes"] == 5 and st["staleness_max"] == 4
    assert st["staleness_sum"] == (0 + 1 + 2) + (3 + 4)


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
        assert s.stats()["version"] == 1
    ref = server("async", n_workers=1)
    ptr, ids, g, pen, rows = merge_rounds([a, b], 1)
    assert ptr.shape[0] == 4 and rows[0] == a[4][0] + b[4][0] and rows[2] == a[4][2]
    ref.push_grads(0, ptr, ids, g, pen, rows, 0)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], ref.coefficients(), rtol=1e-12)


# --------------------------------------------------------------------------
# The worker loop on the cluster, one worker, against numpy AMSGrad
# --------------------------------------------------------------------------
def _loop_config(n_samples, batch, n_outputs):
    params = np.zeros(N_PARAMS)
    params[P_EPSILON] = 0.1
    return {"mode": "async", "problem": {"loss": LOG_LOSS, "schedule": 0, "params": params},
            "n_loops": 1, "timeout": 60.0, "bounded": False,
            "grad": {"vr": False, "batch": batch, "n_samples": n_samples}}


@pytest.mark.parametrize("kind,steps", [("sparse", 1), ("dense", 1), ("sparse", 4)])
def test_one_worker_loop_equals_numpy_amsgrad(client, kind, steps):
    """``run_grad_epoch`` (Numba gradients, 2 block actors -- one on the loop's worker,
    one remote) over 2 epochs == numpy AMSGrad on the same minibatches in the same
    order.  ``steps`` gradients per exchange are all computed at the pulled weights."""
    rng = np.random.default_rng(8)
    if kind == "sparse":
        n, d, batch = 600, 40, 10
        X = sp.random(n, d, density=0.1, format="csr", random_state=9)
    else:
        n, d, batch = 200, 5, 4
        X = rng.normal(size=(n, d))
    y = np.where(X @ rng.normal(size=d) + rng.logistic(size=n) > 0, 1.0, -1.0)
    Y = y[:, None]
    alpha, l1, lr, n_blocks = 0.01, 1.0, 0.05, 2
    Xd = np.hstack([sp.csr_matrix(X).toarray(), np.ones((n, 1))])  # intercept last
    counts = (Xd != 0).sum(axis=0)
    workers = sorted(client.nthreads())
    layout = dict(n_features=d, n_blocks=n_blocks, fit_intercept=True,
                  batch_size=batch * steps, seed=11)
    shard = client.submit(make_shard, X, Y, **layout, workers=[workers[0]], pure=False)
    icpt_block, icpt_local = d % n_blocks, d // n_blocks
    futures = [client.submit(
        RuleServer, b, n_blocks, len(range(b, d + 1, n_blocks)), 1, alpha, l1,
        icpt_local if b == icpt_block else -1, "async", 1, None, rule=AMSGradRule(lr),
        actor=True, workers=[workers[b]], pure=False) for b in range(n_blocks)]
    actors = client.gather(futures)
    for b, actor in enumerate(actors):
        actor.add_snapshot((0, 0), None, np.zeros((len(counts[b::n_blocks]), 1)),
                           (counts[b::n_blocks], np.ones(len(counts[b::n_blocks])))).result()
    config = _loop_config(n, batch, 1)
    for _ in range(2):
        report = client.submit(run_grad_epoch, shard, actors, config, 0, 0,
                               workers=[workers[0]], pure=False).result()
        assert report["samples"] == n
    w = np.empty((d + 1, 1))
    for b, actor in enumerate(actors):
        w[b::n_blocks] = actor.coefficients().result()
    total_stale = sum(a.stats().result()["staleness_sum"] for a in actors)
    del actors
    client.cancel(futures + [shard], force=True)

    # numpy: replay the shard's order (same construction and seed, run here)
    local = make_shard(X, Y, **layout)
    ref = NumpyAMSGrad(d + 1, 1, lr, 0.9, 0.999, 1e-8, alpha, l1, skip=d)
    n_grads = 0
    for _ in range(2 * len(local.chunks)):
        chunk, rows = local.next_chunk()
        start = local.current * batch * steps
        pulled = ref.x.copy()
        for s in range(0, len(rows), batch):
            r = start + rows[s:s + batch]
            dl = logistic_derivative(Xd[r] @ pulled, Y[r])
            touches = (Xd[r] != 0).sum(axis=0)
            ref.step(Xd[r].T @ dl / len(r), touches / len(r) * n / np.maximum(counts, 1))
            n_grads += 1
    assert n_grads >= 100
    np.testing.assert_allclose(w, ref.x, rtol=1e-9, atol=1e-12)
    assert np.abs(w).max() > 0.1
    assert kind == "dense" or ref.zeroed > 0  # the L1 prox acted
    per_exchange = steps * (steps - 1) // 2  # gradient i of an exchange is i versions stale
    assert total_stale == n_blocks * per_exchange * len(local.chunks) * 2
