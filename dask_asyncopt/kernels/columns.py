"""Numba kernels that renumber the columns a sparse matrix uses.

A hashed model is far wider than its data: the fit runs on the columns the
non-zeros use (see :func:`dask_asyncopt.solvers.linear.used_columns`).  Which
ones, and each non-zero's rank among them, come from a bit per column and a
running count per 64 columns: two passes over the non-zeros and one over the
bits, no sort, and 1.5 bits per column (a byte or an int per column is paged
in as the model is wide).  A shard's chunks are numbered the same way, block
by block (:func:`renumber_by_block`).  Nothing here knows about Dask."""

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


@njit(nogil=True, cache=True)
def renumber_by_block(indices, data, n_blocks, intercept, bits, before):
    """A chunk's columns renumbered in block order (coordinate ``j`` is in-block
    id ``j // n_blocks`` of block ``j % n_blocks``; the data's shards number a
    chunk's coordinates block by block, each block's ascending), with a bit per
    coordinate as :func:`renumber_columns`: passes over the non-zeros and the
    used coordinates, not over every coordinate of the model.

    ``intercept`` is one more coordinate to number (``-1``: none); ``bits``
    (``uint64``, all 0, left so) and ``before`` (``int64``) are scratch of a
    word per 64 coordinates.  Returns the entries' local ids (int32), each
    local coordinate's in-block id, the blocks' bounds in the local ids, the
    intercept's local id (or -1), and each local coordinate's count of
    entries and sum of squared values."""
    one = np.uint64(1)
    for k in range(indices.shape[0]):
        j = indices[k]
        bits[j >> 6] |= one << np.uint64(j & 63)
    if intercept >= 0:
        bits[intercept >> 6] |= one << np.uint64(intercept & 63)
    n_words = bits.shape[0]
    total = 0
    for w in range(n_words):
        before[w] = total
        total += _popcount(bits[w])
    block = np.empty(total, dtype=np.int64)  # by rank among the used coordinates
    in_block = np.empty(total, dtype=np.int64)
    bounds = np.zeros(n_blocks + 1, dtype=np.int64)
    r = 0
    for w in range(n_words):
        word = bits[w]
        while word:
            low = word & (~word + one)
            j = (w << 6) + _popcount(low - one)
            q = j // n_blocks
            block[r] = j - q * n_blocks
            in_block[r] = q
            bounds[block[r] + 1] += 1
            r += 1
            word ^= low
    for b in range(n_blocks):
        bounds[b + 1] += bounds[b]
    cursor = bounds[:n_blocks].copy()
    ids = np.empty(total, dtype=np.int64)
    local_of = np.empty(total, dtype=np.int32)  # rank -> local id
    for r in range(total):
        p = cursor[block[r]]
        cursor[block[r]] = p + 1
        ids[p] = in_block[r]
        local_of[r] = p
    out = np.empty(indices.shape[0], dtype=np.int32)
    counts = np.zeros(total, dtype=np.int64)
    energy = np.zeros(total)
    for k in range(indices.shape[0]):
        j = indices[k]
        w = j >> 6
        c = local_of[before[w] + _popcount(bits[w] & ((one << np.uint64(j & 63)) - one))]
        out[k] = c
        counts[c] += 1
        energy[c] += data[k] * data[k]
    local_intercept = -1
    if intercept >= 0:
        w = intercept >> 6
        local_intercept = local_of[before[w] + _popcount(
            bits[w] & ((one << np.uint64(intercept & 63)) - one))]
    for w in range(n_words):
        bits[w] = 0
    return out, ids, bounds, local_intercept, counts, energy


@njit(nogil=True, cache=True)
def mean_at(local, values, n_out):
    """``(n_out, K)``: at each position ``p``, the mean of the rows ``values[k]``
    with ``local[k] == p`` (summed in ``k`` order, as ``np.add.at`` sums, then
    divided by their number; every position must occur).  With
    :func:`renumber_columns`, the mean per coordinate of updates that name
    coordinates by id, without sorting them."""
    total = np.zeros((n_out, values.shape[1]))
    count = np.zeros(n_out, dtype=np.int64)
    for k in range(local.shape[0]):
        p = local[k]
        count[p] += 1
        for j in range(values.shape[1]):
            total[p, j] += values[k, j]
    for p in range(n_out):
        for j in range(values.shape[1]):
            total[p, j] /= count[p]
    return total
