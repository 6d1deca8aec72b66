"""The column renumbering kernels (``kernels/columns.py``)."""

import numpy as np
import pytest

from dask_asyncopt.kernels.columns import mean_at, renumber_by_block, renumber_columns


@pytest.mark.parametrize("n_columns", [1, 63, 64, 65, 1000])
def test_renumbers_as_unique_does(n_columns):
    rng = np.random.default_rng(n_columns)
    indices = rng.integers(0, n_columns, size=3 * n_columns).astype(np.int32)
    indices[:2] = [0, n_columns - 1]  # the first and the last column
    columns, local = renumber_columns(indices, n_columns, n_columns)
    expected, inverse = np.unique(indices, return_inverse=True)
    np.testing.assert_array_equal(columns, expected)
    np.testing.assert_array_equal(local, inverse.ravel())
    assert local.dtype == np.int32
    empty = renumber_columns(np.zeros(0, dtype=np.int32), n_columns, n_columns)
    assert empty[0].shape == (0,) and empty[1].shape == (0,)
    # more used columns than asked for: only their count, no renumbering
    over, none = renumber_columns(indices, n_columns, expected.shape[0] - 1)
    assert over.shape == expected.shape and none.shape == (0,)


@pytest.mark.parametrize("n_blocks", [1, 2, 5])
def test_renumbers_by_block_in_block_order(n_blocks):
    """Local ids run block by block, each block's coordinates ascending; the
    intercept is one more coordinate; the scratch bits are left at 0."""
    rng = np.random.default_rng(n_blocks)
    n_coords = 301  # the intercept is the last
    indices = rng.integers(0, n_coords - 1, size=500).astype(np.int32)
    data = rng.normal(size=500)
    bits = np.zeros((n_coords + 63) >> 6, dtype=np.uint64)
    before = np.empty(bits.shape[0], dtype=np.int64)
    local, ids, bounds, intercept, counts, energy = renumber_by_block(
        indices, data, n_blocks, n_coords - 1, bits, before)
    used = np.unique(np.append(indices, n_coords - 1))
    in_order = used[np.lexsort((used // n_blocks, used % n_blocks))]
    np.testing.assert_array_equal(ids, in_order // n_blocks)
    np.testing.assert_array_equal(np.diff(bounds), np.bincount(used % n_blocks,
                                                               minlength=n_blocks))
    np.testing.assert_array_equal(in_order[local], indices)
    assert in_order[intercept] == n_coords - 1 and local.dtype == np.int32
    np.testing.assert_array_equal(counts, np.bincount(local, minlength=used.shape[0]))
    np.testing.assert_allclose(energy, np.bincount(local, data ** 2, minlength=used.shape[0]))
    assert not bits.any()


def test_mean_at_is_the_sorted_mean_bit_for_bit():
    """renumber_columns + mean_at == np.unique + np.add.at / counts, to the last bit
    (the sync rounds' average; the reference fits depend on it)."""
    rng = np.random.default_rng(7)
    ids = np.concatenate([rng.choice(500, 200, replace=False) for _ in range(3)])
    values = rng.normal(size=(ids.shape[0], 2))
    uniq, where = np.unique(ids, return_inverse=True)
    total = np.zeros((uniq.shape[0], 2))
    np.add.at(total, where, values)
    want = total / np.bincount(where)[:, None]
    columns, local = renumber_columns(ids, 500, 500)
    np.testing.assert_array_equal(columns, uniq)
    got = mean_at(local, values, columns.shape[0])
    assert got.tobytes() == want.tobytes()
