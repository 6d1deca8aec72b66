"""Gradient exchanges of an update rule (``optimizer="amsgrad"``): the worker side.

The blocks are :class:`~dask_asyncopt.store.rule_blocks.RuleServer` actors
holding the rule's state next to their coordinates.  A worker loop's exchange:

1. pull the coordinates its chunk touches (every block, concurrently);
2. cut the chunk into minibatches and compute each minibatch's gradient at
   the pulled weights (Numba, :mod:`dask_asyncopt.kernels.gradients`);
3. push the gradients to the blocks, which apply them in order (APAM: the
   server applies AMSGrad to delayed gradients).

Several gradients per exchange keep the exchange cost (one round trip per
block) small against compute, at the price of staleness: the ``i``-th
gradient of an exchange is at least ``i`` versions stale.  ``adpsgd``'s
replicas use the same gradients (:func:`minibatch_gradients`).
"""

import math
import time

import numpy as np
from distributed import secede

from ..kernels.gradients import minibatch_grads_csr, minibatch_grads_dense
from ..kernels.lazy import gather_rows
from ..kernels.sweeps import P_EPSILON
from .config import PassReport
from .handles import bind
from .loop import check_finite, epoch_then_snapshot, flush, is_csr, pull, push, scratch

# Measured defaults: rows per gradient and gradients per exchange on small
# shards, and the exchanges per epoch a loop aims at on large ones (96 took 2-4x
# as long per epoch as 32 on process workers for as many epochs, see
# docs/design.md, "Update rules (APAM)").
MINIBATCH = 32
STEPS_PER_EXCHANGE = 4
EXCHANGES_PER_EPOCH = 32


