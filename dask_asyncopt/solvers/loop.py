"""The worker loop on coefficient blocks: pull -> sweep -> push until the epoch's
samples are done, and the snapshot and loss passes between epochs.

Runs as a Dask task on the worker that holds the loop's shard; the blocks
are reached through :mod:`.handles` (directly in this process, through their
actors elsewhere), with a timeout on every remote call, so a lost peer raises
instead of hanging.  One task runs every epoch of a fit
(:func:`run_epochs`): between epochs it posts its report to block 0 and
waits there for the driver's decision (see
:mod:`~dask_asyncopt.store.handoff`).
"""

import math
import time

import numpy as np
from distributed import secede

from ..kernels.columns import renumber_columns
from ..kernels.lazy import add_matching, gather_rows, gather_terms
from ..kernels.sweeps import (
    P_EPSILON,
    all_finite,
    loss_sum_csr,
    loss_sum_dense,
    snapshot_csr,
    snapshot_dense,
    subtract_finite,
    sweep_csr,
    sweep_csr_svrg,
    sweep_dense,
    sweep_dense_svrg,
)
from ..objective.losses import curvature_sums
from ..objective.schedules import svrg_step
from ..store.blocks import add_snapshot_part
from ..store.replies import Pulled
from .config import EpochReport, PassReport
from .handles import bind, remote_calls

# Normalised SVRG sweeps measure every row as 1 in the preconditioner's metric; their
# step is 1 / (L * NORMALISED_SQ_NORM), half the row's own 1 / L.  Prox-SVRG's theory asks
# for at most 1 / (4L) (Xiao and Zhang 2014); 1 / L needed more epochs on most data sets
# (docs/design.md, "Proximal SVRG on blocks").
NORMALISED_SQ_NORM = 2.0


def is_csr(chunk):
    return hasattr(chunk.X, "indptr")


def share_dense(delta, prox_d, prox_s, n_loops):
    """Scale a dense chunk's update to a 1/n_loops share.

    Sparse chunks of different workers touch mostly different coordinates, so
    their updates add up (as in Hogwild!).  Dense chunks touch every
    coordinate: each worker's sweep has already fitted the common directions,
    and adding ``n_loops`` such updates overshoots them ``n_loops``-fold (it
    diverges on unscaled data where sequential SGD converges).  Averaging them
    (model averaging) is the safe combination; the proximal map is scaled to
    the same share (exact for pure L1 or pure L2).
    """
    return delta / n_loops, prox_d ** (1.0 / n_loops), prox_s / n_loops


def _combine(chunk, delta, prox_d, prox_s, n_loops):
    """This loop's share of a chunk's update when ``n_loops`` loops add theirs.

    The intercept is touched by every row, like a dense coordinate: summing
    the loops' sweeps overshoots it (with two loops on sparse data it drifted
    to 0.7 where 0.01 was right), so its update is averaged.
    """
    if n_loops == 1:
        return delta, prox_d, prox_s
    if not is_csr(chunk):
        return share_dense(delta, prox_d, prox_s, n_loops)
    if chunk.intercept >= 0:
        delta[chunk.intercept] /= n_loops
    return delta, prox_d, prox_s


def request(handles, chunk, worker, config, shard, snapshot=False, skip=()):
    """Send the chunk's reads to the blocks on other workers (but ``skip``), all at
    once; the pending calls, by block."""
    timeout = config.timeout
    sync = config.sync and worker >= 0
    min_version = shard.round if sync else None
    return {i: (h.wait("pull_when", h.ids(ids), min_version, timeout, snapshot) if sync
                else h.call("pull", h.ids(ids), worker, snapshot))
            for i, (h, ids) in enumerate(zip(handles, chunk.block_ids, strict=True))
            if not h.local and i not in skip}


# What one round trip to another worker costs, in coordinates read: on loaded
# worker processes a round trip's latency is worth about the time 100,000 float64
# values take to travel (docs/design.md, "Exchange sizes").
ROUND_TRIP_COORDS = 100_000


