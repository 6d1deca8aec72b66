"""Gradient exchanges for update rules (``optimizer="amsgrad"``): worker loop and epochs.

The blocks are :class:`~dask_asyncopt.rule_store.RuleServer` actors holding
the rule's state next to their coordinates.  A worker loop's exchange:

1. pull the coordinates its chunk touches (every block, concurrently);
2. cut the chunk into ``steps`` minibatches and compute each minibatch's
   gradient at the pulled weights (Numba, :mod:`dask_asyncopt.grad_kernels`);
3. push the gradients to the blocks, which apply them in order (APAM: the
   server applies AMSGrad to delayed gradients).

Several gradients per exchange keep the exchange cost (one actor round trip
per block) small against compute, at the price of staleness: the ``i``-th
gradient of an exchange is at least ``i`` versions stale.

Epochs: a snapshot pass first (it counts the rows touching each coordinate,
which the penalty weights need, and, with variance reduction, stores each
row's loss derivative and sums the full gradient), then per epoch one pass of
every loop over its shard and a snapshot pass that also yields the exact
objective (after the last epoch only the loss: no step uses that snapshot),
all epochs in one task per loop (:func:`~.loop.run_epochs`).  With variance
reduction (smooth losses, the default) the step is constant and halved when an
epoch raises the objective; without, it decays as ``lr / sqrt(epoch)``.
"""

import logging
import math
import time

import numpy as np
from distributed import secede

from ..grad_kernels import minibatch_grads_csr, minibatch_grads_dense
from ..kernels import P_EPSILON
from ..penalties import sparse_penalty_scale
from .loop import (
    _check_finite,
    _is_csr,
    _Local,
    _pull,
    bind_servers,
    epoch_then_snapshot_body,
    run_snapshot,
)

logger = logging.getLogger("dask_asyncopt")

# Defaults, measured (docs/benchmarks.md, "AMSGrad"): rows per gradient and
# gradients per exchange on small shards, and the exchanges per epoch a loop
# aims at on large ones (``amsgrad_rule``).
MINIBATCH = 32
STEPS_PER_EXCHANGE = 4
EXCHANGES_PER_EPOCH = 96
DEFAULT_LR = 0.03
STALL_REDUCTIONS = 2
STALL_FACTOR = 5.0


