"""Chunk layout: both ways of compacting a chunk's columns give the same chunk;
the order in which a shard hands out chunks and rows; placement shuffles rows."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt import shards


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("n_blocks", [1, 3, 7])
def test_stamped_compaction_matches_sorting(n_blocks, fit_intercept):
    rng = np.random.default_rng(n_blocks)
    X = sp.random(40, 97, density=0.08, format="lil", random_state=rng)
    X[5] = 0  # an empty row
    X = X.tocsr()
    Y = rng.normal(size=(40, 1))
    scratch = shards._Scratch(97 + int(fit_intercept))
    for s in (0, 20):  # two chunks through one scratch
        rows = slice(s, s + 20)
        want = shards._chunk_csr(X[rows], Y[rows], 97, n_blocks, fit_intercept)
        got = shards._chunk_csr_stamped(X[rows], Y[rows], 97, n_blocks, fit_intercept,
                                        scratch)
        np.testing.assert_array_equal(got.X.toarray(), want.X.toarray())
        np.testing.assert_array_equal(got.bounds, want.bounds)
        for a, b in zip(got.block_ids, want.block_ids, strict=True):
            np.testing.assert_array_equal(a, b)
        assert got.intercept == want.intercept
        # entries per local coordinate, the intercept counting every row
        counts = np.bincount(got.X.indices, minlength=got.X.shape[1])
        if fit_intercept:
            counts[got.intercept] = 20
        np.testing.assert_array_equal(got.counts, counts)
        np.testing.assert_array_equal(want.counts, counts)
        # and sums of squares (the intercept: a column of ones)
        energy = np.bincount(got.X.indices, weights=got.X.data ** 2,
                             minlength=got.X.shape[1])
        if fit_intercept:
            energy[got.intercept] = 20
        np.testing.assert_allclose(got.energy, energy, rtol=1e-12)
        np.testing.assert_allclose(want.energy, energy, rtol=1e-12)
        assert got.X.nnz == X[rows].nnz
        # every local coordinate maps back to the global column it came from
        glob = np.concatenate([ids * n_blocks + b for b, ids in enumerate(got.block_ids)])
        Xg = X[rows].toarray()
        for local_col, g in enumerate(glob):
            if g < 97:
                np.testing.assert_array_equal(got.X.toarray()[:, local_col], Xg[:, g])
            else:
                assert fit_intercept and local_col == got.intercept


def test_next_chunk_order():
    """Each pass hands out every chunk once, in a fresh random order; a chunk's
    rows come in storage order from a random start, forwards or backwards
    (the rows were shuffled once when the shard was built)."""
    rng = np.random.default_rng(0)
    X = sp.random(100, 30, density=0.2, format="csr", random_state=rng)
    shard = shards.make_shard(X, rng.normal(size=(100, 1)), n_features=30, n_blocks=2,
                              fit_intercept=True, batch_size=16, seed=0)
    orders, starts, directions = set(), set(), set()
    for _ in range(6):
        seen = []
        for _ in range(len(shard.chunks)):
            chunk, rows = shard.next_chunk()
            seen.append(next(i for i, c in enumerate(shard.chunks) if c is chunk))
            n = chunk.n_rows
            assert sorted(rows.tolist()) == list(range(n))
            steps = set((np.diff(rows) % n).tolist())
            assert steps <= {1} or steps <= {n - 1}
            if n == 16:
                starts.add(int(rows[0]))
                directions.add(steps == {1})
        assert sorted(seen) == list(range(len(shard.chunks)))
        orders.add(tuple(seen))
    assert len(orders) > 1 and len(starts) > 3 and directions == {True, False}


def test_placement_keeps_rows_shuffled(client):
    """Rows sorted by class reach every chunk mixed: the shards keep the
    placement's shuffle (the sweeps visit rows in storage order)."""
    from dask_asyncopt import inputs

    n = 4000
    X = sp.random(n, 50, density=0.1, format="csr", random_state=0)
    Y = np.repeat([[-1.0], [1.0]], n // 2, axis=0)  # sorted by class
    workers = sorted(client.nthreads())
    layout = {"n_features": 50, "n_blocks": 2, "fit_intercept": True, "batch_size": 200}
    futures, _ = inputs.place_in_memory(client, X, Y, workers, layout,
                                        np.random.default_rng(0))
    for shard in client.gather(futures):
        for chunk in shard.chunks:
            share = (chunk.Y > 0).mean()
            assert 0.25 < share < 0.75
    client.cancel(futures)