def whole_blocks(handles, shard, config):
    """For a pass that reads every chunk once while no loop writes (a snapshot or
    loss pass): each remote block's values in one read, when that costs less
    than the pass's chunks reading it one by one (their coordinates plus
    :data:`ROUND_TRIP_COORDS` per extra round trip: an update rule's shards
    have many small chunks).  By block."""
    reads = {}
    extra_trips = ROUND_TRIP_COORDS * (len(shard.chunks) - 1)
    for i, h in enumerate(handles):
        per_chunk = sum(int(c.bounds[i + 1] - c.bounds[i]) for c in shard.chunks)
        if not h.local and config.block_sizes and (
                config.block_sizes[i] <= per_chunk + extra_trips):
            reads[i] = h.call("pull", None, -1)
    return {i: call.result(config.timeout).values for i, call in reads.items()}


def pull(handles, chunk, worker, config, shard, snapshot=False, out=None, calls=None,
         blocks=None):
    """Read the chunk's coordinates from every block into the local weight vector.

    Requests to other workers go out first, all at once (or were sent before:
    ``calls``, see :func:`request`); blocks on this worker then write their
    values straight into their rows of ``out`` (no reply array to allocate and
    concatenate: a model-sized copy per chunk).  ``blocks`` holds whole remote
    blocks read once for the pass (:func:`whole_blocks`).  Returns the replies
    (one :class:`~dask_asyncopt.store.replies.Pulled` per block; a local
    block's values are ``None``) and the values, in ``out`` when given.
    """
    timeout = config.timeout
    sync = config.sync and worker >= 0
    b = chunk.bounds
    if out is None:
        out = np.empty((b[-1], chunk.Y.shape[1]))
    blocks = blocks or {}
    if calls is None:
        calls = request(handles, chunk, worker, config, shard, snapshot, skip=blocks)
    replies = [None] * len(handles)
    for i, (h, ids) in enumerate(zip(handles, chunk.block_ids, strict=True)):
        if h.local:
            dest = out[b[i]:b[i + 1]]
            replies[i] = (h.obj.pull_when(ids, shard.round, timeout, snapshot, dest) if sync
                          else h.obj.pull(ids, worker, snapshot, dest))
        elif i in blocks:
            if ids is None:
                out[b[i]:b[i + 1]] = blocks[i]
            else:
                gather_rows(blocks[i], ids, out[b[i]:b[i + 1]])
            replies[i] = Pulled(None, 0)
    for i, call in calls.items():
        replies[i] = call.result(timeout)
        out[b[i]:b[i + 1]] = replies[i].values
    return replies, out


def _pull_packed(handles, chunk, worker, config, shard, packed, terms, ahead=None):
    """The SVRG read of a CSR chunk, into the sweep's ``packed`` rows.

    Blocks on this worker write ``[values | drift | penalty scale | precond]``
    of the chunk's coordinates straight into them (one Numba pass per block, GIL
    released) instead of returning arrays to concatenate and pack: that glue
    was a third of a chunk's time next to the sweep.  Blocks on other workers
    send only the values (or were read ahead: ``ahead``, replies by block);
    the other columns come from ``terms`` (:func:`shard_terms`, fetched once
    per epoch).  Returns replies shaped like :func:`pull`'s.
    """
    sync = config.sync and worker >= 0
    min_version = shard.round if sync else None
    timeout = config.timeout
    n_outputs = chunk.Y.shape[1]
    b = chunk.bounds
    calls = request(handles, chunk, worker, config, shard) if ahead is None else {}
    replies = [None] * len(handles)
    for i, (h, ids) in enumerate(zip(handles, chunk.block_ids, strict=True)):
        if h.local:
            replies[i] = h.obj.pull_packed(ids, packed[b[i]:b[i + 1]], worker, min_version,
                                           timeout)
    for i, call in calls.items():
        replies[i] = call.result(timeout)
    for i, reply in (ahead or {}).items():
        replies[i] = reply
    for i, h in enumerate(handles):
        if not h.local:
            rows = packed[b[i]:b[i + 1]]
            rows[:, :n_outputs] = replies[i].values
            gather_terms(terms[i], chunk.term_pos[i], rows)
    return replies


