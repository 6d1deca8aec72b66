"""Gradient exchanges of an update rule (``solvers/gradients.py``, ``optimizer="amsgrad"``):
fits against the exact optimum (scikit-learn), one worker loop against NumPy AMSGrad on
real actors, and the exchange sizes and per-block split."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor
from dask_asyncopt.data.shards import ShardLayout, make_shard
from dask_asyncopt.datasets import make_sparse_classification
from dask_asyncopt.kernels.sweeps import N_PARAMS, P_EPSILON
from dask_asyncopt.objective.losses import LOG_LOSS
from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.rules import AMSGradRule
from dask_asyncopt.solvers import gradients
from dask_asyncopt.solvers.config import GradOptions, KernelArgs, LoopConfig
from dask_asyncopt.solvers.gradients import run_grad_epoch
from dask_asyncopt.store.rule_blocks import RuleServer

from ..conftest import cluster_is_clean, logistic_objective, returned_objective
from ..reference import NumpyAMSGrad, logistic_derivative

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
    np.testing.assert_allclose(returned_objective(h), f, rtol=1e-9)
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


def _loop_config(n_samples, batch, penalty):
    params = np.zeros(N_PARAMS)
    params[P_EPSILON] = 0.1
    return LoopConfig(mode="async", kernel=KernelArgs(LOG_LOSS, 0, params), penalty=penalty,
                      n_loops=1, timeout=60.0, bounded=False,
                      grad=GradOptions(vr=False, batch=batch, n_samples=n_samples))


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
    layout = ShardLayout(n_features=d, n_blocks=n_blocks, fit_intercept=True,
                         batch_size=batch * steps)
    shard = client.submit(make_shard, X, Y, layout, 11, workers=[workers[0]], pure=False)
    icpt_block, icpt_local = d % n_blocks, d // n_blocks
    futures = [client.submit(
        RuleServer, b, n_blocks, len(range(b, d + 1, n_blocks)), 1, ElasticNet(alpha, l1),
        icpt_local if b == icpt_block else -1, "async", 1, None, rule=AMSGradRule(lr),
        actor=True, workers=[workers[b]], pure=False) for b in range(n_blocks)]
    actors = client.gather(futures)
    for b, actor in enumerate(actors):
        actor.add_snapshot((0, 0), None, np.zeros((len(counts[b::n_blocks]), 1)),
                           (counts[b::n_blocks], np.ones(len(counts[b::n_blocks])))).result()
    config = _loop_config(n, batch, ElasticNet(alpha, l1))
    for _ in range(2):
        report = client.submit(run_grad_epoch, shard, actors, config, 0, 0,
                               workers=[workers[0]], pure=False).result()
        assert report.samples == n
    w = np.empty((d + 1, 1))
    for b, actor in enumerate(actors):
        w[b::n_blocks] = actor.coefficients().result()
    total_stale = sum(a.stats().result().staleness_sum for a in actors)
    del actors
    client.cancel(futures + [shard], force=True)

    # numpy: replay the shard's order (same construction and seed, run here)
    local = make_shard(X, Y, layout, 11)
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


def test_exchange_sizes():
    """Rows per exchange and per gradient (the documented sizes)."""
    assert gradients.exchange_sizes(12_288) == (128, 32)  # 4 gradients of 32 rows
    assert gradients.exchange_sizes(1_000) == (128, 32)
    rows, batch = gradients.exchange_sizes(100_000)
    assert (rows, batch) == (1042, 92) and -(-rows // batch) == 12
    assert gradients.exchange_sizes(100_000, batch_size=500) == (500, 32)
    assert gradients.exchange_sizes(100_000, batch_size=20) == (20, 20)
    # max_staleness: one gradient per exchange
    assert gradients.exchange_sizes(100_000, bounded=True) == (1042, 1042)
    assert gradients.exchange_sizes(5_000, batch_size=64, bounded=True) == (64, 64)


def test_split_blocks_gives_each_block_its_entries_in_its_own_ids():
    X = sp.random(12, 9, density=0.4, format="csr", random_state=3)
    chunk = make_shard(X, np.ones((12, 1)), ShardLayout(9, 2, True, 12), 0).chunks[0]
    rng = np.random.default_rng(0)
    n_local = chunk.bounds[-1]
    steps = [np.sort(rng.choice(n_local, size=k, replace=False)) for k in (4, 0, 7)]
    ptr = np.concatenate([[0], np.cumsum([len(s) for s in steps])]).astype(np.int64)
    idx = np.concatenate(steps).astype(np.int64)
    g = rng.normal(size=(idx.shape[0], 1))
    pen = rng.uniform(size=idx.shape[0])
    parts = gradients.split_blocks(chunk, ptr, idx, g, pen)
    assert len(parts) == 2
    b = chunk.bounds
    for i, (bptr, ids, bg, bpen) in enumerate(parts):
        assert bptr.shape == (4,) and bptr.dtype == np.int64
        for s in range(3):
            mine = [e for e in range(ptr[s], ptr[s + 1]) if b[i] <= idx[e] < b[i + 1]]
            sl = slice(bptr[s], bptr[s + 1])
            np.testing.assert_array_equal(ids[sl], chunk.block_ids[i][idx[mine] - b[i]])
            np.testing.assert_array_equal(bg[sl], g[mine])
            np.testing.assert_array_equal(bpen[sl], pen[mine])
    assert sum(p[0][-1] for p in parts) == idx.shape[0]
