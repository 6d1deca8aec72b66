"""Numba kernels of the exchange channel's wire format: zero suppression.

A buffer of 8-byte words (float64 or int64 arrays) travels as a bitmap of its
*significant* words -- all but ``+0.0`` and ``-0.0``, i.e. all bits but the
top one zero -- those words in order, and a bitmap of the zeros' signs.
Lossless to the bit whatever the array means.  Worth it for the payloads of
an L1-regularised fit: most coefficients are exactly zero once its first
epoch has passed (half of them ``-0.0``, the soft-threshold's ``copysign``),
and so are the changes a sweep pushes to them.  Nothing here knows about
Dask or sockets.
"""

import numpy as np
from numba import njit

_SIGN = np.uint64(1 << 63)


@njit(nogil=True, cache=True)
def count_significant_words(words):
    """Entries of the ``uint64`` array ``words`` other than ``+0.0`` and ``-0.0``."""
    n = 0
    for i in range(words.shape[0]):
        if words[i] << np.uint64(1) != 0:
            n += 1
    return n


@njit(nogil=True, cache=True)
def pack_words(words, significant, signs, packed):
    """Bit ``i % 8`` of ``significant[i // 8]`` set for each significant ``words[i]``,
    those words copied into ``packed`` in order, and bit ``i % 8`` of
    ``signs[i // 8]`` set for each ``-0.0`` (both bitmaps zeroed, sized
    ``ceil(len(words) / 8)``; ``packed`` by :func:`count_significant_words`)."""
    k = 0
    for i in range(words.shape[0]):
        w = words[i]
        bit = np.uint8(1 << (i & 7))
        if w << np.uint64(1) != 0:
            significant[i >> 3] |= bit
            packed[k] = w
            k += 1
        elif w != 0:
            signs[i >> 3] |= bit


@njit(nogil=True, cache=True)
def unpack_words(significant, signs, packed, words):
    """Inverse of :func:`pack_words` into ``words`` (every entry written)."""
    k = 0
    for i in range(words.shape[0]):
        bit = 1 << (i & 7)
        if significant[i >> 3] & bit:
            words[i] = packed[k]
            k += 1
        elif signs[i >> 3] & bit:
            words[i] = _SIGN
        else:
            words[i] = 0