def shard_terms(handles, shard, timeout):
    """The SVRG terms of this epoch (:meth:`BlockServer.svrg_terms`) that the loop
    reads outside its own blocks' packed pulls, by block (``None``: none).

    CSR chunks read them from the blocks on other workers, for the coordinates
    the shard touches there (:func:`_term_index`): a wide model's loop then
    holds and fetches what its data reads, not a copy of every remote block.
    Dense chunks read every coordinate of every block.
    """
    dense = not is_csr(shard.chunks[0])
    union = _term_index(shard, handles)
    calls = {i: h.call("svrg_terms", h.ids(union[i])) for i, h in enumerate(handles)
             if dense or not h.local}
    terms = [None] * len(handles)
    for i, call in calls.items():
        terms[i] = call.result(timeout)
    return terms


def _term_index(shard, handles):
    """Per block, the sorted coordinates the shard's CSR chunks read from it, once
    per fit (kept on the shard; ``None`` for a block on this worker or dense
    chunks); each chunk keeps where its coordinates are in them (``term_pos``,
    int32), for :func:`~dask_asyncopt.kernels.lazy.gather_terms`."""
    key = tuple((h.ref.key, h.local) for h in handles)
    if getattr(shard, "term_key", None) == key:
        return shard.term_ids
    union = [None] * len(handles)
    csr = is_csr(shard.chunks[0])
    for chunk in shard.chunks:
        chunk.term_pos = [None] * len(handles)
    for i, h in enumerate(handles):
        if h.local or not csr:
            continue
        ids = [c.block_ids[i] for c in shard.chunks]
        every = np.concatenate(ids)
        # one bit per coordinate, no sort: the chunks' ids add up to many times the union
        width = int(every.max()) + 1 if every.size else 0
        columns, pos = renumber_columns(every, width, width)
        union[i] = columns.astype(every.dtype, copy=False)
        ends = np.cumsum([len(c) for c in ids])
        for chunk, piece, end in zip(shard.chunks, ids, ends, strict=True):
            chunk.term_pos[i] = pos[end - len(piece):end]
    shard.term_ids, shard.term_key = union, key
    return union


def sweep_packed(chunk, rows, packed, config, normalise):
    """Variance-reduced steps on a packed chunk ``[w | drift | penalty scale |
    precond]`` (``w`` updated in place, the prox applied in the sweep); returns
    its loss (0: the solvers take the exact loss from the snapshot pass)."""
    loss, _, params = config.kernel
    epsilon = params[P_EPSILON]
    eta = config.svrg.eta
    pen = config.penalty
    if is_csr(chunk):
        X = chunk.X
        return sweep_csr_svrg(X.indptr, X.indices, X.data, chunk.Y, chunk.W, rows, packed,
                              chunk.intercept, chunk.dsnap, loss, epsilon, eta, pen.alpha,
                              pen.l1_ratio, False, normalise, chunk.w_floor)
    return sweep_dense_svrg(chunk.X, chunk.Y, chunk.W, rows, packed, chunk.dsnap, loss,
                            epsilon, eta, pen.alpha, pen.l1_ratio, False, normalise,
                            chunk.w_floor)


def _pack_dense_terms(chunk, terms, packed):
    """Columns ``K:`` of a dense chunk's ``packed`` rows: every block's drift,
    penalty scale and preconditioner (a dense chunk reads whole blocks)."""
    n_outputs = chunk.Y.shape[1]
    b = chunk.bounds
    for i, block_terms in enumerate(terms):
        packed[b[i]:b[i + 1], n_outputs:] = block_terms


