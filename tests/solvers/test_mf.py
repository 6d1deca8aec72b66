"""Stratified SGD for matrix factorisation (``solvers/mf.py``): the layout and strata,
DSGD's tickets, and one loop's epoch over real factor-block actors against per-rating
SGD in NumPy (``tests/reference.py``)."""

import numpy as np
import pytest

from dask_asyncopt.datasets import make_ratings
from dask_asyncopt.kernels.factors import RULE_ADAGRAD, RULE_SGD
from dask_asyncopt.solvers import mf
from dask_asyncopt.solvers.config import FactorLoopConfig, PassReport
from dask_asyncopt.solvers.handles import StoreRef, bind
from dask_asyncopt.store.factors import CheckoutTable, FactorBlock, initial_rows
from dask_asyncopt.store.replies import StoreStats

from ..conftest import cluster_is_clean
from ..reference import ref_sgd


def test_balanced_blocks_split_the_ratings_evenly():
    rng = np.random.default_rng(0)
    counts = rng.zipf(1.8, size=500).clip(max=400)  # power-law: a few very popular ids
    block, row, sizes = mf.balanced_blocks(counts, 4, np.random.default_rng(1))
    assert block.min() == 0 and block.max() == 3 and sizes.sum() == 500
    totals = np.bincount(block, weights=counts, minlength=4)
    assert np.abs(totals - counts.sum() / 4).max() <= counts.max()  # within one id
    for b in range(4):  # rows within a block: 0..size-1, in id order
        members = np.flatnonzero(block == b)
        np.testing.assert_array_equal(row[members], np.arange(sizes[b]))


@pytest.mark.parametrize("n_blocks", [1, 3, 40_000])
def test_stable_order_is_numpys_stable_argsort(n_blocks):
    blocks = np.random.default_rng(n_blocks).integers(0, n_blocks, 5_000)
    np.testing.assert_array_equal(mf.stable_order(blocks, n_blocks),
                                  np.argsort(blocks, kind="stable"))


def test_stratify_places_every_rating_once_in_its_stratum():
    X, y = make_ratings(60, 40, 900, random_state=0)
    users, items = X[:, 0], X[:, 1]
    layout, parts = mf.stratify(users, items, y, 60, 40, 3, 4, np.random.default_rng(2))
    assert len(parts) == 3 and all(len(p) == 4 for p in parts)
    seen = []
    for w in range(3):
        for b in range(4):
            u, i, r = parts[w][b]
            assert u.dtype == i.dtype == np.int32 and r.dtype == np.float64
            # the stratum's rows are local to user block w and item block b
            gu = np.array([np.flatnonzero((layout.user_block == w) & (layout.user_row == x))[0]
                           for x in u], dtype=int)
            gi = np.array([np.flatnonzero((layout.item_block == b) & (layout.item_row == x))[0]
                           for x in i], dtype=int)
            seen.extend(zip(gu.tolist(), gi.tolist(), r.tolist(), strict=True))
    assert sorted(seen) == sorted(zip(users.tolist(), items.tolist(), y.tolist(),
                                      strict=True))


def test_layout_gather_and_split_are_inverse():
    rng = np.random.default_rng(3)
    counts_u, counts_i = rng.integers(1, 9, 30), rng.integers(1, 9, 20)
    layout = mf.Layout(*mf.balanced_blocks(counts_u, 2, rng), *mf.balanced_blocks(counts_i, 3,
                                                                                   rng))
    U, V = rng.normal(size=(30, 5)), rng.normal(size=(20, 5))
    users, items = layout.split(U, V)
    assert [u.shape[0] for u in users] == list(layout.user_sizes)
    for b, rows in enumerate(items):
        members = np.flatnonzero(layout.item_block == b)
        np.testing.assert_array_equal(rows[layout.item_row[members]], V[members])
    U2, V2 = layout.gather(users, items)
    np.testing.assert_array_equal(U2, U)
    np.testing.assert_array_equal(V2, V)


