"""Parameter store: one block of coordinates per Dask actor.

A :class:`BlockServer` owns a slice of the model (coordinates ``b, b+M,
b+2M, ...`` for block ``b`` of ``M``: interleaving balances blocks when the
frequent features are the first columns), the lazy proximal history of that
slice, and a **version counter** incremented by every applied push.  Workers
send the version they read with every push; the difference is the push's
staleness, which is measured and, with ``max_staleness``, bounded by admission
control (as in stale-synchronous parallel): a push waits while applying it
would leave another worker's outstanding read more than ``max_staleness``
versions behind, and ready pushes are applied oldest read first.  No work is
dropped; fast workers wait for a straggler only when the bound binds.

Two modes share the class:

* ``"async"`` (AsyB-ProxSGD): a push is applied on arrival.
* ``"sync"`` (the all-reduce baseline): the pushes of one round are buffered
  until every worker has pushed, then applied in worker order (so the result
  does not depend on arrival order), and the version advances once.

Methods are safe to call concurrently: Dask runs them on the actor thread or
the event loop, and a worker loop on the same worker (or the driver, when the
workers are threads of its process) calls the object directly (no round trip
through TCP to itself); a lock serialises them.
"""

import asyncio
import threading

import numpy as np

from ..kernels.lazy import add_delta, add_entries, add_rows, catch_up_all, gather, gather_packed
from ..objective.penalties import sparse_penalty_scale
from .handoff import EpochHandOff
from .replies import Pulled, Pushed, StoreStats

_RENORMALISE_ABOVE = 1e150


class FitStopped(RuntimeError):
    """Raised to worker loops when the driver stops a fit."""


def preconditioner(counts, energy, out=None):
    """Per-coordinate scale ``sqrt(n_j) / energy_j`` of the variance-reduced steps.

    ``energy_j / n_j`` is the mean square of column ``j``'s non-zeros (its
    scale) and ``n_j`` the rows touching it: the steps are invariant to a
    column's scale (a column multiplied by 1000 converges as the original
    does), and among equally scaled columns (binary features) rare ones move
    further than frequent ones, by ``1 / sqrt(n_j)`` (no scaling left rare
    coordinates far from their optimum; ``1 / n_j`` slowed the frequent ones
    and the intercept down).  0 for a column no row touches.
    """
    out = np.sqrt(counts, out=out, dtype=np.float64)
    np.divide(out, energy, out=out, where=energy > 0)
    out[energy <= 0] = 0.0
    return out


def column_scale(counts, energy):
    """Root mean square of each column's non-zeros (1 for a column no row
    touches): the scale an update rule's steps are divided by."""
    scale = np.ones(counts.shape[0])
    seen = (counts > 0) & (energy > 0)
    scale[seen] = np.sqrt(energy[seen] / counts[seen])
    return scale


def add_snapshot_part(sums, ids, grad, columns=None):
    """Add a snapshot part to ``sums`` (``(grad_sum, count_sum, energy_sum)`` of a
    block, or of one worker loop before it hands them to the block): the
    gradient sum ``grad`` at distinct coordinates ``ids`` (``None``: all) and,
    on a fit's first snapshot, ``columns``, the ``(counts, energy)`` of those
    coordinates (rows touching each, sum of its squared values)."""
    grad_sum, count_sum, energy_sum = sums
    if ids is None:
        grad_sum += grad
    else:
        add_rows(grad_sum, ids, grad)
    if columns is None:
        return
    for total, part in zip((count_sum, energy_sum), columns, strict=True):
        if ids is None:
            total += part
        else:
            add_entries(total, ids, part)


class IdSet:
    """Coordinates of one chunk in one block, named by ``key`` (unique per fit).

    A chunk's ids weigh as much as its values, and a loop on another worker
    exchanges the same chunk with a block every epoch: the first call sends
    them (``ids`` given), later calls the key alone (``ids=None``).  A loop
    waits for every call before its next one, so the first always arrives
    first (see ``_Remote`` in ``solvers/loop.py``).
    """

    __slots__ = ("key", "ids")

    def __init__(self, key, ids=None):
        self.key = key
        self.ids = ids