def scratch(shard, n_local, n_outputs, width=None):
    """Work arrays of one chunk, reused across chunks and epochs (kept on the shard).

    Three C-contiguous arrays of ``n_local`` rows: the values read, the values
    swept (then the delta) and the SVRG sweeps' packed ``[w | drift | scale |
    precond]`` (``2K + 2`` columns, or ``width``: the snapshot pass's ``[w | gradient]``
    lives in the same memory, phases of one loop never overlap).  On Dask's
    process workers every model-sized NumPy temporary is a page-faulting mmap
    (see :func:`~dask_asyncopt.kernels.lazy.step_replica`); reusing them
    removes that cost from the loop.  A chunk's arrays are free again once its
    pushes returned (sync rounds apply the buffered deltas before the next pull
    returns).
    """
    width = 2 * n_outputs + 2 if width is None else width
    buf = getattr(shard, "scratch", None)
    if buf is None or buf[0].shape[0] < n_local or buf[0].shape[1] != n_outputs:
        size = max(n_local, max(c.bounds[-1] for c in shard.chunks))
        buf = (np.empty((size, n_outputs)), np.empty((size, n_outputs)),
               np.empty(size * (2 * n_outputs + 2)))
        shard.scratch = buf
    return buf[0][:n_local], buf[1][:n_local], buf[2][:n_local * width].reshape(n_local, width)


def check_finite(loss, delta=None, finite=True):
    """Raise unless ``loss``, every entry of ``delta`` and the flag ``finite``
    (a kernel's own check) say the numbers are finite."""
    if not (finite and math.isfinite(loss)
            and (delta is None or all_finite(delta.reshape(delta.shape[0], -1)))):
        raise FloatingPointError(
            "the loss or the coefficients became non-finite: the step size is too "
            "large for this data, or its values are (a squared loss of targets near "
            "1e154 overflows); lower eta0 (or alpha with learning_rate='optimal') or "
            "scale the features and targets")


def sweep_sgd(chunk, rows, w, samples, config):
    """Plain SGD over the chunk's ``rows`` on ``w`` (in place), the schedule at
    global sample ``samples + 1``; returns the loss and the chunk's prox
    composition ``(D, S)``."""
    loss, schedule, params = config.kernel
    t_stride = float(config.n_loops)
    if is_csr(chunk):
        X = chunk.X
        return sweep_csr(X.indptr, X.indices, X.data, chunk.Y, chunk.W, rows, w,
                         chunk.intercept, loss, schedule, params, samples + 1.0, t_stride)
    return sweep_dense(chunk.X, chunk.Y, chunk.W, rows, w, -1, loss, schedule, params,
                       samples + 1.0, t_stride)


def sweep_epoch(shard, handles, config, worker, target):
    """Run one worker loop until the global sample count reaches ``target``.

    Parameters
    ----------
    shard : WorkerShard
    handles : list of Handle
        The blocks, in block order.
    config : LoopConfig
    worker : int
        This loop's index.
    target : int
        Sync rounds stop once this many samples have been processed in total
        (all loops); an asynchronous loop stops after one pass over its shard.

    Returns
    -------
    PassReport
    """
    sync = config.sync
    timeout = config.timeout
    n_loops = config.n_loops
    svrg = config.svrg is not None
    normalise = svrg and config.svrg.normalise
    # Reads of other workers' blocks carry only the weights: the drift and penalty
    # scale change only when a snapshot completes (between epochs), so they come
    # once per epoch here.
    terms = shard_terms(handles, shard, timeout) if svrg else None
    # Asynchronous SVRG loops read the next chunk from other workers' blocks while
    # they sweep this one (:func:`_read_ahead`); a sync round or admission under
    # max_staleness must see this chunk's push first.
    read_ahead = svrg and not sync and not config.bounded and not all(
        h.local for h in handles)
    ahead = None
    loss_sum, n_samples, steps, kernel_time = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    # Asynchronous loops each take exactly their own shard once per epoch: were a
    # faster loop to take more, its shard would weigh more in the objective and
    # the iterates would converge to the optimum of that skewed objective.
    while sync or n_samples < shard.n_rows:
        if ahead is None:
            chunk, rows = shard.next_chunk()
            early = None
        else:
            chunk, rows, early = ahead
            ahead = None
        n_outputs = chunk.Y.shape[1]
        w0, w, packed = scratch(shard, chunk.bounds[-1], n_outputs)
        packed_read = svrg and is_csr(chunk)
        if packed_read:
            replies = _pull_packed(handles, chunk, worker, config, shard, packed, terms, early)
        else:
            replies, w0 = pull(handles, chunk, worker, config, shard, out=w0)
        samples = max(r.samples for r in replies)
        if sync and samples >= target:
            shard.put_back(chunk)
            break
        if read_ahead and packed_read and n_samples + chunk.n_rows < shard.n_rows:
            following = shard.next_chunk()
            ahead = (*following, request(handles, following[0], worker, config, shard))
        tick = time.perf_counter()
        if svrg:
            if packed_read:
                w0[:] = packed[:, :n_outputs]
            else:  # dense chunks
                packed[:, :n_outputs] = w0
                _pack_dense_terms(chunk, terms, packed)
            # identity prox at the blocks: the sweep applied it
            chunk_loss, prox_d, prox_s = sweep_packed(chunk, rows, packed, config,
                                                      normalise), 1.0, 0.0
            swept = packed[:, :n_outputs]
        else:
            w[:] = w0
            chunk_loss, prox_d, prox_s = sweep_sgd(chunk, rows, w, samples, config)
            swept = w
        # The delta goes to ``w``, not ``packed``: a sync round keeps it until the
        # last loop pushed, while the next chunk's reads already fill ``packed``.
        finite = subtract_finite(swept, w0, w)
        delta = w
        if not (svrg and sync):  # else the blocks average each round's deltas
            delta, prox_d, prox_s = _combine(chunk, delta, prox_d, prox_s, n_loops)
        kernel_time += time.perf_counter() - tick
        check_finite(chunk_loss, finite=finite)
        b = chunk.bounds
        push(handles, worker, "push",
             [(h.ids(ids), delta[b[i]:b[i + 1]], prox_d, prox_s, chunk.n_rows)
              for i, (h, ids) in enumerate(zip(handles, chunk.block_ids, strict=True))],
             replies, timeout)
        if ahead is not None:
            ahead = _read_ahead(ahead, chunk, delta, timeout)
        shard.round += 1
        loss_sum += chunk_loss
        n_samples += chunk.n_rows
        steps += 1
    flush(handles, timeout)
    return PassReport(worker, loss_sum, n_samples, kernel_time, time.perf_counter() - started,
                      steps=steps)