def minibatch_gradients(chunk, rows, w, drift, reweight, config):
    """Packed gradients of the chunk's minibatches at ``w`` (local coordinates):
    ``(loss, ptr, idx, g, pen, rows per step)``.  ``drift`` (the snapshot's
    gradient sum over each coordinate's row count, used with variance
    reduction) and ``reweight`` (each coordinate's ``n / n_j``, the
    intercept's too: the rule reweights its gradient and leaves its penalty
    out) are those of the chunk's local coordinates."""
    loss_code, _, params = config.kernel
    grad = config.grad
    vr = grad.vr
    if not vr:
        drift = np.zeros((0, w.shape[1]))
    dsnap = chunk.dsnap if vr else np.zeros((0, w.shape[1]))
    epsilon = params[P_EPSILON]
    batch = grad.batch
    n_steps = -(-rows.shape[0] // batch)
    out_rows = np.empty(n_steps, dtype=np.int64)
    K = w.shape[1]
    if is_csr(chunk):
        X = chunk.X
        size = X.nnz + n_steps
        ptr = np.empty(n_steps + 1, dtype=np.int64)
        idx = np.empty(size, dtype=np.int64)
        g = np.empty((size, K))
        pen = np.empty(size)
        loss = minibatch_grads_csr(X.indptr, X.indices, X.data, chunk.Y, chunk.W, rows, w,
                                   chunk.intercept, loss_code, epsilon, batch, vr, dsnap,
                                   drift, reweight, ptr, idx, g, pen, out_rows)
        return loss, ptr, idx[:ptr[-1]], g[:ptr[-1]], pen[:ptr[-1]], out_rows
    n_local = w.shape[0]
    g = np.empty((n_steps * n_local, K))
    pen = np.empty(n_steps * n_local)
    loss = minibatch_grads_dense(chunk.X, chunk.Y, chunk.W, rows, w, loss_code, epsilon, batch,
                                 vr, dsnap, drift, reweight, g, pen, out_rows)
    ptr = np.arange(n_steps + 1, dtype=np.int64) * n_local
    idx = np.tile(np.arange(n_local, dtype=np.int64), n_steps)
    return loss, ptr, idx, g, pen, out_rows


def chunk_terms(chunk, terms, out_drift, out_reweight):
    """The chunk's local ``drift`` and ``reweight`` (see :func:`minibatch_gradients`)
    from every block's :meth:`~dask_asyncopt.store.rule_blocks.RuleServer.rule_terms`,
    written into the given work arrays (returned)."""
    b = chunk.bounds
    for i, (drift, reweight) in enumerate(terms):
        ids = chunk.block_ids[i]
        if ids is None:  # dense chunks read whole blocks
            out_drift[b[i]:b[i + 1]] = drift
            out_reweight[b[i]:b[i + 1]] = reweight
        else:
            gather_rows(drift, ids, out_drift[b[i]:b[i + 1]])
            np.take(reweight, ids, out=out_reweight[b[i]:b[i + 1]])
    return out_drift, out_reweight


def split_blocks(chunk, ptr, idx, g, pen):
    """Per block: packed steps with block-local ids (``idx`` is sorted within steps)."""
    n_steps = ptr.shape[0] - 1
    step_of = np.repeat(np.arange(n_steps), np.diff(ptr))
    out = []
    b = chunk.bounds
    for i, ids in enumerate(chunk.block_ids):
        sel = (idx >= b[i]) & (idx < b[i + 1])
        local = idx[sel] - b[i]
        block_ptr = np.searchsorted(step_of[sel], np.arange(n_steps + 1))
        out.append((block_ptr.astype(np.int64), local if ids is None else ids[local],
                    g[sel], pen[sel]))
    return out


def run_grad_epoch(shard, actors, config, worker, target):
    """:func:`grad_epoch` as a task of its own."""
    secede()
    return grad_epoch(shard, bind(actors, shard, worker, config), config, worker, target)


def grad_epoch(shard, handles, config, worker, target):
    """One worker loop of gradient exchanges (see the module docstring).

    Same contract as :func:`~dask_asyncopt.solvers.loop.sweep_epoch`.
    """
    sync = config.sync
    timeout = config.timeout
    # The snapshot's drift and the row counts' reweighting change only between
    # epochs: fetched once per epoch (references for blocks in this process),
    # not with every read.
    terms = [h.call("rule_terms").result(timeout) for h in handles]
    loss_sum, n_samples, steps, kernel_time = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    while sync or n_samples < shard.n_rows:
        chunk, rows = shard.next_chunk()
        w, drift, _ = scratch(shard, chunk.bounds[-1], chunk.Y.shape[1])
        replies, w = pull(handles, chunk, worker, config, shard, out=w)
        samples = max(r.samples for r in replies)
        if sync and samples >= target:
            shard.put_back(chunk)
            break
        tick = time.perf_counter()
        drift, reweight = chunk_terms(chunk, terms, drift, _reweight_scratch(shard,
                                                                             chunk.bounds[-1]))
        chunk_loss, ptr, idx, g, pen, out_rows = minibatch_gradients(chunk, rows, w, drift,
                                                                     reweight, config)
        parts = split_blocks(chunk, ptr, idx, g, pen)
        kernel_time += time.perf_counter() - tick
        check_finite(chunk_loss, g)
        push(handles, worker, "push_grads", [(*part, out_rows) for part in parts], replies,
             timeout)
        shard.round += 1
        loss_sum += chunk_loss
        n_samples += chunk.n_rows
        steps += 1
    flush(handles, timeout)
    return PassReport(worker, loss_sum, n_samples, kernel_time, time.perf_counter() - started,
                      steps=steps)


def _reweight_scratch(shard, n_local):
    """A chunk's reweighting work array, reused (kept on the shard, as
    :func:`~.loop.scratch`'s)."""
    buf = getattr(shard, "reweight_scratch", None)
    if buf is None or buf.shape[0] < n_local:
        buf = np.empty(max(n_local, max(c.bounds[-1] for c in shard.chunks)))
        shard.reweight_scratch = buf
    return buf[:n_local]


def rule_epoch(shard, handles, config, worker, target, first, last, n_samples, redo=False):
    """An epoch of gradient exchanges, then its snapshot pass (the loss alone after
    the fit's ``last``), for :func:`~.loop.run_epochs`.  A rule fit's first
    snapshot is a task of its own, before its epochs (it gives the step policy
    the objective to start from)."""
    return epoch_then_snapshot(shard, handles, config, worker, target, False, last, grad_epoch,
                               n_samples, redo)


def exchange_sizes(rows_per_loop, batch_size=None, bounded=False):
    """Rows per exchange and rows per gradient of an update rule's fit.

    ``batch_size`` (rows per exchange) is cut into minibatches of
    :data:`MINIBATCH` rows.  ``None`` ("auto"): a loop aims at
    :data:`EXCHANGES_PER_EPOCH` exchanges per pass over its ``rows_per_loop``
    rows, with at least ``MINIBATCH * STEPS_PER_EXCHANGE`` (128) rows each;
    rows per gradient and gradients per exchange both grow as the square root
    of the exchange's growth over 128 rows (shards of up to 4,096 rows keep
    32-row gradients, 4 per exchange; 100,000 rows: 3,125 rows per exchange,
    gradients of 159 rows, 20 per exchange), so that the exchanges' cost (one
    round trip per block, several milliseconds between loaded processes) stays
    small against their compute.  ``bounded``
    (``max_staleness``): one gradient per exchange -- the ``i``-th gradient of
    an exchange is ``i`` versions older than the first, so several per exchange
    cannot all keep a bound that admission control enforces on the first (and
    a push of more gradients than the bound would wait for every other loop's
    read to clear, which on several blocks can deadlock).
    """
    if batch_size is None:
        base = MINIBATCH * STEPS_PER_EXCHANGE
        rows = max(base, math.ceil(rows_per_loop / EXCHANGES_PER_EPOCH))
        batch = min(rows, math.ceil(MINIBATCH * math.sqrt(rows / base)))
    else:
        rows = batch_size
        batch = min(MINIBATCH, rows)
    if bounded:
        batch = rows
    return rows, batch