@pytest.mark.parametrize("n_loops,n_blocks", [(2, 3), (3, 3), (2, 5), (1, 1)])
def test_sync_tickets_are_dsgds_rotation(n_loops, n_blocks):
    """At sub-epoch ``s`` loop ``w`` takes block ``(w + s) % n_blocks``; every block is
    visited by every loop once an epoch, in increasing ``s``, tickets consecutive."""
    for epoch in (0, 2):
        for b in range(n_blocks):
            visits = sorted(((b - w) % n_blocks, w) for w in range(n_loops))
            tickets = [mf.sync_ticket(epoch, w, b, n_loops, n_blocks) for _, w in visits]
            assert tickets == list(range(epoch * n_loops, (epoch + 1) * n_loops))


def test_rmse_of_and_the_divergence_message():
    rng = np.random.default_rng(4)
    U, V = rng.normal(size=(5, 4)), rng.normal(size=(6, 4))  # k = 2: [p, p, bias, G]
    users, items = np.array([0, 4, 2]), np.array([5, 0, 0])
    ratings = np.array([3.0, 1.0, 4.5])
    pred = 3.0 + U[users, 2] + V[items, 2] + np.einsum("nk,nk->n", U[users, :2], V[items, :2])
    assert mf.rmse_of((U, V), 3.0, users, items, ratings, RULE_ADAGRAD) == pytest.approx(
        np.sqrt(np.mean((ratings - pred) ** 2)), rel=1e-12)
    assert np.isnan(mf.rmse_of((U, V), 3.0, users[:0], items[:0], ratings[:0], RULE_SGD))
    assert "learning_rate='adagrad'" in str(mf.diverged(FactorLoopConfig(
        "sync", 1, 0.0, 0.1, 0.0, 0.0, RULE_SGD, (), 1.0)))
    assert "adagrad" not in str(mf.diverged(FactorLoopConfig(
        "sync", 1, 0.0, 0.1, 0.0, 0.0, RULE_ADAGRAD, (), 1.0)))


K, N_BLOCKS = 3, 3


def _factor_setup(client):
    X, y = make_ratings(40, 30, 600, random_state=5)
    layout, parts = mf.stratify(X[:, 0], X[:, 1], y, 40, 30, 1, N_BLOCKS,
                                np.random.default_rng(6))
    workers = sorted(client.nthreads())
    users = client.submit(FactorBlock, 0, int(layout.user_sizes[0]), K, 0.3, [0, 0, 0],
                          actor=True, workers=[workers[0]], pure=False)
    items = [client.submit(FactorBlock, b, int(size), K, 0.3, [0, 1, b], actor=True,
                           workers=[workers[b % len(workers)]], pure=False)
             for b, size in enumerate(layout.item_sizes)]
    shard = client.submit(mf.make_rating_shard, parts[0], 9, workers=[workers[0]],
                          pure=False)
    return layout, parts, users, items, shard, workers[0], float(y.mean())


@pytest.mark.parametrize("solver,where", [("sync", "client"), ("asyb", "client"),
                                          ("asyb", "process_client")])