def _read_ahead(ahead, chunk, delta, timeout):
    """The replies of a chunk read ahead from remote blocks, as if read after this
    loop's push of ``chunk`` (``delta``).

    The read went out before the push on the same link, so the block served it
    first: it misses this loop's own update.  Adding that update where the two
    chunks share coordinates (:func:`~dask_asyncopt.kernels.lazy.add_matching`)
    gives what a read after the push would have given, short of other loops'
    updates, which an asynchronous read misses anyway; the version counts the
    push as read.  Exact because the SVRG blocks add a delta and nothing else
    (their prox maps are the identity).
    """
    following, rows, calls = ahead
    replies = {}
    for i, call in calls.items():
        reply = call.result(timeout)
        if not reply.values.flags.writeable:
            reply = reply._replace(values=reply.values.copy())
        add_matching(following.block_ids[i], reply.values, chunk.block_ids[i],
                     delta[chunk.bounds[i]:chunk.bounds[i + 1]])
        replies[i] = reply._replace(version=reply.version + 1)
    return following, rows, replies


def push(handles, worker, method, parts, replies, timeout):
    """Send every block its part of a chunk's update (``parts[i]``: the arguments of
    ``method`` for block ``i`` between the loop's index and the read's version)
    without waiting: through a channel link a push costs no round trip (its
    arrays are copied: the loop reuses its work arrays before the link has
    written them), in this process it is a call."""
    for h, args, r in zip(handles, parts, replies, strict=True):
        if h.link is not None:
            args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
        h.send(method, worker, *args, r.version, timeout=timeout)


def flush(handles, timeout):
    """Wait until every push this loop sent was applied (before it reports a pass:
    the driver then reads the blocks)."""
    for call in [h.flush() for h in handles]:
        call.result(timeout)


