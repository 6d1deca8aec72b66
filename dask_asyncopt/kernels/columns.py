"""Numba kernel that renumbers the columns a sparse matrix uses.

A hashed model is far wider than its data: the fit runs on the columns the
non-zeros use (see :func:`dask_asyncopt.solvers.linear.used_columns`).  Which
ones, and each non-zero's rank among them, come from a bit per column and a
running count per 64 columns: two passes over the non-zeros and one over the
bits, no sort, and 1.5 bits per column (a byte or an int per column is paged
in as the model is wide).  Nothing here knows about Dask.
"""

import numpy as np
from numba import njit


@njit(inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(nogil=True, cache=True)
def renumber_columns(indices, n_columns, max_used):
    """``(columns, local)``: the sorted distinct values of ``indices`` (each in
    ``[0, n_columns)``) and, for every entry, its position among them (int32),
    so that ``columns[local] == indices``.  When more than ``max_used`` columns
    are used, ``local`` is empty (not computed: it is as long as the data) and
    ``columns`` holds only how many (``columns.shape[0]``, values unset)."""
    n_words = (n_columns + 63) >> 6
    bits = np.zeros(n_words, dtype=np.uint64)
    one = np.uint64(1)
    for k in range(indices.shape[0]):
        j = indices[k]
        bits[j >> 6] |= one << np.uint64(j & 63)
    before = np.empty(n_words, dtype=np.int64)  # used columns in the words before
    total = 0
    for w in range(n_words):
        before[w] = total
        total += _popcount(bits[w])
    columns = np.empty(total, dtype=np.int64)
    if total > max_used:
        return columns, np.empty(0, dtype=np.int32)
    for w in range(n_words):
        word = bits[w]
        i = before[w]
        while word:
            low = word & (~word + one)  # lowest set bit
            columns[i] = (w << 6) + _popcount(low - one)
            i += 1
            word ^= low
    local = np.empty(indices.shape[0], dtype=np.int32)
    for k in range(indices.shape[0]):
        j = indices[k]
        w = j >> 6
        mask = (one << np.uint64(j & 63)) - one
        local[k] = before[w] + _popcount(bits[w] & mask)
    return columns, local
