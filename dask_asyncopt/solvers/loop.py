"""The worker loop: pull -> sweep -> push until the epoch's samples are done.

Runs as a Dask task on the worker that holds the loop's shard.  A block
server living on the same worker is called directly (its methods take a lock),
others through their actor handles with a timeout on every call, so a lost
peer raises instead of hanging.
"""

import math
import time

import numpy as np
from distributed import Worker, get_worker, secede
from distributed.core import Status

from ..kernels import (
    P_EPSILON,
    all_finite,
    gather_terms,
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
from ..penalties import sparse_penalty_scale
from ..schedules import svrg_step
from ..store import IdSet, add_snapshot_part

# Normalised SVRG sweeps measure every row as 1 in the preconditioner's metric; their
# step is 1 / (L * NORMALISED_SQ_NORM), half the row's own 1 / L.  Prox-SVRG's theory asks
# for at most 1 / (4L) (Xiao and Zhang 2014); 1 / L, the step until 2026-12, converged
# 1.1-2.5x slower per epoch on 7 of 9 data sets (sizes 100k-1M rows, 50k-1M columns,
# classification, multiclass and regression, L1, L2 and elastic net) and at most 1.3e-4
# better on the other 2 (docs/status.md, "The SVRG step").
NORMALISED_SQ_NORM = 2.0


class _Done:
    """An already-completed call, shaped like an ``ActorFuture``."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self, timeout=None):
        return self.value


class _Local:
    """A block server on this worker: direct calls, no network round trip.

    Reads call the server itself (:func:`_pull`, :func:`_pull_packed`): it
    writes the values straight into the loop's work arrays.
    """

    def __init__(self, server):
        self.server = server

    def call(self, method, *args, **kwargs):
        return _Done(getattr(self.server, method)(*args, **kwargs))

    def push(self, *args, timeout):
        return _Done(self.server.push(*args, timeout=timeout))

    def add_snapshot(self, key, ids, grad, columns):
        return _Done(self.server.add_snapshot(key, ids, grad, columns))

    def arrive(self, key, worker, timeout, value):
        return _Done(self.server.arrive(key, worker, timeout, value))

    def await_decision(self, epoch, timeout):
        return _Done(self.server.await_decision(epoch, timeout))


class _Remote:
    """A block server elsewhere, through its actor handle.

    Calls name a chunk's coordinates by an :class:`~dask_asyncopt.store.IdSet`:
    the ids travel with the first call of the fit only (``sent``, kept on the
    shard, records which; ``loop`` makes the names unique across loops).
    """

    def __init__(self, actor, bounded, sent=None, loop=0):
        self.actor = actor
        self.bounded = bounded
        self.sent = sent
        self.loop = loop

    def ids(self, ids):
        if ids is None or self.sent is None:
            return ids
        key = (self.loop, id(ids))  # a chunk's id arrays live as long as the shard
        if key in self.sent:
            return IdSet(key)
        self.sent.add(key)
        return IdSet(key, ids)

    def call(self, method, *args, **kwargs):
        # Short methods run on the actor worker's event loop: no thread hop.
        return getattr(self.actor, method)(*args, separate_thread=False, **kwargs)

    def pull(self, ids, worker, snapshot=False):
        return self.call("pull", self.ids(ids), worker, snapshot)

    def pull_at(self, ids, min_version, timeout, snapshot=False):
        return self.actor.pull_at(self.ids(ids), min_version, timeout, snapshot)

    def push(self, worker, ids, *args, timeout):
        if self.bounded:  # may wait for admission: off the event loop
            return self.actor.push_at(worker, self.ids(ids), *args, timeout=timeout)
        return self.actor.push(worker, self.ids(ids), *args, separate_thread=False)

    def add_snapshot(self, key, ids, grad, columns):
        return self.call("add_snapshot", key, self.ids(ids), grad, columns)

    def arrive(self, key, worker, timeout, value):
        return self.actor.arrive_at(key, worker, timeout, value)

    def await_decision(self, epoch, timeout):
        return self.actor.await_decision_at(epoch, timeout)


def local_servers():
    """Actor key -> object of every actor held by a running worker of this process
    (thread workers: the embedded default)."""
    here = {}
    for worker in list(Worker._instances):
        if worker.status in (Status.running, Status.paused):
            here.update(worker.state.actors)
    return here


def bind_servers(actors, bounded, shard=None, loop=0):
    """Direct handles for servers in this process, actor handles for the rest.

    With thread workers (the embedded default) every block lives in this
    process: calling it directly skips a round trip through the event loop
    that all in-process workers share, which would otherwise serialise every
    exchange of every loop.  The block's lock keeps calls atomic either way.
    With ``shard`` (of worker loop ``loop``), remote handles send each chunk's
    ids once per fit (see :class:`_Remote`).
    """
    here = local_servers()
    here.update(get_worker().state.actors)
    if shard is not None and not hasattr(shard, "sent_ids"):
        shard.sent_ids = {}  # block actor key -> names of the ids sent to it
    return [_Local(here[a.key]) if a.key in here else _Remote(
        a, bounded, None if shard is None else shard.sent_ids.setdefault(a.key, set()), loop)
        for a in actors]


def _share_dense(delta, prox_d, prox_s, n_loops):
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
    to 0.7 where 0.01 was right, measured), so its update is averaged.
    """
    if n_loops == 1:
        return delta, prox_d, prox_s
    if not _is_csr(chunk):
        return _share_dense(delta, prox_d, prox_s, n_loops)
    if chunk.intercept >= 0:
        delta[chunk.intercept] /= n_loops
    return delta, prox_d, prox_s


def _is_csr(chunk):
    return hasattr(chunk.X, "indptr")


def _pull(servers, chunk, worker, config, shard, snapshot=False, out=None):
    """Read the chunk's coordinates from every block into the local weight vector.

    Requests to other workers go out first, all at once; blocks on this worker
    then write their values straight into their rows of ``out`` (no reply
    array to allocate and concatenate: a model-sized copy per chunk).  Returns
    the replies (one per block; a local block's values are ``None``) and the
    values, in ``out`` when given.
    """
    timeout = config["timeout"]
    sync = config["mode"] == "sync" and worker >= 0
    b = chunk.bounds
    if out is None:
        out = np.empty((b[-1], chunk.Y.shape[1]))
    pairs = list(zip(servers, chunk.block_ids, strict=True))
    calls = {i: (s.pull_at(ids, shard.round, timeout, snapshot) if sync else
                 s.pull(ids, worker, snapshot))
             for i, (s, ids) in enumerate(pairs) if not isinstance(s, _Local)}
    replies = [None] * len(pairs)
    for i, (s, ids) in enumerate(pairs):
        if isinstance(s, _Local):
            dest = out[b[i]:b[i + 1]]
            replies[i] = (s.server.pull_when(ids, shard.round, timeout, snapshot, dest) if sync
                          else s.server.pull(ids, worker, snapshot, dest))
    for i, call in calls.items():
        replies[i] = call.result(timeout)
        out[b[i]:b[i + 1]] = replies[i][0]
    return replies, out


def _pull_packed(servers, chunk, worker, config, shard, packed, terms):
    """The SVRG read of a CSR chunk, into the sweep's ``packed`` rows.

    Blocks on this worker write ``[values | drift | penalty scale | precond]``
    of the chunk's coordinates straight into them (one Numba pass per block, GIL
    released) instead of returning arrays to concatenate and pack: that glue
    was a third of a chunk's time next to the sweep (measured, 93k
    coordinates).  Blocks on other workers send only the values; the other
    columns come from ``terms`` (:meth:`BlockServer.svrg_terms`, fetched
    once per epoch).  Returns replies shaped like :func:`_pull`'s.
    """
    sync = config["mode"] == "sync" and worker >= 0
    min_version = shard.round if sync else None
    timeout = config["timeout"]
    n_outputs = chunk.Y.shape[1]
    b = chunk.bounds
    pairs = list(zip(servers, chunk.block_ids, strict=True))
    # remote reads in flight first, then the local blocks' writes
    calls = {i: (s.pull_at(ids, min_version, timeout) if sync else s.pull(ids, worker))
             for i, (s, ids) in enumerate(pairs) if not isinstance(s, _Local)}
    replies = [None] * len(pairs)
    for i, (s, ids) in enumerate(pairs):
        if isinstance(s, _Local):
            replies[i] = s.server.pull_packed(ids, packed[b[i]:b[i + 1]], worker, min_version,
                                              timeout)
    for i, call in calls.items():
        replies[i] = call.result(timeout)
        rows = packed[b[i]:b[i + 1]]
        rows[:, :n_outputs] = replies[i][0]
        gather_terms(*terms[i], chunk.block_ids[i], rows)
    return replies


def _sweep_packed(chunk, rows, packed, config):
    """Variance-reduced steps on a packed chunk ``[w | drift | penalty scale |
    precond]`` (``w`` updated in place, the prox applied in the sweep); returns
    its loss (0: the solvers take the exact loss from the snapshot pass)."""
    prob = config["problem"]
    svrg = config["svrg"]
    epsilon = prob["params"][P_EPSILON]
    normalise = svrg["normalise"]
    if _is_csr(chunk):
        X = chunk.X
        return sweep_csr_svrg(X.indptr, X.indices, X.data, chunk.Y, rows, packed,
                              chunk.intercept, chunk.dsnap, prob["loss"], epsilon, svrg["eta"],
                              svrg["alpha"], svrg["l1_ratio"], False, normalise)
    return sweep_dense_svrg(chunk.X, chunk.Y, rows, packed, chunk.dsnap, prob["loss"], epsilon,
                            svrg["eta"], svrg["alpha"], svrg["l1_ratio"], False, normalise)


def _pack_dense_terms(chunk, terms, packed):
    """Columns ``K:`` of a dense chunk's ``packed`` rows: every block's drift,
    penalty scale and preconditioner (a dense chunk reads whole blocks)."""
    n_outputs = chunk.Y.shape[1]
    b = chunk.bounds
    for i, (drift, scale, precond) in enumerate(terms):
        packed[b[i]:b[i + 1], n_outputs:2 * n_outputs] = drift
        packed[b[i]:b[i + 1], 2 * n_outputs] = scale
        packed[b[i]:b[i + 1], 2 * n_outputs + 1] = precond


def _scratch(shard, n_local, n_outputs, width=None):
    """Work arrays of one chunk, reused across chunks and epochs (kept on the shard).

    Three C-contiguous arrays of ``n_local`` rows: the values read, the values
    swept (then the delta) and the SVRG sweeps' packed ``[w | drift | scale |
    precond]`` (``2K + 2`` columns, or ``width``: the snapshot pass's ``[w | gradient]``
    lives in the same memory, phases of one loop never overlap).  On Dask's
    process workers every model-sized NumPy temporary is a page-faulting mmap
    (see :func:`~dask_asyncopt.kernels.step_replica`); reusing them removes that
    cost from the loop.  A chunk's arrays are free again once its pushes
    returned (sync rounds apply the buffered deltas before the next pull
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


def _check_finite(loss, delta=None, finite=True):
    """Raise unless ``loss``, every entry of ``delta`` and the flag ``finite``
    (a kernel's own check) say the numbers are finite."""
    if not (finite and math.isfinite(loss)
            and (delta is None or all_finite(np.ravel(delta)))):
        raise FloatingPointError(
            "the loss or the coefficients became non-finite: the step size is too "
            "large for this data; lower eta0 (or alpha with learning_rate='optimal') "
            "or scale the features")


def _sweep_sgd(chunk, rows, w, replies, samples, config):
    prob = config["problem"]
    t_stride = float(config["n_loops"])
    if _is_csr(chunk):
        X = chunk.X
        return sweep_csr(X.indptr, X.indices, X.data, chunk.Y, rows, w, chunk.intercept,
                         prob["loss"], prob["schedule"], prob["params"], samples + 1.0,
                         t_stride)
    return sweep_dense(chunk.X, chunk.Y, rows, w, -1, prob["loss"], prob["schedule"],
                       prob["params"], samples + 1.0, t_stride)


def _sweep_svrg(chunk, rows, w, replies, samples, config):
    """Variance-reduced steps on ``w`` (in place) from replies carrying each
    block's drift and row counts (adpsgd's replicas, whose step ``eta`` is not
    preconditioned: ``c_j = 1``); ``config["packed"]``, when given, is the work
    array of the packed rows."""
    n_outputs = w.shape[1]
    pen_scale = getattr(chunk, "pen_scale", None)
    if pen_scale is None:  # row counts never change within a fit: once per chunk
        pen_scale = sparse_penalty_scale(config["svrg"]["n_samples"],
                                         np.concatenate([r[4] for r in replies]),
                                         chunk.intercept)
        chunk.pen_scale = pen_scale
    # weights | drift | penalty scale | precond, side by side (see sweep_csr_svrg)
    packed = config.get("packed")
    if packed is None or packed.shape[0] != w.shape[0]:
        packed = np.empty((w.shape[0], 2 * n_outputs + 2))
    packed[:, :n_outputs] = w
    np.concatenate([r[3] for r in replies], out=packed[:, n_outputs:2 * n_outputs])
    packed[:, 2 * n_outputs] = pen_scale
    packed[:, 2 * n_outputs + 1] = 1.0
    loss = _sweep_packed(chunk, rows, packed, config)
    w[:] = packed[:, :n_outputs]
    return loss, 1.0, 0.0  # identity prox at the block: already applied


def sweep_epoch(shard, actors, config, worker, target):
    """Run one worker loop until the global sample count reaches ``target``.

    Parameters
    ----------
    shard : WorkerShard
    actors : list of Actor
        Block servers, in block order.
    config : dict
        ``mode`` ("async"/"sync"), ``problem`` (sweep arguments), ``n_loops``,
        ``timeout``, ``bounded``, and ``svrg`` (step, penalty and sample
        count of the variance-reduced solver, or ``None`` for plain SGD).
    worker : int
        This loop's index.
    target : int
        Sync rounds stop once this many samples have been processed in total
        (all loops); an asynchronous loop stops after one pass over its shard.

    Returns
    -------
    dict with the loss sum and count of this loop's samples, exchanges, time
    in kernels and wall time.
    """
    servers = bind_servers(actors, config["bounded"], shard, worker)
    sync = config["mode"] == "sync"
    timeout = config["timeout"]
    n_loops = config["n_loops"]
    svrg = config.get("svrg") is not None
    # Reads of other workers' blocks carry only the weights: the drift and penalty
    # scale change only when a snapshot completes (between epochs), so they come
    # once per epoch here (for blocks in this process, references to them).
    terms = [s.call("svrg_terms").result(timeout) for s in servers] if svrg else None
    loss_sum, n_samples, steps, kernel_time = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    # Asynchronous loops each take exactly their own shard once per epoch: were a
    # faster loop to take more, its shard would weigh more in the objective and
    # the iterates would converge to the optimum of that skewed objective.
    while sync or n_samples < shard.n_rows:
        chunk, rows = shard.next_chunk()
        n_outputs = chunk.Y.shape[1]
        w0, w, packed = _scratch(shard, chunk.bounds[-1], n_outputs)
        packed_read = svrg and _is_csr(chunk)
        if packed_read:
            replies = _pull_packed(servers, chunk, worker, config, shard, packed, terms)
        else:
            replies, w0 = _pull(servers, chunk, worker, config, shard, out=w0)
        samples = max(r[2] for r in replies)
        if sync and samples >= target:
            shard.put_back(chunk)
            break
        tick = time.perf_counter()
        if svrg:
            if packed_read:
                w0[:] = packed[:, :n_outputs]
            else:  # dense chunks
                packed[:, :n_outputs] = w0
                _pack_dense_terms(chunk, terms, packed)
            # identity prox at the blocks: the sweep applied it
            chunk_loss, prox_d, prox_s = _sweep_packed(chunk, rows, packed, config), 1.0, 0.0
            swept = packed[:, :n_outputs]
        else:
            w[:] = w0
            chunk_loss, prox_d, prox_s = _sweep_sgd(chunk, rows, w, replies, samples, config)
            swept = w
        # The delta goes to ``w``, not ``packed``: a sync round keeps it until the
        # last loop pushed, while the next chunk's reads already fill ``packed``.
        finite = subtract_finite(swept, w0, w)
        delta = w
        if not (svrg and sync):  # else the blocks average each round's deltas
            delta, prox_d, prox_s = _combine(chunk, delta, prox_d, prox_s, n_loops)
        kernel_time += time.perf_counter() - tick
        _check_finite(chunk_loss, finite=finite)
        b = chunk.bounds
        calls = [s.push(worker, ids, delta[b[i]:b[i + 1]], prox_d, prox_s, chunk.n_rows,
                        r[1], timeout=timeout)
                 for i, (s, ids, r) in enumerate(zip(servers, chunk.block_ids, replies,
                                                     strict=True))]
        for c in calls:
            c.result(timeout)
        shard.round += 1
        loss_sum += chunk_loss
        n_samples += chunk.n_rows
        steps += 1
    return {
        "worker": worker,
        "loss_sum": loss_sum,
        "samples": n_samples,
        "steps": steps,
        "kernel_time": kernel_time,
        "wall_time": time.perf_counter() - started,
    }


def _loss_pass(shard, servers, config, worker):
    """Training loss of the current coefficients over this loop's shard.

    A variance-reduced fit's last epoch needs its exact objective but no new
    snapshot (the next fit starts with its own): the loss alone skips the
    snapshot's gradient sums, derivative store and block updates.

    Returns
    -------
    dict with the loss sum, the number of rows, kernel and wall time.
    """
    prob = config["problem"]
    epsilon = prob["params"][P_EPSILON]
    loss_sum, n_rows, kernel_time = 0.0, 0, 0.0
    started = time.perf_counter()
    for chunk in shard.chunks:
        w = _scratch(shard, chunk.bounds[-1], chunk.Y.shape[1])[0]
        _, w = _pull(servers, chunk, -1, config, shard, out=w)
        tick = time.perf_counter()
        if _is_csr(chunk):
            X = chunk.X
            icpt = w[chunk.intercept] if chunk.intercept >= 0 else np.zeros(w.shape[1])
            loss_sum += loss_sum_csr(X.indptr, X.indices, X.data, chunk.Y, w, icpt,
                                     prob["loss"], epsilon)
        else:  # dense chunks carry the intercept as a column of ones
            loss_sum += loss_sum_dense(chunk.X, chunk.Y, w, np.zeros(w.shape[1]),
                                       prob["loss"], epsilon)
        kernel_time += time.perf_counter() - tick
        n_rows += chunk.n_rows
    _check_finite(loss_sum)
    return {"worker": worker, "loss_sum": loss_sum, "samples": n_rows,
            "kernel_time": kernel_time, "wall_time": time.perf_counter() - started}


def snapshot_chunk(chunk, wg, prob, at_zero=False):
    """Snapshot one chunk at its weights, columns ``:K`` of ``wg`` (n_local, 2K):
    keep its rows' loss derivatives on the chunk (for the next epoch's steps) and
    sum its gradient into columns ``K:`` (see :func:`snapshot_csr`).  Returns
    that gradient sum (a view), the loss sum and the largest squared row norm.
    ``at_zero``: the weights are all zeros (CSR chunks then do not read them)."""
    epsilon = prob["params"][P_EPSILON]
    dsnap = getattr(chunk, "dsnap", None)  # no sweep reads it during a snapshot: reuse
    if dsnap is None or dsnap.shape != chunk.Y.shape:
        dsnap = np.empty(chunk.Y.shape)
    n_outputs = wg.shape[1] // 2
    grad = wg[:, n_outputs:]
    grad[:] = 0.0
    if _is_csr(chunk):
        X = chunk.X
        loss, sq_norm = snapshot_csr(X.indptr, X.indices, X.data, chunk.Y, wg,
                                     chunk.intercept, prob["loss"], epsilon, dsnap, at_zero)
    else:
        loss, sq_norm = snapshot_dense(chunk.X, chunk.Y, wg, prob["loss"], epsilon, dsnap)
    _check_finite(loss, grad)
    chunk.dsnap = dsnap
    return grad, loss, sq_norm


def _row_counts(chunk):
    """Rows of the chunk touching each of its local coordinates."""
    if chunk.counts is not None:  # counted when the chunk was built
        return chunk.counts
    if _is_csr(chunk):
        counts = np.bincount(chunk.X.indices, minlength=chunk.X.shape[1])
        if chunk.intercept >= 0:
            counts[chunk.intercept] = chunk.n_rows
        return counts
    return np.full(chunk.X.shape[1], chunk.n_rows, dtype=np.int64)


def _column_stats(chunk):
    """Rows touching each local coordinate of the chunk and the sum of its
    squared values (the intercept: a column of ones)."""
    energy = chunk.energy
    if energy is None:  # chunks not built by make_shard
        if _is_csr(chunk):
            energy = np.bincount(chunk.X.indices, weights=np.square(chunk.X.data),
                                 minlength=chunk.X.shape[1])
            if chunk.intercept >= 0:
                energy[chunk.intercept] = chunk.n_rows
        else:
            energy = np.einsum("ij,ij->j", chunk.X, chunk.X)
    return _row_counts(chunk), energy


def run_snapshot(shard, actors, config, worker, first):
    """Take the variance-reduced solver's snapshot over this loop's shard.

    Every chunk reads the current coefficients (no loop is sweeping: the
    driver runs this before a rule fit's first epoch), keeps its rows' loss derivatives there
    for the next epoch's steps, and adds its gradient sum (and, on the
    ``first`` snapshot of a fit, its column statistics, see
    :func:`_column_stats`) to the blocks.

    Returns
    -------
    dict with the loss sum at the snapshot (the exact training loss of the
    current coefficients), the number of rows, the largest squared row norm
    and the time in kernels.
    """
    secede()
    return _snapshot_pass(shard, bind_servers(actors, False, shard, worker), config, worker,
                          first)


def _snapshot_pass(shard, servers, config, worker, first):
    timeout = config["timeout"]
    prob = config["problem"]
    n_outputs = shard.chunks[0].Y.shape[1]
    sums = _loop_sums(shard, config.get("block_sizes"), n_outputs, first)
    loss_sum, n_rows, max_sq_norm, kernel_time = 0.0, 0, 0.0, 0.0
    started = time.perf_counter()
    for index, chunk in enumerate(shard.chunks):
        wg = _scratch(shard, chunk.bounds[-1], n_outputs, width=2 * n_outputs)[2]
        # a cold start's first snapshot is at w = 0: nothing to read
        at_zero = first and config.get("zero_start", False) and _is_csr(chunk)
        if not at_zero:
            _pull(servers, chunk, -1, config, shard, out=wg[:, :n_outputs])
        tick = time.perf_counter()
        grad, chunk_loss, sq_norm = snapshot_chunk(chunk, wg, prob, at_zero=at_zero)
        kernel_time += time.perf_counter() - tick
        b = chunk.bounds
        stats = _column_stats(chunk) if first else None
        columns = [None if stats is None else tuple(a[b[i]:b[i + 1]] for a in stats)
                   for i in range(len(servers))]
        if sums is None:
            calls = [s.add_snapshot((worker, index), ids, grad[b[i]:b[i + 1]], columns[i])
                     for i, (s, ids) in enumerate(zip(servers, chunk.block_ids, strict=True))]
            for c in calls:
                c.result(timeout)
        else:
            for i, (block_sums, ids) in enumerate(zip(sums, chunk.block_ids, strict=True)):
                add_snapshot_part(block_sums, ids, grad[b[i]:b[i + 1]], columns[i])
        loss_sum += chunk_loss
        n_rows += chunk.n_rows
        max_sq_norm = max(max_sq_norm, sq_norm)
    if sums is not None:
        calls = [s.add_snapshot((worker, -1), None, grad_sum,
                                None if count_sum is None else (count_sum, energy_sum))
                 for s, (grad_sum, count_sum, energy_sum) in zip(servers, sums, strict=True)]
        for c in calls:
            c.result(timeout)
    return {"worker": worker, "loss_sum": loss_sum, "samples": n_rows,
            "max_sq_norm": max_sq_norm, "kernel_time": kernel_time,
            "wall_time": time.perf_counter() - started}


def _loop_sums(shard, sizes, n_outputs, first):
    """Per-block snapshot sums this loop adds its chunks' parts to, or ``None``.

    With a model (times its outputs) no larger than the shard's non-zeros, the
    loop sums its chunks' parts itself (in less memory than the shard's values)
    and hands each block one part per pass: one call instead of one per chunk,
    and 400 KB instead of ~40 x 0.7 MB to a block on another worker at 1M rows
    (the first snapshot on a process cluster went from 0.37-0.46 to 0.15-0.21 s,
    measured).  A larger model gets the chunks' sparse parts (``None``).
    """
    nnz = sum(c.X.nnz if _is_csr(c) else c.X.size for c in shard.chunks)
    if sizes is None or sum(sizes) * n_outputs > nnz:
        return None
    return [(np.zeros((size, n_outputs)), np.zeros(size, dtype=np.int64) if first else None,
             np.zeros(size) if first else None) for size in sizes]


def run_epochs(shard, actors, config, worker, epoch, first, last, target, *args):
    """Every epoch ``first .. last`` of a fit in one task.

    Each epoch is ``epoch(shard, actors, servers, config, worker, target,
    first_of_fit, last_of_fit, *args)`` (one of the ``*_epoch_body`` functions
    below; ``servers`` are the bound handles of ``actors``), which returns its
    report and the config it leaves.  The report goes to block 0, then the loop
    waits for the driver's decision (see :mod:`~dask_asyncopt.handoff`): stop,
    or the next sample ``target`` and ``config`` changes.  The last epoch's
    report ends the task.
    """
    secede()
    servers = bind_servers(actors, False, shard, worker)
    timeout = config["timeout"]
    for k in range(first, last + 1):
        report, config = epoch(shard, actors, servers, config, worker, target, k == first,
                               k == last, *args)
        servers[0].call("post_epoch", k, worker, report).result(timeout)
        if k == last:
            break
        decision = servers[0].await_decision(k, timeout).result(timeout)
        if decision is None:
            break
        target = decision["target"]
        config = dict(config, **decision["config"])
    return {"worker": worker}


def sgd_epoch_body(shard, actors, servers, config, worker, target, first, last):
    """A plain SGD epoch (:func:`sweep_epoch`) for :func:`run_epochs`."""
    return sweep_epoch(shard, actors, config, worker, target), config


def epoch_then_snapshot_body(shard, actors, servers, config, worker, target, start, last, loop,
                             n_samples):
    """A variance-reduced epoch: ``loop`` (:func:`sweep_epoch` or a rule's epoch
    pass), a barrier across the loops at the blocks, then the snapshot at the
    epoch's end, or for the ``last`` epoch of a fit only the loss.  With
    ``start``, the fit's first snapshot comes first, and the step
    (``config["svrg"]["eta"]`` is ``None`` then) follows: ``1 / (2L)`` for the
    normalised sweeps, else from every loop's largest squared row norm, which
    the barrier after it gathers.

    No driver calls between the phases: a task round trip through the
    scheduler costs ~12 ms on a thread ``LocalCluster`` (measured), paid per
    phase of every epoch.

    Returns
    -------
    report : dict
        The reports of the first snapshot (``"start"``, with ``start``), the
        epoch (``"epoch"``) and the pass after it (``"after"``), and the step
        the epoch took (``"eta"``).
    config : dict
        ``config`` with the step set.
    """
    timeout = config["timeout"]
    out = {}
    if start:
        out["start"] = _snapshot_pass(shard, servers, config, worker, True)
        _snapshot_done(servers, ("start", target), worker, n_samples, timeout)
        svrg = config["svrg"]
        max_sq_norm = _barrier(servers, ("start", target), worker, timeout,
                               out["start"]["max_sq_norm"])
        eta = svrg_step(svrg["smoothness"], svrg["step"], NORMALISED_SQ_NORM if svrg["normalise"]
                        else max_sq_norm + int(svrg["fit_intercept"]))
        config = dict(config, svrg=dict(svrg, eta=eta))
    out["eta"] = config["svrg"]["eta"] if config.get("svrg") else None
    out["epoch"] = loop(shard, actors, config, worker, target)
    _barrier(servers, target, worker, timeout)
    if last:  # no loop sweeps any more: the loss of the final coefficients
        out["after"] = _loss_pass(shard, servers, config, worker)
    else:
        out["after"] = _snapshot_pass(shard, servers, config, worker, False)
        _snapshot_done(servers, target, worker, n_samples, timeout)
    return out, config


def _barrier(servers, key, worker, timeout, value=0.0):
    """Wait at every block until all loops arrived; returns the largest ``value``."""
    calls = [s.arrive(key, worker, timeout, value) for s in servers]
    return max(c.result(timeout) for c in calls)


def _snapshot_done(servers, key, worker, n_samples, timeout):
    calls = [s.call("snapshot_done", key, worker, n_samples) for s in servers]
    for c in calls:
        c.result(timeout)