def loss_pass(shard, handles, config, worker):
    """Training loss of the current coefficients over this loop's shard.

    A variance-reduced fit's last epoch needs its exact objective but no new
    snapshot (the next fit starts with its own): the loss alone skips the
    snapshot's gradient sums, derivative store and block updates.
    """
    loss, _, params = config.kernel
    epsilon = params[P_EPSILON]
    loss_sum, n_rows, kernel_time = 0.0, 0, 0.0
    started = time.perf_counter()
    blocks = whole_blocks(handles, shard, config)
    for chunk in shard.chunks:
        w = scratch(shard, chunk.bounds[-1], chunk.Y.shape[1])[0]
        _, w = pull(handles, chunk, -1, config, shard, out=w, blocks=blocks)
        tick = time.perf_counter()
        if is_csr(chunk):
            X = chunk.X
            icpt = w[chunk.intercept] if chunk.intercept >= 0 else np.zeros(w.shape[1])
            loss_sum += loss_sum_csr(X.indptr, X.indices, X.data, chunk.Y, chunk.W, w, icpt,
                                     loss, epsilon)
        else:  # dense chunks carry the intercept as a column of ones
            loss_sum += loss_sum_dense(chunk.X, chunk.Y, chunk.W, w, np.zeros(w.shape[1]),
                                       loss, epsilon)
        kernel_time += time.perf_counter() - tick
        n_rows += chunk.n_rows
    check_finite(loss_sum)
    return PassReport(worker, loss_sum, n_rows, kernel_time, time.perf_counter() - started)


def snapshot_chunk(chunk, wg, config, at_zero=False):
    """Snapshot one chunk at its weights, columns ``:K`` of ``wg`` (n_local, 2K):
    keep its rows' loss derivatives on the chunk (for the next epoch's steps) and
    sum its gradient into columns ``K:`` (see :func:`snapshot_csr`).  Returns
    that gradient sum (a view), the loss sum and the largest squared row norm.
    ``at_zero``: the weights are all zeros (CSR chunks then do not read them)."""
    loss, _, params = config.kernel
    epsilon = params[P_EPSILON]
    dsnap = getattr(chunk, "dsnap", None)  # no sweep reads it during a snapshot: reuse
    if dsnap is None or dsnap.shape != chunk.Y.shape:
        dsnap = np.empty(chunk.Y.shape)
    n_outputs = wg.shape[1] // 2
    grad = wg[:, n_outputs:]
    grad[:] = 0.0
    if is_csr(chunk):
        X = chunk.X
        chunk_loss, sq_norm = snapshot_csr(X.indptr, X.indices, X.data, chunk.Y, chunk.W, wg,
                                           chunk.intercept, loss, epsilon, dsnap, at_zero)
    else:
        chunk_loss, sq_norm = snapshot_dense(chunk.X, chunk.Y, chunk.W, wg, loss, epsilon,
                                             dsnap)
    check_finite(chunk_loss, grad)
    chunk.dsnap = dsnap
    return grad, chunk_loss, sq_norm


def row_counts(chunk):
    """Rows of the chunk touching each of its local coordinates.

    A dense row touches the columns where it is non-zero, as the same row
    stored sparse does: the variance-reduced sweeps skip a dense row's zeros
    (``sweep_dense_svrg``), so the drift, penalty scale and preconditioner
    built from these counts are those of the sparse representation, and a
    fit does not depend on how the data is stored.
    """
    if chunk.counts is not None:  # counted when the chunk was built
        return chunk.counts
    if is_csr(chunk):
        counts = np.bincount(chunk.X.indices, minlength=chunk.X.shape[1])
        if chunk.intercept >= 0:
            counts[chunk.intercept] = chunk.n_rows
        return counts
    return np.count_nonzero(chunk.X, axis=0).astype(np.int64)


def column_stats(chunk):
    """Rows touching each local coordinate of the chunk and the sum of its
    squared values (the intercept: a column of ones)."""
    energy = chunk.energy
    if energy is None:  # chunks not built by make_shard
        if is_csr(chunk):
            energy = np.bincount(chunk.X.indices, weights=np.square(chunk.X.data),
                                 minlength=chunk.X.shape[1])
            if chunk.intercept >= 0:
                energy[chunk.intercept] = chunk.n_rows
        else:
            energy = np.einsum("ij,ij->j", chunk.X, chunk.X)
    return row_counts(chunk), energy


def run_snapshot(shard, actors, config, worker, first):
    """Take the variance-reduced solver's snapshot over this loop's shard, as a
    task of its own (a rule fit's first snapshot, before its epochs; see
    :func:`snapshot_pass`)."""
    secede()
    return snapshot_pass(shard, bind(actors, shard, worker, config), config, worker, first)