def _grads(chunk, rows, w, replies, config):
    """Packed gradients of the chunk's minibatches at ``w`` (local coordinates)."""
    prob = config["problem"]
    grad = config["grad"]
    vr = grad["vr"]
    pen_scale = sparse_penalty_scale(grad["n_samples"],
                                     np.concatenate([r[4] for r in replies]),
                                     chunk.intercept)
    drift = np.concatenate([r[3] for r in replies]) if vr else np.zeros((0, w.shape[1]))
    dsnap = chunk.dsnap if vr else np.zeros((0, w.shape[1]))
    epsilon = prob["params"][P_EPSILON]
    batch = grad["batch"]
    n_steps = -(-rows.shape[0] // batch)
    out_rows = np.empty(n_steps, dtype=np.int64)
    K = w.shape[1]
    if _is_csr(chunk):
        X = chunk.X
        size = X.nnz + n_steps
        ptr = np.empty(n_steps + 1, dtype=np.int64)
        idx = np.empty(size, dtype=np.int64)
        g = np.empty((size, K))
        pen = np.empty(size)
        loss = minibatch_grads_csr(X.indptr, X.indices, X.data, chunk.Y, rows, w,
                                   chunk.intercept, prob["loss"], epsilon, batch, vr, dsnap,
                                   drift, pen_scale, ptr, idx, g, pen, out_rows)
        return loss, ptr, idx[:ptr[-1]], g[:ptr[-1]], pen[:ptr[-1]], out_rows
    n_local = w.shape[0]
    g = np.empty((n_steps * n_local, K))
    pen = np.empty(n_steps * n_local)
    loss = minibatch_grads_dense(chunk.X, chunk.Y, rows, w, prob["loss"], epsilon, batch, vr,
                                 dsnap, drift, pen_scale, g, pen, out_rows)
    ptr = np.arange(n_steps + 1, dtype=np.int64) * n_local
    idx = np.tile(np.arange(n_local, dtype=np.int64), n_steps)
    return loss, ptr, idx, g, pen, out_rows


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


def _push(server, bounded, *args, timeout):
    if isinstance(server, _Local):
        return server.call("push_grads", *args, timeout=timeout)
    if bounded:  # may wait for admission: off the event loop
        return server.actor.push_grads_at(*args, timeout=timeout)
    return server.actor.push_grads(*args, timeout=timeout, separate_thread=False)


def run_grad_epoch(shard, actors, config, worker, target):
    """:func:`grad_epoch` as a task of its own."""
    secede()
    return grad_epoch(shard, actors, config, worker, target)


def grad_epoch(shard, actors, config, worker, target):
    """One worker loop of gradient exchanges (see the module docstring).

    Same contract as :func:`~dask_asyncopt.solvers.loop.sweep_epoch`; ``config``
    also has ``grad``: ``vr``, ``batch`` (rows per gradient) and ``n_samples``.
    """
    servers = bind_servers(actors, config["bounded"])
    sync = config["mode"] == "sync"
    timeout = config["timeout"]
    loss_sum, n_samples, steps, kernel_time = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    while sync or n_samples < shard.n_rows:
        chunk, rows = shard.next_chunk()
        replies, w = _pull(servers, chunk, worker, config, shard, snapshot=True)
        samples = max(r[2] for r in replies)
        if sync and samples >= target:
            shard.put_back(chunk)
            break
        tick = time.perf_counter()
        chunk_loss, ptr, idx, g, pen, out_rows = _grads(chunk, rows, w, replies, config)
        parts = split_blocks(chunk, ptr, idx, g, pen)
        kernel_time += time.perf_counter() - tick
        _check_finite(chunk_loss, g)
        calls = [_push(s, config["bounded"], worker, *part, out_rows, r[1], timeout=timeout)
                 for s, part, r in zip(servers, parts, replies, strict=True)]
        for c in calls:
            c.result(timeout)
        shard.round += 1
        loss_sum += chunk_loss
        n_samples += chunk.n_rows
        steps += 1
    return {"worker": worker, "loss_sum": loss_sum, "samples": n_samples, "steps": steps,
            "kernel_time": kernel_time, "wall_time": time.perf_counter() - started}


class RuleSteps:
    """The step of a rule fit across epochs (module docstring); shared by ``adpsgd``.

    Parameters
    ----------
    lr : float
        Starting step.
    vr : bool
        Variance-reduced gradients: constant step, halved when an epoch raises
        the objective; else ``lr / sqrt(epoch)``.
    stopping : _EarlyStopping
    previous : float
        Objective before the first epoch.
    """

    def __init__(self, lr, vr, stopping, previous):
        self.lr = self.lr0 = lr
        self.vr = vr
        self.stopping = stopping
        self.previous = previous
        self.reductions = 0

    def next(self, epoch, objective, watched):
        """The step after ``epoch`` ended at ``objective``; ``None``: stop.

        ``watched`` is what early stopping watches (``run.record``'s return:
        the objective, or the validation score).
        """
        lr = self.lr
        if self.stopping.stalled(watched):
            if self.reductions == STALL_REDUCTIONS:
                return None
            # as learning_rate="adaptive": a stall ends with a smaller step first
            self.reductions += 1
            lr = self.lr / STALL_FACTOR
            self.lr0 /= STALL_FACTOR
            self.stopping.no_improve = 0
        elif not self.vr:
            lr = self.lr0 / math.sqrt(epoch + 1)
        elif objective > self.previous:
            lr = self.lr / 2.0
            logger.info("objective rose from %.6g to %.6g: step halved to %.3g",
                        self.previous, objective, lr)
        self.previous = objective
        self.lr = lr
        return lr


def rule_epoch_body(shard, actors, servers, config, worker, target, first, last, n_samples):
    """An epoch of gradient exchanges (:func:`grad_epoch`), then its snapshot pass
    (the loss alone after the fit's ``last``), for :func:`~.loop.run_epochs`."""
    return epoch_then_snapshot_body(shard, actors, servers, config, worker, target, False,
                                    last, grad_epoch, n_samples)


def rule_epochs(run, n_samples, problem, total):
    """Epochs of a rule fit (see the module docstring); returns the samples processed."""
    from .driver import _EarlyStopping, _epoch_end, _pass_reports, _snapshot_objective

    settings = run.settings
    opts = problem.rule_options
    vr = problem.svrg is not None
    reports = run.run_loops(run_snapshot, f"{settings.solver}-snapshot", 0, True)
    steps = RuleSteps(problem.rule.lr, vr, _EarlyStopping(settings.tol, settings.n_iter_no_change),
                      _snapshot_objective(run, reports, n_samples)[1])
    run.config["grad"] = {"vr": vr, "batch": opts["batch"], "n_samples": n_samples}
    first, last = settings.first_epoch, settings.max_iter
    run.start_epochs(rule_epoch_body, first, last, total + n_samples, n_samples)
    for epoch in range(first, last + 1):
        reports = run.epoch_reports(epoch)
        stats, total, loss, objective = _epoch_end(run, reports, n_samples)
        lr = steps.lr
        watched = run.record(epoch, _pass_reports(reports), stats, loss, objective, lr)
        new_lr = steps.next(epoch, objective, watched)
        if new_lr is None:
            break
        if new_lr != lr:  # the loops wait for the decision below meanwhile
            run.call_blocks("set_lr", new_lr)
        if epoch < last:
            run.proceed(epoch, total + n_samples)
    run.finish_epochs()
    return total


def exchange_sizes(rows_per_loop):
    """Rows per exchange and rows per gradient for ``batch_size="auto"``.

    A loop aims at :data:`EXCHANGES_PER_EPOCH` exchanges per pass over its
    ``rows_per_loop`` rows, with at least ``MINIBATCH * STEPS_PER_EXCHANGE``
    (128) rows each; rows per gradient and gradients per exchange both grow as
    the square root of the exchange's growth over 128 rows.  Shards of up to
    12,288 rows keep 32-row gradients, 4 per exchange; 100,000 rows: 1,042
    rows per exchange, gradients of 92 rows, 12 per exchange.
    """
    base = MINIBATCH * STEPS_PER_EXCHANGE
    rows = max(base, math.ceil(rows_per_loop / EXCHANGES_PER_EPOCH))
    batch = min(rows, math.ceil(MINIBATCH * math.sqrt(rows / base)))
    return rows, batch


def amsgrad_rule(est, rows_per_loop=0):
    """The AMSGrad rule and exchange options of an estimator's parameters.

    ``eta0 > 0`` is AMSGrad's step, else :data:`DEFAULT_LR` (0.03, also at the
    larger sizes below: larger steps overshoot in the first epoch).
    ``batch_size`` (int) is rows per exchange, cut into minibatches of
    :data:`MINIBATCH` rows; "auto": sized from the ``rows_per_loop`` rows a
    worker loop passes over per epoch (:func:`exchange_sizes`): at least
    :data:`STEPS_PER_EXCHANGE` minibatches of :data:`MINIBATCH` rows, and on
    large shards about :data:`EXCHANGES_PER_EPOCH` exchanges per epoch, so
    that the exchange's cost (one actor round trip per block) stays small
    against its compute.  With ``max_staleness`` an exchange carries one
    gradient of all its rows.
    """
    from ..rules import AMSGradRule

    lr = est.eta0 if est.eta0 > 0 else DEFAULT_LR
    if est.batch_size == "auto":
        rows, batch = exchange_sizes(rows_per_loop)
    else:
        rows = est.batch_size
        batch = min(MINIBATCH, rows)
    if est.max_staleness is not None:
        # One gradient per exchange: the i-th gradient of an exchange is i versions
        # older than the first, so several per exchange cannot all keep a bound
        # that admission control enforces on the first (and a push of n > bound
        # gradients would wait for every other loop's read to clear, which on
        # several blocks can deadlock).
        batch = rows
    rule = AMSGradRule(lr, beta1=est.beta1, beta2=est.beta2, eps=est.adam_epsilon)
    return rule, {"batch": batch, "exchange_rows": rows}
