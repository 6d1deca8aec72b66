"""A loop's shard (``data/shards.py``): both ways of compacting a chunk's columns give the
same chunk; dense chunks; block sizes; the order in which a shard hands out chunks and
rows."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt.data import shards
from dask_asyncopt.data.shards import ShardLayout


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("n_blocks", [1, 3, 7])
def test_bitmap_compaction_matches_sorting(n_blocks, fit_intercept):
    rng = np.random.default_rng(n_blocks)
    X = sp.random(40, 97, density=0.08, format="lil", random_state=rng)
    X[5] = 0  # an empty row
    X = X.tocsr()
    Y = rng.normal(size=(40, 1))
    scratch = shards._Scratch(97 + int(fit_intercept))
    for s in (0, 20):  # two chunks through one scratch
        rows = slice(s, s + 20)
        want = shards._chunk_csr(X[rows], Y[rows], 97, n_blocks, fit_intercept)
        got = shards._chunk_csr_bits(X[rows], Y[rows], 97, n_blocks, fit_intercept,
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


def test_duplicate_entries_are_summed_into_the_chunks_statistics():
    """A CSR matrix with an entry split in two (and its rows' indices unsorted) is
    the canonical matrix to the shard: the same chunks, and a column's entry counted
    once in its statistics (counted twice, its preconditioned steps were shorter).
    The caller's matrix is left as it was."""
    rng = np.random.default_rng(4)
    X = sp.random(60, 30, density=0.2, format="csr", random_state=rng)
    row = [slice(a, b) for a, b in zip(X.indptr[:-1], X.indptr[1:], strict=True)]
    halves = sp.csr_matrix((  # each row: its entries reversed at 1/4, then at 3/4
        np.concatenate([np.r_[X.data[r][::-1] / 4, 3 * X.data[r] / 4] for r in row]),
        np.concatenate([np.r_[X.indices[r][::-1], X.indices[r]] for r in row]),
        2 * X.indptr), shape=X.shape)
    assert halves.nnz == 2 * X.nnz and not halves.has_canonical_format
    before = halves.data.copy()
    Y = rng.normal(size=(60, 1))
    layout = ShardLayout(30, 2, True, 25)
    got = shards.make_shard(halves, Y, layout, seed=0).chunks
    want = shards.make_shard(X, Y, layout, seed=0).chunks
    np.testing.assert_array_equal(halves.data, before)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.X.toarray(), w.X.toarray(), rtol=1e-15)
        np.testing.assert_array_equal(g.counts, w.counts)
        np.testing.assert_allclose(g.energy, w.energy, rtol=1e-14)


def test_next_chunk_order():
    """Each pass hands out every chunk once, in a fresh random order; a chunk's
    rows come in storage order from a random start, forwards or backwards
    (the rows were shuffled once when the shard was built)."""
    rng = np.random.default_rng(0)
    X = sp.random(100, 30, density=0.2, format="csr", random_state=rng)
    shard = shards.make_shard(X, rng.normal(size=(100, 1)), ShardLayout(30, 2, True, 16), 0)
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


def test_block_sizes_and_interleaving():
    assert shards.block_sizes(10, 3) == [4, 3, 3]
    assert shards.block_sizes(2, 3) == [1, 1, 0]
    np.testing.assert_array_equal(shards.block_slices(np.array([0, 0, 2, 2, 2]), 3),
                                  [0, 2, 2, 5])


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_dense_chunks_hold_every_coordinate_in_block_order(fit_intercept):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(25, 7)), rng.normal(size=(25, 2))
    shard = shards.make_shard(X, Y, ShardLayout(7, 3, fit_intercept, 10), 0)
    assert [c.n_rows for c in shard.chunks] == [10, 10, 5] and shard.n_rows == 25
    order, bounds, block_ids = shards.dense_layout(7, 3, fit_intercept)
    n = 7 + int(fit_intercept)
    # block b's run holds global coordinates b, b + 3, ... in order
    np.testing.assert_array_equal(order, [j for b in range(3) for j in range(b, n, 3)])
    assert block_ids == [None] * 3
    full = np.hstack([X, np.ones((25, 1))]) if fit_intercept else X
    for s, chunk in zip((0, 10, 20), shard.chunks, strict=True):
        np.testing.assert_array_equal(chunk.X, full[s:s + 10, order])
        np.testing.assert_array_equal(chunk.Y, Y[s:s + 10])
        np.testing.assert_array_equal(chunk.bounds, bounds)
        assert chunk.intercept == (int(np.flatnonzero(order == 7)[0]) if fit_intercept
                                   else -1)
        np.testing.assert_allclose(chunk.energy, (full[s:s + 10, order] ** 2).sum(axis=0))


def test_layout_is_frozen_and_put_back_repeats_the_chunk():
    layout = ShardLayout(5, 2, True)
    assert layout.batch_size is None
    with pytest.raises(AttributeError):
        layout.n_blocks = 3
    X = sp.random(40, 5, density=0.5, format="csr", random_state=0)
    shard = shards.make_shard(X, np.ones((40, 1)), ShardLayout(5, 2, True, 10), 3)
    chunk, _ = shard.next_chunk()
    shard.put_back(chunk)
    again, _ = shard.next_chunk()
    assert again is chunk
