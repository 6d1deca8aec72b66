"""AD-PSGD for matrix factorisation (``solvers/mf_gossip.py``): one loop's epoch against
its item replica equals per-rating SGD in NumPy; with two loops the replicas gossip
and the driver's epoch-end average leaves them equal."""

import numpy as np
import pytest

from dask_asyncopt.datasets import make_ratings
from dask_asyncopt.kernels.factors import RULE_ADAGRAD, row_width
from dask_asyncopt.solvers import mf, mf_gossip
from dask_asyncopt.solvers.config import FactorLoopConfig, FactorProblem
from dask_asyncopt.solvers.handles import bind
from dask_asyncopt.store.factors import FactorBlock, initial_rows

from ..conftest import cluster_is_clean
from ..reference import ref_sgd

K, N_BLOCKS = 3, 4


def test_block_offsets():
    np.testing.assert_array_equal(mf_gossip.block_offsets(np.array([3, 0, 2])), [0, 3, 3, 5])
    assert mf_gossip.block_offsets(np.array([4])).dtype == np.int64


def _setup(client, n_loops):
    X, y = make_ratings(40, 30, 600, random_state=7)
    layout, parts = mf.stratify(X[:, 0], X[:, 1], y, 40, 30, n_loops, N_BLOCKS,
                                np.random.default_rng(8))
    workers = sorted(client.nthreads())
    loop_workers = [workers[w % len(workers)] for w in range(n_loops)]
    problem = FactorProblem(K, 0.03, 0.02, 0.05, RULE_ADAGRAD, 0.3)
    users = [client.submit(FactorBlock, w, int(layout.user_sizes[w]), K, 0.3, [0, 0, w],
                           actor=True, workers=[a], pure=False)
             for w, a in enumerate(loop_workers)]
    replicas = mf_gossip.GossipItems.submit(client, layout, problem, 0, [None] * N_BLOCKS,
                                            loop_workers, "test")
    shards = [client.submit(mf.make_rating_shard, parts[w], 11 + w, workers=[a], pure=False)
              for w, a in enumerate(loop_workers)]
    config = FactorLoopConfig("adpsgd", n_loops, float(y.mean()), 0.05, 0.03, 0.02,
                              RULE_ADAGRAD, (0.9, 0.999, 1e-8), 30.0)
    return layout, parts, users, replicas, shards, loop_workers, config, float(y.mean())


def test_one_loops_epoch_equals_per_rating_sgd(client):
    """With one loop nothing is gossiped and the item step is not scaled: the replica
    ends where per-rating SGD over the strata (in the shard's orders) ends."""
    layout, parts, users, replicas, shards, loop_workers, config, mu = _setup(client, 1)
    try:
        actors = client.gather(replicas)
        side = mf_gossip.GossipItems(bind(actors), layout, 30.0)
        config = side.loop_config(config, K + 1)
        assert config.n_values == K + 1
        np.testing.assert_array_equal(config.offsets,
                                      mf_gossip.block_offsets(layout.item_sizes))
        report = client.submit(mf_gossip.run_mf_gossip_epoch, shards[0], users[0].result(30),
                               actors, config, 0, 1, workers=loop_workers, pure=False
                               ).result(60)
        U = users[0].result(30).rows().result(30)
        blocks = side.item_blocks()
        del actors, side
    finally:
        client.cancel(users + replicas + shards, force=True)
    replay = mf.RatingShard(parts[0], 11)
    U_ref = initial_rows(int(layout.user_sizes[0]), K, 0.3, [0, 0, 0],
                         row_width(K, RULE_ADAGRAD))
    V_ref = [initial_rows(int(s), K, 0.3, [0, 1, b], row_width(K, RULE_ADAGRAD))
             for b, s in enumerate(layout.item_sizes)]
    sse = 0.0
    for b in replay.rng.permutation(N_BLOCKS):
        u, i, r = parts[0][b]
        if r.shape[0] == 0:
            continue
        part, U_ref, V_ref[b] = ref_sgd(u, i, r, replay.rng.permutation(r.shape[0]), U_ref,
                                         V_ref[b], mu, 0.05, 0.03, 0.02, True)
        sse += part
    np.testing.assert_allclose(U, U_ref, rtol=1e-9, atol=1e-12)
    for b in range(N_BLOCKS):
        np.testing.assert_allclose(blocks[b], V_ref[b], rtol=1e-9, atol=1e-12)
    assert (report.samples, report.exchanges) == (600, 0)
    assert report.loss_sum == pytest.approx(sse, rel=1e-10)
    assert cluster_is_clean(client)


def test_two_loops_gossip_and_the_driver_averages_the_replicas(client):
    layout, parts, users, replicas, shards, loop_workers, config, mu = _setup(client, 2)
    try:
        actors = client.gather(replicas)
        side = mf_gossip.GossipItems(bind(actors), layout, 30.0)
        config = side.loop_config(config, K + 1)
        loops = [client.submit(mf_gossip.run_mf_gossip_epoch, shards[w], users[w].result(30),
                               actors, config, w, 1, workers=[loop_workers[w]], pure=False)
                 for w in range(2)]
        reports = client.gather(loops)
        before = [a.values().result(30) for a in actors]
        stats, extra = side.after_epoch(reports)
        after = [a.values().result(30) for a in actors]
        del actors, side
    finally:
        client.cancel(users + replicas + shards + loops, force=True)
    mean = (before[0] + before[1]) / 2
    np.testing.assert_allclose(after[0], mean, rtol=1e-12)
    np.testing.assert_array_equal(after[0], after[1])
    want = np.sqrt(np.mean([((v - mean) ** 2).sum() for v in before]))
    assert extra["consensus_distance"] == pytest.approx(want, rel=1e-12) and want > 0
    # the active loop (rank 1) averages with rank 0 after each of its non-empty strata
    active = sum(1 for s in parts[1] if s[2].shape[0])
    assert reports[1].exchanges == active == extra["exchanges"] and reports[0].exchanges == 0
    assert sum(r.samples for r in reports) == 600
    assert sum(s.samples for s in stats) == 600  # each replica counts its own loop's
    assert cluster_is_clean(client)
