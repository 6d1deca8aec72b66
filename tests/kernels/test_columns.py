"""The column renumbering kernel (``kernels/columns.py``)."""

import numpy as np
import pytest

from dask_asyncopt.kernels.columns import renumber_columns


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