def test_one_loops_epoch_on_real_blocks_equals_per_rating_sgd(request, solver, where):
    """One loop's epoch (check out each item block, Numba SGD over the stratum, check
    in) == per-rating AdaGrad SGD in NumPy in the same block and rating order.
    Under asyb the loop takes the blocks through the fit's check-out table (its
    first free one in the loop's random order: all of them, one loop)."""
    client = request.getfixturevalue(where)
    layout, parts, users, items, shard, worker, mu = _factor_setup(client)
    table = client.submit(CheckoutTable, N_BLOCKS, actor=True, workers=[worker], pure=False)
    config = FactorLoopConfig(solver, 1, mu, 0.05, 0.03, 0.02, RULE_ADAGRAD,
                              (0.9, 0.999, 1e-8), 30.0)
    try:
        user_actor, item_actors = users.result(30), client.gather(items)
        table_actor = table.result(30)
        report = client.submit(mf.run_mf_epoch, shard, user_actor, item_actors, config, 0, 1,
                               table=None if solver == "sync" else table_actor,
                               workers=[worker], pure=False).result(60)
        U = user_actor.rows().result(30)
        V = [a.rows().result(30) for a in item_actors]
        # the driver's side of the blocks: the item blocks, then the table
        side = mf.CheckedOutItems(bind(item_actors + [table_actor]), layout, 30.0)
        ref = StoreRef.of(table_actor)
        assert side.loop_kwargs(solver) == ({} if solver == "sync" else {"table": ref})
        stats, extra = side.after_epoch([report])
        blocks = side.item_blocks()
        ustats = user_actor.stats().result(30)
        held = table_actor.acquire_any(5, list(range(N_BLOCKS)), 0.0).result(30)
        del user_actor, item_actors, table_actor, side
    finally:
        client.cancel([users, shard, table, *items], force=True)
    # every block checked in: the table has them all free again
    assert held == 0
    # the reference: the same starting rows, the shard's block and rating orders
    replay = mf.RatingShard(parts[0], 9)
    U_ref = initial_rows(int(layout.user_sizes[0]), K, 0.3, [0, 0, 0])
    V_ref = [initial_rows(int(s), K, 0.3, [0, 1, b]) for b, s in enumerate(layout.item_sizes)]
    order = list(range(N_BLOCKS)) if solver == "sync" else list(
        replay.rng.permutation(N_BLOCKS))
    sse = 0.0
    for b in order:
        u, i, r = parts[0][b]
        part, U_ref, V_ref[b] = ref_sgd(u, i, r, replay.rng.permutation(r.shape[0]), U_ref,
                                         V_ref[b], mu, 0.05, 0.03, 0.02, True)
        sse += part
    np.testing.assert_allclose(U, U_ref, rtol=1e-9, atol=1e-12)
    for b in range(N_BLOCKS):
        np.testing.assert_allclose(V[b], V_ref[b], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(blocks[b], V[b])
    assert isinstance(report, PassReport)
    assert (report.worker, report.samples, report.steps) == (0, 600, N_BLOCKS)
    assert report.loss_sum == pytest.approx(sse, rel=1e-10)
    # every block checked out and in once, never stale (exclusive check-out)
    assert all(isinstance(s, StoreStats) for s in stats) and extra == {}
    assert [(s.version, s.pushes, s.staleness_max) for s in stats] == [(1, 1, 0)] * N_BLOCKS
    assert sum(s.samples for s in stats) == 600 and ustats.samples == 600
    assert cluster_is_clean(client)


def _diverging_epoch(shard, user_actor, item_actors, config):
    try:
        mf.run_mf_epoch(shard, user_actor, item_actors, config, 0, 1)
    except FloatingPointError as exc:
        return str(exc)
    return None


def test_a_diverging_loop_gives_every_block_back(client):
    """A loop that fails mid-stratum releases the blocks it holds, unchanged."""
    layout, parts, users, items, shard, worker, mu = _factor_setup(client)
    config = FactorLoopConfig("sync", 1, mu, 1e6, 0.0, 0.0, RULE_SGD, (0.9, 0.999, 1e-8),
                              30.0)
    try:
        user_actor, item_actors = users.result(30), client.gather(items)
        before = item_actors[0].rows().result(30)
        message = client.submit(_diverging_epoch, shard, user_actor, item_actors, config,
                                workers=[worker], pure=False).result(60)
        assert "non-finite" in message and "learning_rate='adagrad'" in message
        # free again (a check-out of every block succeeds at once), the rows unchanged
        for b, actor in enumerate(item_actors):
            got = actor.acquire(5, None, 0.0).result(30)
            assert got is not None, b
        np.testing.assert_array_equal(item_actors[0].rows().result(30), before)
        assert user_actor.acquire(5, None, 0.0).result(30) is not None
        del user_actor, item_actors
    finally:
        client.cancel([users, shard, *items], force=True)
    assert cluster_is_clean(client)