def snapshot_pass(shard, handles, config, worker, first):
    """Take the variance-reduced solver's snapshot over this loop's shard.

    Every chunk reads the current coefficients (no loop is sweeping), keeps
    its rows' loss derivatives there for the next epoch's steps, and adds its
    gradient sum (and, on the ``first`` snapshot of a fit, its column
    statistics, see :func:`column_stats`) to the blocks.  The report's loss
    sum is the exact training loss of the current coefficients.
    """
    timeout = config.timeout
    n_outputs = shard.chunks[0].Y.shape[1]
    sums = _loop_sums(shard, config.block_sizes, n_outputs, first)
    loss_sum, n_rows, max_sq_norm, kernel_time = 0.0, 0, 0.0, 0.0
    curvature = np.zeros(n_outputs)
    loss_code, _, params = config.kernel
    started = time.perf_counter()
    # a cold start's first snapshot is at w = 0: nothing to read
    at_zero = first and config.zero_start
    blocks = {} if at_zero else whole_blocks(handles, shard, config)
    for index, chunk in enumerate(shard.chunks):
        wg = scratch(shard, chunk.bounds[-1], n_outputs, width=2 * n_outputs)[2]
        if not (at_zero and is_csr(chunk)):
            pull(handles, chunk, -1, config, shard, out=wg[:, :n_outputs], blocks=blocks)
        tick = time.perf_counter()
        grad, chunk_loss, sq_norm = snapshot_chunk(chunk, wg, config,
                                                   at_zero=at_zero and is_csr(chunk))
        curvature += curvature_sums(loss_code, chunk.dsnap, chunk.W, params[P_EPSILON])
        kernel_time += time.perf_counter() - tick
        b = chunk.bounds
        stats = column_stats(chunk) if first else None
        columns = [None if stats is None else tuple(a[b[i]:b[i + 1]] for a in stats)
                   for i in range(len(handles))]
        if sums is None:
            calls = [h.call("add_snapshot", (worker, index), h.ids(ids), grad[b[i]:b[i + 1]],
                            columns[i])
                     for i, (h, ids) in enumerate(zip(handles, chunk.block_ids, strict=True))]
            for c in calls:
                c.result(timeout)
        else:
            for i, (block_sums, ids) in enumerate(zip(sums, chunk.block_ids, strict=True)):
                add_snapshot_part(block_sums, ids, grad[b[i]:b[i + 1]], columns[i])
        loss_sum += chunk_loss
        n_rows += chunk.n_rows
        max_sq_norm = max(max_sq_norm, sq_norm)
    if sums is not None:
        calls = [h.call("add_snapshot", (worker, -1), None, grad_sum,
                        None if count_sum is None else (count_sum, energy_sum))
                 for h, (grad_sum, count_sum, energy_sum) in zip(handles, sums, strict=True)]
        for c in calls:
            c.result(timeout)
    return PassReport(worker, loss_sum, n_rows, kernel_time, time.perf_counter() - started,
                      max_sq_norm=max_sq_norm, curvature=curvature)


def _loop_sums(shard, sizes, n_outputs, first):
    """Per-block snapshot sums this loop adds its chunks' parts to, or ``None``.

    With a model (times its outputs) no larger than the shard's non-zeros, the
    loop sums its chunks' parts itself (in less memory than the shard's values)
    and hands each block one part per pass: one call instead of one per chunk,
    and far fewer bytes to a block on another worker.  A larger model gets the
    chunks' sparse parts (``None``).
    """
    nnz = sum(c.X.nnz if is_csr(c) else c.X.size for c in shard.chunks)
    if not sizes or sum(sizes) * n_outputs > nnz:
        return None
    return [(np.zeros((size, n_outputs)), np.zeros(size, dtype=np.int64) if first else None,
             np.zeros(size) if first else None) for size in sizes]


