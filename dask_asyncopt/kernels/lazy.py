"""Numba kernels of the parameter store: lazy proximal updates of a block.

A block keeps, per coordinate, the index of the ``(D, S)`` history (see
:mod:`dask_asyncopt.objective.penalties`) at which it was last materialised;
reads and writes first bring the coordinates they touch up to date, so an
update costs the coordinates it touches, not the block's size.  Nothing
here knows about Dask.
"""

import numpy as np
from numba import njit

from ..objective.penalties import catch_up, prox


@njit(nogil=True, cache=True)
def materialise(w, last, hist_d, hist_s, now, ids, skip):
    """Bring coordinates ``ids`` of ``w`` from history index ``last[j]`` to ``now``.

    ``last[j]`` is the history index at which ``w[j]`` was last materialised;
    ``skip`` is an unpenalised coordinate (the intercept) or ``-1``.  ``last``
    is written only when it changes: under updates that applied their prox
    already (SVRG) it never does, and a store per coordinate would dirty a
    cache line per coordinate on every read.

    One loop over ``ids`` here, called once per kernel: a per-coordinate call
    of a helper taking the arrays was not inlined by LLVM (nor, with Numba's
    ``inline="always"``, free of reference counting) and cost many times the
    copy it guarded.
    """
    if now == 0:  # an empty history (SVRG's identity prox maps): all current
        return
    for i in range(ids.shape[0]):
        j = ids[i]
        lj = last[j]
        if lj != now:
            if j != skip:
                d_from = hist_d[lj]
                s_from = hist_s[lj]
                d_now = hist_d[now]
                s_now = hist_s[now]
                for k in range(w.shape[1]):
                    w[j, k] = catch_up(w[j, k], d_from, s_from, d_now, s_now)
            last[j] = now


@njit(nogil=True, cache=True)
def gather(w, last, hist_d, hist_s, now, ids, skip, out):
    """Materialise coordinates ``ids`` at history index ``now`` (see
    :func:`materialise`) and copy them to ``out``."""
    materialise(w, last, hist_d, hist_s, now, ids, skip)
    for i in range(ids.shape[0]):
        j = ids[i]
        for k in range(w.shape[1]):
            out[i, k] = w[j, k]


@njit(nogil=True, cache=True)
def penalty_scale(counts, n_rows, skip, j):
    """Coordinate ``j``'s penalty weight ``n / n_j`` in the sparse variance-reduced
    steps (see :func:`~dask_asyncopt.objective.penalties.sparse_penalty_scale`,
    the same division): computed where it is read, so a block keeps no array
    of it."""
    if j == skip:
        return 0.0
    return n_rows / max(counts[j], 1)


@njit(nogil=True, cache=True)
def gather_packed(w, last, hist_d, hist_s, now, ids, skip, drift, counts, n_rows, precond,
                  out):
    """:func:`gather` into the SVRG sweeps' layout: ``out`` is ``(len(ids), 2K + 2)``,
    filled with ``[w | drift | penalty scale | precond]`` of coordinates ``ids``
    (see :func:`sweep_csr_svrg`; the scale from ``counts`` and ``n_rows``,
    :func:`penalty_scale`) in one pass, instead of several gathers and a
    packing copy per exchange."""
    materialise(w, last, hist_d, hist_s, now, ids, skip)
    n_outputs = w.shape[1]
    for i in range(ids.shape[0]):
        j = ids[i]
        for k in range(n_outputs):
            out[i, k] = w[j, k]
            out[i, n_outputs + k] = drift[j, k]
        out[i, 2 * n_outputs] = penalty_scale(counts, n_rows, skip, j)
        out[i, 2 * n_outputs + 1] = precond[j]


@njit(nogil=True, cache=True)
def pack_terms(drift, counts, n_rows, precond, skip, ids, out):
    """``[drift | penalty scale | precond]`` of coordinates ``ids`` into ``out``
    (``(len(ids), K + 2)``): the SVRG terms a loop on another worker fetches
    once per epoch (see :func:`gather_terms`)."""
    n_outputs = drift.shape[1]
    for i in range(ids.shape[0]):
        j = ids[i]
        for k in range(n_outputs):
            out[i, k] = drift[j, k]
        out[i, n_outputs] = penalty_scale(counts, n_rows, skip, j)
        out[i, n_outputs + 1] = precond[j]


@njit(nogil=True, cache=True)
def gather_rows(source, ids, out):
    """``out[:] = source[ids]`` without the temporary of NumPy's fancy indexing."""
    for i in range(ids.shape[0]):
        for k in range(source.shape[1]):
            out[i, k] = source[ids[i], k]