class BlockServer(EpochHandOff):
    """One parameter block with its proximal history and version counter.

    Block 0 also relays the worker loops' epoch reports and the driver's
    decisions (:class:`~dask_asyncopt.store.handoff.EpochHandOff`).

    Parameters
    ----------
    block_id, n_blocks : int
        This block is coordinates ``block_id :: n_blocks`` of the model.
    n_coords, n_outputs : int
        Number of coordinates in this block and of outputs (classes).
    penalty : ElasticNet
        The penalty its proximal steps apply (:mod:`~dask_asyncopt.objective.penalties`).
    unpenalised : int
        Local index of the intercept coordinate, or ``-1``.
    mode : {"async", "sync"}
    n_workers : int
        Number of pushing worker loops (rounds of ``"sync"`` wait for all).
    max_staleness : int or None
        Hold back a push while applying it would leave another worker's
        outstanding read more than this many versions behind.  Pushes whose
        reads were taken at the same version cannot all be applied at
        staleness 0: the bound holds up to those ties (no work is dropped).
    init : ndarray of shape (n_coords, n_outputs), optional
        Initial coefficients (warm start).
    samples : int
        Samples processed before (a warm start continues the step schedule).
    average_rounds : bool
        ``"sync"`` only: add, per coordinate, the mean of the round's deltas
        over the pushes that touched it rather than their sum (for updates
        that already contain their proximal steps, see ``_apply_round``).
    precondition : bool
        Serve the SVRG sweeps the preconditioner ``1 / sqrt(energy)`` (see
        :meth:`finish_snapshot`); otherwise ones (a user's constant step).
    """

    def __init__(self, block_id, n_blocks, n_coords, n_outputs, penalty, unpenalised, mode,
                 n_workers, max_staleness, init=None, samples=0, average_rounds=False,
                 precondition=True):
        self.block_id = block_id
        self.n_blocks = n_blocks
        self.penalty = penalty
        self.unpenalised = unpenalised
        self.mode = mode
        self.n_workers = n_workers
        self.max_staleness = max_staleness
        self.average_rounds = average_rounds
        self.precondition = precondition
        if init is None:
            self.w = np.zeros((n_coords, n_outputs))
        else:
            self.w = np.array(init, dtype=np.float64, order="C", copy=True)
        self.init_w = None if init is None else self.w.copy()  # restore() before any keep()
        self.w_kept = None
        self.last = np.zeros(n_coords, dtype=np.int64)
        self.hist_d = np.ones(64)
        self.hist_s = np.zeros(64)
        self.now = 0  # index into the (D, S) history
        self.version = 0  # pushes (async) or rounds (sync) applied
        self.samples = samples  # samples whose pushes were applied (the schedule's t)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # Snapshot terms of the variance-reduced solver: the gradient sum at the
        # snapshot and the number of rows touching each coordinate.
        self.grad_sum = np.zeros_like(self.w)
        self.drift = np.zeros_like(self.w)  # grad_sum / counts, fixed per snapshot
        self.counts = np.zeros(n_coords, dtype=np.int64)
        self.energy = np.zeros(n_coords)  # sum of each column's squares (intercept: rows)
        self.pen_scale = np.zeros(n_coords)  # n / counts (0: unpenalised), see pull_packed
        self.precond = np.zeros(n_coords)  # 1 / sqrt(energy), see finish_snapshot
        self.snapshot_parts = {}
        self.arrived = {}  # barrier key -> loops arrived (see arrive)
        self.reported = {}  # snapshot key -> loops whose snapshot parts are all in
        self.round_buffer = {}
        self.stopped = False
        self.reading = {}  # worker -> version of its outstanding read
        self.ready = {}  # worker -> read version of its push waiting for admission
        self.id_sets = {}  # IdSet key -> ids
        self._init_handoff()
        self.reset_stats()

    def begin(self, n_workers, undoable=False):
        """Serve another fit on the coefficients as they are (``partial_fit``), with
        ``n_workers`` loops; ``undoable``: the fit may undo an epoch (rules,
        SVRG), so keep the coefficients to go back to.

        Carried over: the coefficients with their lazy proximal history, the
        sample count (the step schedule goes on) and, in a
        :class:`~dask_asyncopt.store.rule_blocks.RuleServer`, the rule's state.
        Dropped: whatever the last fit's loops left (hand-offs, barriers,
        buffered rounds, outstanding reads, chunk ids, the version its loops
        counted rounds and staleness from), its snapshot and column
        statistics (the new data's are taken again) and its iterates to go back
        to: undoing the new fit's epoch returns here (zeros otherwise, never
        used by plain SGD).
        """
        with self.changed:
            self.n_workers = n_workers
            self.stopped = False
            self.version = 0
            self.arrived, self.reported, self.round_buffer = {}, {}, {}
            self.reading, self.ready, self.id_sets, self.snapshot_parts = {}, {}, {}, {}
            self.epoch_reports, self.completed, self.decisions = {}, {}, {}
            for a in (self.grad_sum, self.drift, self.counts, self.energy, self.pen_scale,
                      self.precond):
                a[...] = 0
            self._materialise_all()
            self.w_kept = None
            self.init_w = self.w.copy() if undoable else None
            self.reset_stats()

    def _ids(self, ids):
        """The coordinates a call names: ``ids`` itself, or those of an :class:`IdSet`."""
        if not isinstance(ids, IdSet):
            return ids
        if ids.ids is not None:
            self.id_sets[ids.key] = ids.ids
            return ids.ids
        return self.id_sets[ids.key]

    # ------------------------------------------------------------------ reads
    def pull(self, ids, worker=-1, snapshot=False, out=None):
        """Current values of local coordinates ``ids`` (``None``: all).

        ``worker`` (a worker loop's index) registers the read as outstanding
        until that worker pushes, for the ``max_staleness`` bound.
        Returns a :class:`~.replies.Pulled`; with ``snapshot`` it carries the
        variance-reduced solver's terms: ``drift`` (gradient sum at the
        snapshot over the count of rows touching each coordinate) and those
        row ``counts``.  A caller on this worker may pass ``out``, a
        ``(len(ids), n_outputs)`` array (a view of its work array): the values
        are written there and ``values`` is ``None``.
        """
        with self.lock:
            self._check_running()
            if worker >= 0 and self.max_staleness is not None:
                self.reading[worker] = self.version
            return self._pull(self._ids(ids), snapshot, out)

    def _pull(self, ids, snapshot=False, out=None):
        values = out
        if ids is None:
            catch_up_all(self.w, self.last, self.hist_d, self.hist_s, self.now,
                         self.unpenalised)
            if out is None:
                values = self.w.copy()
            else:
                out[:] = self.w
        else:
            if out is None:
                values = np.empty((ids.shape[0], self.w.shape[1]))
            gather(self.w, self.last, self.hist_d, self.hist_s, self.now, ids,
                   self.unpenalised, values)
        if out is not None:
            values = None
        if snapshot:
            return Pulled(values, self.version, self.samples, *self._snapshot_terms(ids))
        return Pulled(values, self.version, self.samples)

    def _snapshot_terms(self, ids):
        if ids is None:
            return self.drift.copy(), self.counts.copy()
        return self.drift[ids], self.counts[ids]

    def pull_packed(self, ids, out, worker=-1, min_version=None, timeout=None):
        """Write ``[values | drift | penalty scale]`` of ``ids`` into ``out``.

        The variance-reduced sweeps' read for a caller on this worker (thread
        workers): one pass straight into the sweep's array (see
        :func:`~dask_asyncopt.kernels.lazy.gather_packed`).  With ``min_version``,
        first waits for that version as :meth:`pull_when` does.  Returns a
        :class:`~.replies.Pulled` without values.
        """
        with self.changed:
            if min_version is not None:
                self._wait_for_round(min_version, timeout)
            self._check_running()
            if worker >= 0 and self.max_staleness is not None:
                self.reading[worker] = self.version
            gather_packed(self.w, self.last, self.hist_d, self.hist_s, self.now, ids,
                          self.unpenalised, self.drift, self.pen_scale, self.precond, out)
            return Pulled(None, self.version, self.samples)

    async def pull_when_async(self, ids, min_version, timeout, snapshot=False):
        """:meth:`pull_when` for remote callers."""
        loop = asyncio.get_running_loop()
        # Waiting happens on an executor thread: the event loop must stay free
        # to receive the very pushes that complete the round.
        return await loop.run_in_executor(None, self.pull_when, ids, min_version, timeout,
                                          snapshot)

    def pull_when(self, ids, min_version, timeout, snapshot=False, out=None):
        """:meth:`pull` once ``version >= min_version`` (the sync barrier); ``out``
        as :meth:`pull`."""
        with self.changed:
            self._wait_for_round(min_version, timeout)
            self._check_running()
            return self._pull(self._ids(ids), snapshot, out)

    def _wait_for_round(self, min_version, timeout):
        """Wait (lock held, via the condition) until ``version >= min_version``."""
        if not self.changed.wait_for(
                lambda: self.stopped or self.version >= min_version, timeout):
            raise TimeoutError(
                f"block {self.block_id}: round {min_version} not completed within "
                f"{timeout} s (a worker loop is lost or stalled)")

    # --------------------------------------------------------------- snapshot
    def reset_snapshot(self):
        """Start a new snapshot: zero the gradient sum (row counts are kept)."""
        with self.lock:
            self._reset_snapshot()

    def _reset_snapshot(self):
        self.grad_sum[:] = 0.0
        self.snapshot_parts = {}

    def arrive(self, key, worker, timeout, value=0.0):
        """Wait until every worker loop has arrived at barrier ``key`` (the end of
        an epoch's sweeps); the last arrival starts the next snapshot (zeroes the
        gradient sum, as :meth:`reset_snapshot`; only :meth:`finish_snapshot`
        reads it).  Returns the largest ``value`` the loops brought.

        A loop that passed this barrier at every block may add snapshot parts:
        no other loop still sweeps with the old drift.  This replaces a task
        round trip through the scheduler between the sweeps and the snapshot.
        """
        with self.changed:
            arrived = self._arrive(key, worker, value)
            if not self.changed.wait_for(lambda: self._passed(arrived), timeout):
                raise self._barrier_timeout(key, timeout)
            self._check_running()
            return max(arrived.values())

    async def arrive_async(self, key, worker, timeout, value=0.0):
        """:meth:`arrive` for remote callers (waits on the event loop, holding no
        thread, see :mod:`~dask_asyncopt.store.waits`)."""
        with self.changed:
            arrived = self._arrive(key, worker, value)
        if not await self.wait_async(lambda: self._passed(arrived), timeout):
            raise self._barrier_timeout(key, timeout)
        with self.changed:
            self._check_running()
            return max(arrived.values())

    def _arrive(self, key, worker, value):
        self._check_running()
        arrived = self.arrived.setdefault(key, {})
        arrived[worker] = value
        if len(arrived) == self.n_workers:
            self._reset_snapshot()
            self.notify()
        return arrived

    def _passed(self, arrived):
        return self.stopped or len(arrived) == self.n_workers

    def _barrier_timeout(self, key, timeout):
        return TimeoutError(
            f"block {self.block_id}: barrier {key!r} not reached by every loop "
            f"within {timeout} s (a worker loop is lost or stalled)")

    def snapshot_done(self, key, worker, n_samples):
        """Worker loop ``worker`` has added all its parts of snapshot ``key``; the
        last loop to report completes the snapshot (:meth:`finish_snapshot`)."""
        with self.lock:
            self._check_running()
            reported = self.reported.setdefault(key, set())
            reported.add(worker)
            complete = len(reported) == self.n_workers
        if complete:
            self.finish_snapshot(n_samples)

    def add_snapshot(self, key, ids, grad, columns=None):
        """Add a chunk's gradient sum (and, once per fit, its ``(counts, energy)``
        column statistics, see :func:`add_snapshot_part`) at ``ids``.

        ``key`` (worker, chunk) orders the sum: in ``"sync"`` mode parts are
        kept until :meth:`finish_snapshot` adds them in key order, so the
        floating-point sum, and the fit, do not depend on arrival order.
        """
        with self.lock:
            self._check_running()
            ids = self._ids(ids)
            if self.mode == "sync":  # a copy: a local caller reuses its arrays
                self.snapshot_parts[key] = (ids, np.array(grad), columns)
            else:
                self._add_snapshot(ids, grad, columns)

    def finish_snapshot(self, n_samples=None):
        """Complete a snapshot: add the parts kept by :meth:`add_snapshot` (``"sync"``
        mode) in key order, then fix the drift ``grad_sum / counts`` that every pull
        of the next epoch reads (computed once here, not per pull under the lock)
        and, given the number of rows ``n_samples``, the penalty scale
        ``n_samples / counts`` (0 for the unpenalised coordinate) and the
        sweeps' :func:`preconditioner`."""
        with self.lock:
            for key in sorted(self.snapshot_parts):
                self._add_snapshot(*self.snapshot_parts[key])
            self.snapshot_parts = {}
            np.divide(self.grad_sum, np.maximum(self.counts, 1)[:, None], out=self.drift)
            if n_samples is not None:
                sparse_penalty_scale(n_samples, self.counts, self.unpenalised,
                                     out=self.pen_scale)
            if not self.precondition:
                self.precond[:] = 1.0
                return
            preconditioner(self.counts, self.energy, out=self.precond)

    def _add_snapshot(self, ids, grad, columns):
        add_snapshot_part((self.grad_sum, self.counts, self.energy), ids, grad, columns)

    def svrg_terms(self):
        """The variance-reduced sweeps' per-coordinate constants of the current
        snapshot: ``(drift, pen_scale, precond)`` (see :meth:`finish_snapshot`).  They
        change only when a snapshot completes, so a loop on another worker
        fetches them once per epoch instead of with every pull."""
        with self.lock:
            return self.drift, self.pen_scale, self.precond

    def gap_terms(self, n_samples):
        """What the stopping rule's optimality certificate needs from this block at
        the last snapshot (no loop writes between a snapshot and the driver's
        decision): the penalty's
        :meth:`~dask_asyncopt.objective.penalties.ElasticNet.dual_terms` of the
        coefficients and the mean gradient ``grad_sum / n_samples``, and that
        gradient at the intercept (``None`` in the blocks without it).  Per
        output: a few floats cross to the driver, not the block."""
        with self.lock:
            self._materialise_all()
            g = self.grad_sum / n_samples
            icpt = None if self.unpenalised < 0 else g[self.unpenalised].copy()
            return self.penalty.dual_terms(self.w, g, self.unpenalised), icpt

    def coefficients(self):
        """All coefficients of the block, materialised."""
        return self.pull(None).values

    def keep(self):
        """Remember the coefficients as the iterate to go back to (an epoch was
        accepted, see :meth:`restore`)."""
        with self.lock:
            self._materialise_all()
            if self.w_kept is None:
                self.w_kept = self.w.copy()
            else:
                self.w_kept[:] = self.w

    def restore(self):
        """Go back to the coefficients last kept (the start of the fit when none
        were) and start a new snapshot: the epoch since then raised the
        objective.  The loops redo the snapshot pass at the restored iterate."""
        with self.lock:
            self._materialise_all()
            if self.w_kept is not None:
                self.w[:] = self.w_kept
            elif self.init_w is not None:
                self.w[:] = self.init_w
            else:
                self.w[:] = 0.0
            self._reset_snapshot()

    def _materialise_all(self):
        catch_up_all(self.w, self.last, self.hist_d, self.hist_s, self.now, self.unpenalised)

    def penalty_value(self):
        """``alpha * R(w)`` of this block, the intercept excluded."""
        with self.lock:
            return self._penalty_value()

    def _penalty_value(self):
        catch_up_all(self.w, self.last, self.hist_d, self.hist_s, self.now,
                     self.unpenalised)
        return self.penalty.value(self.w, self.unpenalised)

    # ----------------------------------------------------------------- writes
    def push(self, worker, ids, delta, prox_d, prox_s, n_samples, read_version,
             timeout=None):
        """Add ``delta`` to coordinates ``ids``, then the chunk's proximal map.

        Parameters
        ----------
        worker : int
            Index of the pushing worker loop (orders a sync round).
        ids : int array or None
            Local coordinates (``None``: all, in order).
        delta : (len(ids), n_outputs) array
        prox_d, prox_s : float
            Composition of the per-sample proximal maps of the chunk.
        n_samples : int
            Rows in the chunk.
        read_version : int
            The version this block had when the worker read it.
        timeout : float, optional
            Longest wait for admission under ``max_staleness``.

        Returns
        -------
        Pushed
        """
        with self.changed:
            self._check_running()
            ids = self._ids(ids)
            if self.mode == "sync":
                return self._push_sync(worker, ids, delta, prox_d, prox_s, n_samples,
                                       read_version)
            self._wait_for_admission(worker, read_version, timeout,
                                     lambda: self._admissible(worker))
            staleness = self.version - read_version
            self._apply(ids, delta, prox_d, prox_s)
            self.version += 1
            self.samples += n_samples
            self.stale_sum += staleness
            self.stale_max = max(self.stale_max, staleness)
            self.n_pushes += 1
            self.notify()
            return Pushed(self.version, self.samples, staleness)

    def _wait_for_admission(self, worker, read_version, timeout, admissible):
        """Under ``max_staleness``: hold this push (lock held, via the condition)
        until ``admissible()``; a no-op without a bound."""
        if self.max_staleness is None:
            return
        self.reading.pop(worker, None)
        self.ready[worker] = read_version
        try:
            if not self.changed.wait_for(lambda: self.stopped or admissible(), timeout):
                raise TimeoutError(
                    f"block {self.block_id}: push waited {timeout} s for a worker "
                    f"{self.max_staleness} versions behind (lost or stalled)")
        finally:
            del self.ready[worker]
        self._check_running()

    async def push_async(self, *args, **kwargs):
        """:meth:`push` for remote callers: waits on an executor thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.push(*args, **kwargs))

    def _admissible(self, worker):
        read_version = self.ready[worker]
        if read_version > min(self.ready.values()):
            return False  # an older ready push goes first
        oldest_read = min(self.reading.values(), default=self.version + 1)
        return self.version + 1 - oldest_read <= self.max_staleness

    def _push_sync(self, worker, ids, delta, prox_d, prox_s, n_samples, read_version):
        if read_version != self.version:
            raise RuntimeError(
                f"sync push for round {read_version} arrived at round {self.version}")
        self.round_buffer[worker] = (ids, delta, prox_d, prox_s, n_samples)
        if len(self.round_buffer) == self.n_workers:
            self._apply_round()
        return Pushed(self.version, self.samples, 0)

    def _apply_round(self):
        total_d, total_s, total_n = 1.0, 0.0, 0
        pushes = [self.round_buffer[worker] for worker in sorted(self.round_buffer)]
        self.round_buffer.clear()
        if self.average_rounds:
            self._add_mean([p[0] for p in pushes], [p[1] for p in pushes])
        for ids, delta, prox_d, prox_s, n_samples in pushes:
            if not self.average_rounds:
                self._add(ids, delta)
            total_s += prox_s * total_d
            total_d *= prox_d
            total_n += n_samples
        self._advance(total_d, total_s)
        self.version += 1
        self.samples += total_n
        self.n_pushes += self.n_workers
        self.notify()

    def _apply(self, ids, delta, prox_d, prox_s):
        self._add(ids, delta)
        self._advance(prox_d, prox_s)

    def _add_mean(self, ids_list, deltas):
        """Add per coordinate the mean of ``deltas`` over those touching it.

        Updates that end in a proximal step (the variance-reduced sweeps) do
        not add up: two workers starting from the same value both shrink a
        small coordinate to 0, and their summed deltas carry it across zero
        to minus its value (measured: the sync solver then settles 2e-3 above
        the optimum with twice its non-zeros).  Their mean does not overshoot;
        a coordinate only one worker touched keeps its whole delta.
        """
        n = self.w.shape[0]
        ids = np.concatenate([np.arange(n) if i is None else i for i in ids_list])
        uniq, where = np.unique(ids, return_inverse=True)
        total = np.zeros((uniq.shape[0], self.w.shape[1]))
        np.add.at(total, where, np.concatenate(deltas))
        touches = np.bincount(where, minlength=uniq.shape[0])
        self._add(uniq, total / touches[:, None])

    def _add(self, ids, delta):
        if ids is None:
            ids = np.arange(self.w.shape[0])
        add_delta(self.w, self.last, self.hist_d, self.hist_s, self.now, ids, delta,
                  self.unpenalised)

    def _advance(self, prox_d, prox_s):
        """Append one proximal map to the lazy history."""
        if prox_d == 1.0 and prox_s == 0.0:
            # The identity (updates that applied their prox already, e.g. SVRG
            # sweeps): no entry, so reads find nothing to catch up.
            return
        if self.now + 1 == self.hist_d.shape[0]:
            self.hist_d = np.concatenate([self.hist_d, np.ones_like(self.hist_d)])
            self.hist_s = np.concatenate([self.hist_s, np.zeros_like(self.hist_s)])
        d, s = self.hist_d[self.now], self.hist_s[self.now]
        self.hist_s[self.now + 1] = s + prox_s * d
        self.hist_d[self.now + 1] = d * prox_d
        self.now += 1
        if self.hist_d[self.now] > _RENORMALISE_ABOVE:
            # Materialise every coordinate and restart the history at 1 so the
            # products never overflow on very long fits with strong L2.
            catch_up_all(self.w, self.last, self.hist_d, self.hist_s, self.now,
                         self.unpenalised)
            self.hist_d[:] = 1.0
            self.hist_s[:] = 0.0
            self.last[:] = 0
            self.now = 0

    # ------------------------------------------------------------------ stats
    def stop(self):
        """Refuse further pulls and pushes and wake every waiting call.

        Worker loops cannot be cancelled from outside (a running task is a
        thread); they stop at their next exchange with any block.
        """
        with self.changed:
            self.stopped = True
            self.notify()

    def _check_running(self):
        if self.stopped:
            raise FitStopped(f"block {self.block_id}: the fit was stopped")

    def forget_reader(self, worker):
        """Drop ``worker``'s outstanding read (it stopped without pushing)."""
        with self.changed:
            self.reading.pop(worker, None)
            self.notify()

    def reset_stats(self):
        """Start a new measurement window for staleness statistics."""
        self.n_pushes = 0
        self.stale_sum = 0
        self.stale_max = 0

    def stats(self, reset=True):
        """Pushes, staleness sum and max since the last reset, and the penalty
        (a :class:`~.replies.StoreStats`)."""
        with self.lock:
            out = StoreStats(self.block_id, self.version, self.samples, self.n_pushes,
                             self.stale_sum, self.stale_max, penalty=self._penalty_value())
            if reset:
                self.reset_stats()
            return out
