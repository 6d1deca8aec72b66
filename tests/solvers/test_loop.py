"""The worker loop on coefficient blocks (``solvers/loop.py``): one loop's epoch, snapshot
and loss passes on real block actors (thread and process workers) against the
references of ``tests/reference.py``; how a loop's update is combined with the others';
its work arrays; summing a snapshot per loop or per chunk."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.data.shards import ShardLayout, block_sizes, make_shard
from dask_asyncopt.datasets import make_sparse_classification
from dask_asyncopt.kernels.sweeps import (
    N_PARAMS,
    P_ALPHA,
    P_EPSILON,
    P_ETA0,
    P_INTERCEPT_DECAY,
    P_L1_RATIO,
    P_POWER_T,
    P_T0,
)
from dask_asyncopt.objective.losses import LOG_LOSS
from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.schedules import INVSCALING
from dask_asyncopt.solvers import loop
from dask_asyncopt.solvers.config import KernelArgs, LoopConfig, PassReport
from dask_asyncopt.solvers.handles import bind
from dask_asyncopt.store.blocks import BlockServer

from ..conftest import cluster_is_clean
from ..reference import DenseRef, clipped_dloss, ref_loss, ref_sweep

N, D, N_BLOCKS, BATCH = 200, 30, 2, 50
ETA0, POWER_T, ALPHA, L1_RATIO, DECAY = 0.5, 0.5, 0.01, 0.5, 0.3


def _problem():
    rng = np.random.default_rng(0)
    X = sp.random(N, D, density=0.15, format="csr", random_state=1)
    X.data[:] = rng.normal(size=X.nnz)
    Y = np.where(X @ rng.normal(size=D) + 0.3 * rng.normal(size=N) > 0, 1.0, -1.0)[:, None]
    return X, Y


def _config():
    params = np.zeros(N_PARAMS)
    params[[P_ETA0, P_ALPHA, P_L1_RATIO, P_T0, P_POWER_T, P_EPSILON, P_INTERCEPT_DECAY]] = (
        ETA0, ALPHA, L1_RATIO, 0.0, POWER_T, 0.1, DECAY)
    return LoopConfig(mode="async", kernel=KernelArgs(LOG_LOSS, INVSCALING, params),
                      penalty=ElasticNet(ALPHA, L1_RATIO), n_loops=1, timeout=60.0,
                      block_sizes=tuple(block_sizes(D + 1, N_BLOCKS)))


def _blocks(client, init):
    """One ``BlockServer`` actor per block on each worker: block ``b`` holds global
    coordinates ``b::N_BLOCKS``, the intercept (coordinate ``D``) unpenalised."""
    workers = sorted(client.nthreads())
    sizes = block_sizes(D + 1, N_BLOCKS)
    return [client.submit(BlockServer, b, N_BLOCKS, size, 1, ElasticNet(ALPHA, L1_RATIO),
                          D // N_BLOCKS if b == D % N_BLOCKS else -1, "async", 1, None,
                          init[b::N_BLOCKS], actor=True, workers=[workers[b]], pure=False)
            for b, size in enumerate(sizes)]


def _in_task(shard, actors, config, what):
    """A loop's pass as the fit runs it: a task next to the shard, the blocks bound
    from there (the block on this worker called directly, the other through its
    actor on a process cluster)."""
    handles = bind(actors, shard, 0)
    local = [h.local for h in handles]
    if what == "epoch":
        return loop.sweep_epoch(shard, handles, config, 0, 0), local
    if what == "snapshot":
        return loop.snapshot_pass(shard, handles, config, 0, True), local
    return loop.loss_pass(shard, handles, config, 0), local


def _model(actors, timeout=30):
    full = np.empty((D + 1, 1))
    for b, actor in enumerate(actors):
        full[b::N_BLOCKS] = actor.coefficients().result(timeout)
    return full


def _setup(client, init):
    X, Y = _problem()
    layout = ShardLayout(D, N_BLOCKS, True, BATCH)
    worker = sorted(client.nthreads())[0]
    shard = client.submit(make_shard, X, Y, layout, 5, workers=[worker], pure=False)
    futures = _blocks(client, init)
    return X, Y, layout, worker, shard, futures, client.gather(futures)


@pytest.mark.parametrize("where", ["client", "process_client"])
def test_sweep_epoch_on_real_blocks_equals_sequential_prox_sgd(request, where):
    """One loop's epoch (pull, Numba sweep, push with the chunk's prox map) on two
    block actors == per-sample proximal SGD in Python over the same rows in the
    same order, the prox applied to every penalised coordinate after each chunk."""
    client = request.getfixturevalue(where)
    init = np.random.default_rng(3).normal(scale=0.1, size=(D + 1, 1))
    X, Y, layout, worker, shard, futures, actors = _setup(client, init)
    try:
        report, local = client.submit(_in_task, shard, actors, _config(), "epoch",
                                      workers=[worker], pure=False).result(60)
        got = _model(actors)
    finally:
        del actors
        client.cancel(futures + [shard], force=True)
    assert local == ([True, True] if where == "client" else [True, False])
    assert isinstance(report, PassReport)
    assert (report.worker, report.samples, report.steps) == (0, N, N // BATCH)
    # the reference: replay the shard's chunk and row order (same construction, seed)
    replay = make_shard(X, Y, layout, 5)
    ref = DenseRef(init, unpenalised=D)
    Xd = np.hstack([X.toarray(), np.zeros((N, 1))])  # column D: the intercept's slot
    params = {"eta0": ETA0, "alpha": ALPHA, "l1_ratio": L1_RATIO, "t0": 0.0,
              "power_t": POWER_T, "epsilon": 0.1, "decay": DECAY}
    loss_sum, done = 0.0, 0
    for _ in range(len(replay.chunks)):
        chunk, rows = replay.next_chunk()
        rows = replay.current * BATCH + rows  # the chunk's rows in X
        part, d, s, w = ref_sweep(Xd, Y, rows, ref.w, D, "log_loss", "invscaling", params,
                                  done + 1, 1)
        ref.w = w
        ref.prox([(s, d)])  # the chunk's maps, composed: applied lazily by the blocks
        loss_sum += part
        done += len(rows)
    np.testing.assert_allclose(got, ref.w, rtol=1e-10, atol=1e-13)
    assert report.loss_sum == pytest.approx(loss_sum, rel=1e-10)
    assert (got[:D] == 0).any() and not (init == 0).any()  # the L1 part acted
    assert cluster_is_clean(client)


@pytest.mark.parametrize("where", ["client", "process_client"])
def test_snapshot_and_loss_passes_on_real_blocks(request, where):
    """A fit's first snapshot pass adds the full gradient and the column statistics
    to the blocks (drift, penalty scale and preconditioner once the driver finishes
    it); the loss pass is the exact training loss of the blocks' coefficients."""
    client = request.getfixturevalue(where)
    init = np.random.default_rng(4).normal(scale=0.3, size=(D + 1, 1))
    X, Y, layout, worker, shard, futures, actors = _setup(client, init)
    config = _config()
    try:
        snap, _ = client.submit(_in_task, shard, actors, config, "snapshot", workers=[worker],
                                pure=False).result(60)
        for actor in actors:
            actor.finish_snapshot(N).result(30)
        terms = [actor.svrg_terms().result(30) for actor in actors]
        counts = [actor.pull(None, -1, True).result(30).counts for actor in actors]
        lost, _ = client.submit(_in_task, shard, actors, config, "loss", workers=[worker],
                                pure=False).result(60)
    finally:
        del actors
        client.cancel(futures + [shard], force=True)
    Xi = np.hstack([X.toarray(), np.ones((N, 1))])  # the intercept: a column of ones
    p = Xi @ init[:, 0]
    losses = ref_loss("log_loss", p, Y[:, 0], 0.1)
    dloss = np.array([clipped_dloss("log_loss", p[r], Y[r, 0], 0.1) for r in range(N)])
    grad = Xi.T @ dloss
    n_j = (Xi != 0).sum(axis=0)
    energy = (Xi ** 2).sum(axis=0)
    assert snap.loss_sum == pytest.approx(losses.sum(), rel=1e-12)
    assert lost.loss_sum == pytest.approx(losses.sum(), rel=1e-12)
    assert (snap.samples, lost.samples) == (N, N)
    assert snap.max_sq_norm == pytest.approx((X.toarray() ** 2).sum(axis=1).max(), rel=1e-12)
    for b in range(N_BLOCKS):
        drift, scale, precond = terms[b][:, :1], terms[b][:, 1], terms[b][:, 2]
        mine = slice(b, None, N_BLOCKS)
        np.testing.assert_array_equal(counts[b], n_j[mine])
        np.testing.assert_allclose(drift[:, 0], grad[mine] / np.maximum(n_j[mine], 1),
                                   rtol=1e-12, atol=1e-15)
        want_scale = N / np.maximum(n_j[mine], 1)
        if b == D % N_BLOCKS:
            want_scale[D // N_BLOCKS] = 0.0  # the intercept is not penalised
        np.testing.assert_allclose(scale, want_scale, rtol=1e-12)
        # the preconditioner sqrt(n_j) / energy_j (0 for a column no row touches)
        with np.errstate(divide="ignore", invalid="ignore"):
            want_pre = np.where(energy[mine] > 0, np.sqrt(n_j[mine]) / energy[mine], 0.0)
        np.testing.assert_allclose(precond, want_pre, rtol=1e-7)  # kept in float32
    assert cluster_is_clean(client)


def test_combine_adds_sparse_updates_and_averages_dense_ones_and_the_intercept():
    X = sp.random(8, 6, density=0.5, format="csr", random_state=0)
    csr = make_shard(X, np.ones((8, 1)), ShardLayout(6, 1, True, 8), 0).chunks[0]
    dense = make_shard(X.toarray(), np.ones((8, 1)), ShardLayout(6, 1, False, 8), 0).chunks[0]
    delta = np.arange(1.0, csr.bounds[-1] + 1.0)[:, None]
    # one loop: unchanged
    d, pd, ps = loop._combine(csr, delta.copy(), 1.5, 0.2, 1)
    np.testing.assert_array_equal(d, delta)
    assert (pd, ps) == (1.5, 0.2)
    # sparse chunk: the intercept's share only
    d, pd, ps = loop._combine(csr, delta.copy(), 1.5, 0.2, 4)
    want = delta.copy()
    want[csr.intercept] /= 4
    np.testing.assert_array_equal(d, want)
    assert (pd, ps) == (1.5, 0.2)
    # dense chunk: a 1/n share of the update and of the prox map
    delta = np.arange(1.0, 7.0)[:, None]
    d, pd, ps = loop._combine(dense, delta.copy(), 1.5, 0.2, 4)
    np.testing.assert_allclose(d, delta / 4)
    assert pd == pytest.approx(1.5 ** 0.25) and ps == pytest.approx(0.05)


def test_check_finite():
    loop.check_finite(1.0, np.zeros((3, 2)))
    for args in [(np.nan,), (np.inf,), (1.0, np.array([[0.0], [np.inf]])),
                 (1.0, None, False)]:
        with pytest.raises(FloatingPointError, match="step size is too large"):
            loop.check_finite(*args)


def test_scratch_arrays_are_reused_across_chunks():
    X = sp.random(40, 10, density=0.3, format="csr", random_state=2)
    shard = make_shard(X, np.ones((40, 2)), ShardLayout(10, 2, True, 10), 0)
    n_max = max(c.bounds[-1] for c in shard.chunks)
    w0, w, packed = loop.scratch(shard, 3, 2)
    assert w0.shape == w.shape == (3, 2) and packed.shape == (3, 6)
    first = shard.scratch
    w0b, _, wide = loop.scratch(shard, n_max, 2, width=4)  # the snapshot's [w | gradient]
    assert shard.scratch is first and wide.shape == (n_max, 4)
    assert np.shares_memory(w0, w0b) and np.shares_memory(packed, wide)
    assert w0.flags.c_contiguous and packed.flags.c_contiguous
    loop.scratch(shard, n_max + 5, 2)  # larger than every chunk: new arrays
    assert shard.scratch is not first


def test_row_counts_and_column_statistics():
    X = sp.random(12, 7, density=0.4, format="csr", random_state=3)
    chunk = make_shard(X, np.ones((12, 1)), ShardLayout(7, 2, True, 12), 0).chunks[0]
    dense = make_shard(X.toarray(), np.ones((12, 1)), ShardLayout(7, 2, True, 12),
                       0).chunks[0]
    local = chunk.X.toarray()
    counts = (local != 0).sum(axis=0)
    counts[chunk.intercept] = 12
    energy = (local ** 2).sum(axis=0)
    energy[chunk.intercept] = 12
    for c in (chunk, ):
        np.testing.assert_array_equal(loop.row_counts(c), counts)
        got_counts, got_energy = loop.column_stats(c)
        np.testing.assert_array_equal(got_counts, counts)
        np.testing.assert_allclose(got_energy, energy, rtol=1e-12)
    # without the statistics the chunk was built with, they are counted from its arrays
    chunk.counts, chunk.energy = None, None
    np.testing.assert_array_equal(loop.row_counts(chunk), counts)
    np.testing.assert_allclose(loop.column_stats(chunk)[1], energy, rtol=1e-12)
    # dense chunks: a row touches the columns where it is non-zero, as stored sparse
    # (the intercept, a column of ones, every row)
    np.testing.assert_array_equal(loop.row_counts(dense), (dense.X != 0).sum(axis=0))
    assert sorted(loop.row_counts(dense)) == sorted(counts)
    np.testing.assert_allclose(loop.column_stats(dense)[1],
                               (dense.X ** 2).sum(axis=0), rtol=1e-12)


def test_loop_sums_only_for_models_no_larger_than_the_shard():
    X = sp.random(100, 50, density=0.1, format="csr", random_state=4)  # 500 non-zeros
    shard = make_shard(X, np.ones((100, 1)), ShardLayout(50, 2, True, 25), 0)
    sums = loop._loop_sums(shard, [26, 25], 1, True)
    assert [s[0].shape for s in sums] == [(26, 1), (25, 1)]
    assert all(s[1].dtype == np.int64 and s[2].shape == s[1].shape for s in sums)
    assert all(s[1] is None and s[2] is None for s in loop._loop_sums(shard, [26, 25], 1,
                                                                      False))
    assert loop._loop_sums(shard, [260, 250], 1, True) is None  # 510 coordinates > 500 nnz
    assert loop._loop_sums(shard, [26, 25], 10, True) is None  # times 10 outputs
    assert loop._loop_sums(shard, (), 1, True) is None


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_snapshot_summed_per_loop_or_per_chunk_agree(monkeypatch, penalty):
    """A loop adds its snapshot to the blocks once per pass (models no larger than its
    non-zeros) or chunk by chunk (larger models): the same fit up to rounding."""
    from dask_asyncopt.solvers import loop

    X, y = make_sparse_classification(3000, 400, nnz_per_row=10, random_state=4)
    kw = dict(loss="log_loss", penalty=penalty, alpha=1e-4, solver="sync", random_state=0,
              max_iter=4, tol=None)
    calls = []
    summed = AsyncSGDClassifier(**kw).fit(X, y)
    real = loop._loop_sums

    def per_chunk(*args):
        calls.append(real(*args) is not None)
        return None

    monkeypatch.setattr(loop, "_loop_sums", per_chunk)  # thread workers: this process
    chunked = AsyncSGDClassifier(**kw).fit(X, y)
    assert calls and all(calls)  # the data would have been summed per loop
    np.testing.assert_allclose(chunked.history_.objective, summed.history_.objective,
                               rtol=1e-12)
    np.testing.assert_allclose(chunked.coef_, summed.coef_, rtol=1e-9, atol=1e-12)


def test_term_index_names_each_remote_blocks_coordinates_once():
    """Per remote block, the sorted union of the coordinates the shard's chunks read
    there, and each chunk's positions in it; nothing for a block on this worker."""
    rng = np.random.default_rng(8)
    X = sp.random(400, 600, density=0.01, format="csr", random_state=9)
    X = (sp.diags((np.arange(400) >= 20) * 1.0) @ X).tocsr()  # a first chunk reads nothing
    X.eliminate_zeros()
    Y = np.where(rng.random(400) > 0.5, 1.0, -1.0)[:, None]
    shard = make_shard(X, Y, ShardLayout(600, N_BLOCKS, False, 20), 5)

    class Here:  # what _term_index reads of a handle
        def __init__(self, key, local):
            self.ref, self.local = type("Ref", (), {"key": key}), local

    union = loop._term_index(shard, [Here("a", True), Here("b", False)])
    assert union[0] is None and all(c.term_pos[0] is None for c in shard.chunks)
    ids = [c.block_ids[1] for c in shard.chunks]
    assert len({tuple(i) for i in ids}) > 1 and min(len(i) for i in ids) == 0
    np.testing.assert_array_equal(union[1], np.unique(np.concatenate(ids)))
    assert union[1].dtype == ids[0].dtype
    for chunk, mine in zip(shard.chunks, ids, strict=True):
        assert chunk.term_pos[1].dtype == np.int32
        np.testing.assert_array_equal(union[1][chunk.term_pos[1]], mine)