@njit(nogil=True, cache=True)
def gather_terms(terms, pos, out):
    """Columns ``K:`` of the SVRG sweeps' layout ``out`` (``(len(pos), 2K + 2)``):
    rows ``pos`` of ``terms`` (:func:`pack_terms` of the coordinates a loop's
    shard reads from a block), without the temporaries of NumPy's fancy
    indexing (each a page-faulting mmap on Dask's process workers, see
    :func:`step_replica`)."""
    width = terms.shape[1]
    n_outputs = out.shape[1] - width
    for i in range(pos.shape[0]):
        p = pos[i]
        for k in range(width):
            out[i, n_outputs + k] = terms[p, k]


@njit(nogil=True, cache=True)
def add_delta(w, last, hist_d, hist_s, now, ids, delta, skip):
    """Materialise coordinates ``ids`` at ``now``, then add ``delta`` to them."""
    materialise(w, last, hist_d, hist_s, now, ids, skip)
    for i in range(ids.shape[0]):
        j = ids[i]
        for k in range(w.shape[1]):
            w[j, k] += delta[i, k]


@njit(nogil=True, cache=True)
def add_delta_logged(w, last, hist_d, hist_s, now, ids, delta, skip, log_ids, log_values,
                     n_log):
    """:func:`add_delta` that first appends the coordinates to ``log_ids`` from
    position ``n_log`` and, when ``log_values`` has rows, their values before
    the add (a block's record of what changed: its undo log and its
    checkpoints' changes, see ``BlockServer``)."""
    materialise(w, last, hist_d, hist_s, now, ids, skip)
    keep_values = log_values.shape[0] > 0
    for i in range(ids.shape[0]):
        j = ids[i]
        log_ids[n_log + i] = j
        for k in range(w.shape[1]):
            if keep_values:
                log_values[n_log + i, k] = w[j, k]
            w[j, k] += delta[i, k]


@njit(nogil=True, cache=True)
def undo_log(w, log_ids, log_values, n_log):
    """Write back the values logged by :func:`add_delta_logged`, newest first, so
    each coordinate ends at the value it had before its first logged add."""
    for i in range(n_log - 1, -1, -1):
        j = log_ids[i]
        for k in range(w.shape[1]):
            w[j, k] = log_values[i, k]


@njit(nogil=True, cache=True)
def add_rows(target, ids, values):
    """``target[ids] += values`` for distinct ``ids`` (NumPy's fancy-indexed add
    allocates a temporary per call)."""
    for i in range(ids.shape[0]):
        for k in range(target.shape[1]):
            target[ids[i], k] += values[i, k]


@njit(nogil=True, cache=True)
def add_entries(target, ids, values):
    """``target[ids] += values`` for distinct ``ids``, 1-d arrays (the row counts
    and column energies of a fit's first snapshot, see :func:`add_rows`)."""
    for i in range(ids.shape[0]):
        target[ids[i]] += values[i]


@njit(nogil=True, cache=True)
def catch_up_all(w, last, hist_d, hist_s, now, skip):
    """Materialise every coordinate of a block at history index ``now``."""
    if now > 0:  # else nothing to do: skip the ids array (dense chunks read whole blocks)
        materialise(w, last, hist_d, hist_s, now, np.arange(w.shape[0]), skip)


@njit(nogil=True, cache=True)
def step_replica(w, ids, delta, prox_d, prox_s, skip):
    """``w[ids] += delta``, then the prox map ``(D, S)`` on every row but ``skip``.

    The eager counterpart of :func:`add_delta` for a full model replica, in
    place: NumPy's fancy indexing and masked soft-threshold would allocate
    model-sized temporaries at every step, which costs a page-faulting
    ``mmap`` each on Dask's process workers (their nanny sets
    ``MALLOC_TRIM_THRESHOLD_``): several times the step itself.
    """
    n_outputs = w.shape[1]
    for i in range(ids.shape[0]):
        for k in range(n_outputs):
            w[ids[i], k] += delta[i, k]
    if prox_d == 1.0 and prox_s == 0.0:
        return
    for j in range(w.shape[0]):
        if j == skip:
            continue
        for k in range(n_outputs):
            w[j, k] = prox(w[j, k], prox_s, prox_d)




@njit(nogil=True, cache=True)
def add_matching(dst_ids, dst, src_ids, src):
    """``dst[p] += src[q]`` wherever ``dst_ids[p] == src_ids[q]``; both id arrays
    sorted ascending (a chunk's ids in one block are).  One merge pass: a loop
    that read a chunk ahead adds its own update of the chunk before, which the
    block applied after that read."""
    q = 0
    n_src = src_ids.shape[0]
    for p in range(dst_ids.shape[0]):
        j = dst_ids[p]
        while q < n_src and src_ids[q] < j:
            q += 1
        if q == n_src:
            return
        if src_ids[q] == j:
            for k in range(dst.shape[1]):
                dst[p, k] += src[q, k]