def run_epochs(shard, actors, config, worker, body, first, last, target, *args):
    """Every epoch ``first .. last`` of a fit in one task.

    Each epoch is ``body(shard, handles, config, worker, target, first_of_fit,
    last_of_fit, *args)`` (:func:`sgd_epoch` or :func:`epoch_then_snapshot`),
    which returns its :class:`~.config.EpochReport` and the configuration it
    leaves.  The report goes to block 0, then the loop waits for the driver's
    :class:`~.config.Decision` (see :mod:`~dask_asyncopt.store.handoff`): stop
    (``None``), or the next sample ``target`` and maybe a new configuration.
    The last epoch's report ends the task.
    """
    secede()
    handles = bind(actors, shard, worker, config)
    timeout = config.timeout
    calls = 0
    redo = False
    for k in range(first, last + 1):
        report, config = body(shard, handles, config, worker, target, k == first, k == last,
                              *args, redo=redo)
        # the post and the wait for the decision count for this epoch
        made = remote_calls(handles) + 2 * (not handles[0].local)
        report = report._replace(remote_calls=made - calls)
        calls = made
        handles[0].call("post_epoch", k, worker, report).result(timeout)
        if k == last:
            break
        decision = handles[0].wait("await_decision", k, timeout).result(timeout)
        if decision is None:
            break
        target = decision.target
        redo = decision.redo
        if decision.config is not None:
            config = decision.config
    return worker


def sgd_epoch(shard, handles, config, worker, target, first, last, redo=False):
    """A plain SGD epoch (:func:`sweep_epoch`) for :func:`run_epochs` (its objective
    is progressive: never undone)."""
    return EpochReport(sweep_epoch(shard, handles, config, worker, target)), config


def epoch_then_snapshot(shard, handles, config, worker, target, start, last, sweep, n_samples,
                        redo=False):
    """A variance-reduced epoch: ``sweep`` (:func:`sweep_epoch` or a rule's
    gradient exchanges), a barrier across the loops at the blocks, then the
    snapshot at the epoch's end, or for the ``last`` epoch of a fit only the
    loss.  With ``start``, the fit's first snapshot comes first, and the step
    (``config.svrg.eta`` is ``None`` then) follows: ``1 / (2L)`` for the
    normalised sweeps, else from every loop's largest squared row norm, which
    the barrier after it gathers.  With ``redo`` the previous epoch was undone
    (the blocks are back at the iterate it started from): the snapshot there
    is taken again first.

    No driver calls between the phases: a task round trip through the
    scheduler would be paid per phase of every epoch.
    """
    timeout = config.timeout
    start_report = None
    if redo:
        start_report = snapshot_pass(shard, handles, config, worker, False)
        _snapshot_done(handles, ("redo", target), worker, n_samples, timeout)
        _barrier(handles, ("redo", target), worker, timeout)
    if start:
        start_report = snapshot_pass(shard, handles, config, worker, True)
        _snapshot_done(handles, ("start", target), worker, n_samples, timeout)
        max_sq_norm = _barrier(handles, ("start", target), worker, timeout,
                               start_report.max_sq_norm)
        svrg = config.svrg
        if svrg is not None:
            eta = svrg_step(svrg.smoothness, svrg.step, NORMALISED_SQ_NORM if svrg.normalise
                            else max_sq_norm + int(svrg.fit_intercept))
            config = config.with_eta(eta)
    eta = config.svrg.eta if config.svrg is not None else None
    epoch_report = sweep(shard, handles, config, worker, target)
    _barrier(handles, target, worker, timeout)
    if last:  # no loop sweeps any more: the loss of the final coefficients
        after = loss_pass(shard, handles, config, worker)
    else:
        after = snapshot_pass(shard, handles, config, worker, False)
        _snapshot_done(handles, target, worker, n_samples, timeout)
    return EpochReport(epoch_report, after, start_report, eta), config


def _barrier(handles, key, worker, timeout, value=0.0):
    """Wait at every block until all loops arrived; returns the largest ``value``."""
    calls = [h.wait("arrive", key, worker, timeout, value) for h in handles]
    return max(c.result(timeout) for c in calls)


def _snapshot_done(handles, key, worker, n_samples, timeout):
    calls = [h.call("snapshot_done", key, worker, n_samples) for h in handles]
    for c in calls:
        c.result(timeout)
