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
import mmap
import threading

import numpy as np

from ..kernels.columns import mean_at, renumber_columns
from ..kernels.lazy import (
    add_delta,
    add_delta_logged,
    add_entries,
    add_rows,
    catch_up_all,
    gather,
    gather_packed,
    pack_terms,
    undo_log,
)
from .handoff import EpochHandOff
from .replies import Pulled, Pushed, StoreStats

_RENORMALISE_ABOVE = 1e150
#: restart the lazy history before its index leaves the int32 ``last`` array's range
_MAX_HISTORY = 2**31 - 2
#: a block keeps the list of coordinates its data touches (see ``BlockServer.active``)
#: while they are at most this share of it; a larger share: all its coordinates
ACTIVE_SHARE = 1 / 8
_NO_HISTORY = np.zeros(0, dtype=np.int32)
_NO_VALUES = np.zeros((0, 1))
_LOG_START = 1024
_SLICE = 1 << 20
_WIDE_BYTES = 1 << 22


def wide_zeros(shape, dtype=np.float64):
    """Zeros for an array as wide as a model: anonymous memory on 4 KB pages.

    A hashed model's data touches scattered coordinates.  NumPy asks for huge
    pages (2 MB) on large arrays, so one touched coordinate makes the kernel
    zero and map 2 MB: the whole array ends up in memory and paid for at its
    first touch.  On 4 KB pages only the pages holding touched coordinates
    are ever mapped (the rest read as zeros without memory).
    """
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    advise = getattr(mmap, "MADV_NOHUGEPAGE", None)
    if size < _WIDE_BYTES or advise is None:
        return np.zeros(shape, dtype=dtype)
    memory = mmap.mmap(-1, size)
    memory.madvise(advise)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)


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


def _check_float32(precond, counts, energy):
    """Raise a ``ValueError`` naming the fix unless every :func:`preconditioner`
    value of a column with non-zeros is a non-zero, finite float32 (as the
    blocks keep it): a column's scale far from 1 (root mean square beyond
    about 1e21, or below about 1e-19, depending on its row count) would round
    it to 0, a coordinate that silently never moves, or to infinity.  Values
    in float32's subnormal range keep fewer bits: a step scale off by a few
    percent, which moves no fixed point."""
    f32 = np.finfo(np.float32)
    bad = (counts > 0) & (energy > 0) & (
        (precond < f32.smallest_subnormal) | (precond > f32.max))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        rms = float(np.sqrt(energy[j] / counts[j]))
        raise ValueError(
            f"a feature's non-zero values have a root mean square of {rms:.3g}, too far "
            "from 1 for the variance-reduced steps (their per-feature scale is kept in "
            "float32); scale the features (e.g. sklearn.preprocessing.StandardScaler or "
            "MaxAbsScaler), or pass variance_reduction=None")


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
    coordinates (rows touching each, sum of its squared values); ``grad``
    ``None``: the columns alone."""
    grad_sum, count_sum, energy_sum = sums
    if grad is None:
        pass
    elif ids is None:
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

    **Memory follows the data, not the width.**  A hashed model has far more
    coordinates than its data touches, so a block keeps per coordinate only
    what every coordinate needs, 24 bytes with one output under SVRG: the
    coefficients (float64), the snapshot's gradient sum, divided in place into
    the drift when the snapshot completes (float64; one array: a snapshot's
    first part arrives after every loop passed the barrier that ends the
    sweeps, so no loop reads the drift while it sums), the rows touching each
    column (int32: the drift's divisor and the penalty scale ``n / n_j``,
    computed where it is read) and the sweeps' preconditioner (float32: a
    per-coordinate step scale, which moves no fixed point).  The lazy proximal
    timestamps (int32) exist only once a proximal map is pushed (plain SGD);
    the snapshot arrays only once a snapshot is taken.  What changes is kept
    as it changes: until the fit's first snapshot names the coordinates its
    data touches (``active``; ``None``: more than :data:`ACTIVE_SHARE` of
    them, taken as all), the coordinates each push touched, with their
    previous values when the fit may undo an epoch (``undoable``), in one log
    (:func:`~dask_asyncopt.kernels.lazy.add_delta_logged`) that serves
    :meth:`restore` and the driver's checkpoints (:meth:`changes`); once
    ``active`` is fixed no push reaches another coordinate, so the iterate to
    go back to is ``w[active]`` (``kept``, copied at each :meth:`keep`) and the
    changes are among ``active``: the pushes log nothing (a log entry per
    pushed coordinate, compacted by sorting, cost more than the sweeps: an
    epoch pushes each active coordinate many times).  A block whose data
    touches most of it (``active`` ``None``) keeps a whole copy, 8 more
    bytes per coordinate, less than its log took.  Per epoch a block then
    does work in the coordinates its data touches, not in its size.

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
        Serve the SVRG sweeps the preconditioner ``sqrt(counts) / energy`` (see
        :meth:`finish_snapshot`); otherwise ones (a user's constant step).
    undoable : bool
        The fit may undo an epoch (:meth:`keep`, :meth:`restore`): log the
        values each push replaces.  Such a block takes no proximal maps (the
        SVRG sweeps apply theirs): a logged value is the coordinate's value
        at any later point of the history too.
    track : bool
        Log which coordinates change, for :meth:`changes` (the driver's
        checkpoints).
    """

    #: Coefficients change by an update rule's steps and catch-up, not only by
    #: pushed deltas (``RuleServer``): undo keeps whole copies, :meth:`changes`
    #: returns whole blocks and the column energies stay (the rule scales its
    #: steps by them).
    RULE_UPDATES = False

    def __init__(self, block_id, n_blocks, n_coords, n_outputs, penalty, unpenalised, mode,
                 n_workers, max_staleness, init=None, samples=0, average_rounds=False,
                 precondition=True, undoable=False, track=False):
        self.block_id = block_id
        self.n_blocks = n_blocks
        self.penalty = penalty
        self.unpenalised = unpenalised
        self.mode = mode
        self.n_workers = n_workers
        self.max_staleness = max_staleness
        self.average_rounds = average_rounds
        if average_rounds:  # load (or compile) the rounds' kernels now, not under the lock
            mean_at(renumber_columns(np.zeros(1, np.int64), 1, 1)[1], np.zeros((1, 1)), 1)
        self.precondition = precondition
        if init is None:
            self.w = wide_zeros((n_coords, n_outputs))
        else:
            self.w = np.array(init, dtype=np.float64, order="C", copy=True)
        # whole copies to go back to, only for RULE_UPDATES (restore() before any keep())
        self.init_w = None if init is None or not self.RULE_UPDATES else self.w.copy()
        self.w_set = init is not None  # values not all zero may sit anywhere (see active)
        self.w_kept = None
        self.last = _NO_HISTORY  # int32 per coordinate once a proximal map is pushed
        self.hist_d = np.ones(64)
        self.hist_s = np.zeros(64)
        self.now = 0  # index into the (D, S) history
        self.version = 0  # pushes (async) or rounds (sync) applied
        self.samples = samples  # samples whose pushes were applied (the schedule's t)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._drop_snapshot()
        self.snapshot_parts = {}
        self.arrived = {}  # barrier key -> loops arrived (see arrive)
        self.reported = {}  # snapshot key -> loops whose snapshot parts are all in
        self.round_buffer = {}
        self.stopped = False
        self.reading = {}  # worker -> version of its outstanding read
        self.ready = {}  # worker -> read version of its push waiting for admission
        self.id_sets = {}  # IdSet key -> ids
        self._init_log(undoable, track)
        self._init_handoff()
        self.reset_stats()

    def _drop_snapshot(self):
        """Forget the snapshot terms and column statistics (allocated by the first
        snapshot of a fit, see :meth:`_snapshot_arrays`)."""
        self.drift = None  # the snapshot's gradient sum, then (finished) the drift
        self.counts = None  # rows touching each coordinate (int32)
        self.precond = None  # the sweeps' preconditioner (float32)
        self.energy = None  # sum of each column's squares: whole-block parts (narrow models)
        # while the columns come in, and for RULE_UPDATES
        self.n_rows = 0  # rows of the fit's data: the penalty scale's numerator
        self.columns_added = False  # a snapshot part brought column statistics
        self.column_parts = []  # ... as (ids, counts, energy), summed once all are in
        self.summing = False  # drift holds a snapshot's sum being gathered, not the drift
        self.active = None  # coordinates some row touches (int32), None: all
        self.inactive_penalty = None  # penalty of the others (they never change)
        self.fixed = False  # the first snapshot fixed active (see _fix_columns)
        self.kept = None  # undoable, once active is fixed: w[active] (or w) to go back to

    def _snapshot_arrays(self):
        if self.drift is None:
            n_coords, n_outputs = self.w.shape
            self.drift = wide_zeros((n_coords, n_outputs))
            self.counts = wide_zeros(n_coords, dtype=np.int32)
            self.precond = wide_zeros(n_coords, dtype=np.float32)
            self.summing = True  # a sum of nothing: zeros, no need to write them (pages)

    def _init_log(self, undoable, track):
        self.undoable = undoable and not self.RULE_UPDATES
        self.track = track
        self.log_ids = np.zeros(0, dtype=np.int32)
        self.log_values = _NO_VALUES
        self.n_log = 0  # log entries since the last keep() (the undo log)
        self.n_reported = 0  # ... of which changes() reported the first n_reported
        self.pending = []  # coordinates changed, not yet reported, no longer in the log
        self.whole_changed = False  # a proximal map changed every coordinate since

    def begin(self, n_workers, undoable=False, track=False):
        """Serve another fit on the coefficients as they are (``partial_fit``), with
        ``n_workers`` loops; ``undoable`` and ``track`` as the constructor's.

        Carried over: the coefficients with their lazy proximal history, the
        sample count (the step schedule goes on) and, in a
        :class:`~dask_asyncopt.store.rule_blocks.RuleServer`, the rule's state.
        Dropped: whatever the last fit's loops left (hand-offs, barriers,
        buffered rounds, outstanding reads, chunk ids, the version its loops
        counted rounds and staleness from), its snapshot and column
        statistics (the new data's are taken again) and its iterates to go back
        to: undoing the new fit's epoch returns here.
        """
        with self.changed:
            self.n_workers = n_workers
            self.stopped = False
            self.version = 0
            self.arrived, self.reported, self.round_buffer = {}, {}, {}
            self.reading, self.ready, self.id_sets, self.snapshot_parts = {}, {}, {}, {}
            self.epoch_reports, self.completed, self.decisions = {}, {}, {}
            self._drop_snapshot()
            self._materialise_all()
            self._init_log(undoable, track)
            self.w_set = True
            self.w_kept = None
            self.init_w = self.w.copy() if undoable and self.RULE_UPDATES else None
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
        self._snapshot_arrays()
        if ids is None:
            return self.drift.copy(), self.counts.copy()
        return self.drift[ids], self.counts[ids]

    def pull_packed(self, ids, out, worker=-1, min_version=None, timeout=None):
        """Write ``[values | drift | penalty scale | precond]`` of ``ids`` into ``out``.

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
            self._snapshot_arrays()
            gather_packed(self.w, self.last, self.hist_d, self.hist_s, self.now, ids,
                          self.unpenalised, self.drift, self.counts, self.n_rows, self.precond,
                          out)
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
        """Start a new snapshot: its first part zeroes the gradient sum (row counts
        are kept)."""
        with self.lock:
            self._reset_snapshot()

    def _reset_snapshot(self):
        self.summing = False
        self.snapshot_parts = {}

    def _open_sum(self):
        """Before a snapshot's first part: zero the sum, where the last snapshot
        added (see ``active``).  The array holds the drift until then: the
        first part comes after every loop passed the barrier that ends the
        sweeps (see :meth:`arrive`), so no loop reads the drift any more."""
        if not self.summing:
            if self.active is None:
                self.drift[:] = 0.0
            else:
                self.drift[self.active] = 0.0
            self.summing = True

    def arrive(self, key, worker, timeout, value=0.0):
        """Wait until every worker loop has arrived at barrier ``key`` (the end of
        an epoch's sweeps, or of a snapshot).  Returns the largest ``value`` the
        loops brought.

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
        mode) in key order, then divide the gradient sum into the drift
        ``grad_sum / counts`` that every pull of the next epoch reads (once here,
        not per pull under the lock); ``n_samples``, the number of rows, sets
        the penalty scale ``n_samples / counts`` (0 for the unpenalised
        coordinate, see :func:`~dask_asyncopt.kernels.lazy.penalty_scale`).
        After a snapshot that brought the column statistics, also fixes the
        sweeps' :func:`preconditioner` and the coordinates the data touches
        (:meth:`_fix_columns`)."""
        with self.lock:
            self._snapshot_arrays()
            for key in sorted(self.snapshot_parts):
                self._add_snapshot(*self.snapshot_parts[key])
            self.snapshot_parts = {}
            self._open_sum()  # no part: the sum is 0
            self.summing = False
            if self.columns_added:
                self._fix_columns()
            if self.active is None:
                np.divide(self.drift, np.maximum(self.counts, 1)[:, None], out=self.drift)
            else:  # elsewhere the sum is 0 and the divisor 1
                a = self.active
                self.drift[a] /= np.maximum(self.counts[a], 1)[:, None]
            if n_samples is not None:
                self.n_rows = n_samples

    def _fix_columns(self):
        """The column statistics are all in (a fit's first snapshot): add them up,
        fix the preconditioner and ``active``, the coordinates some row touches,
        when they are few (at most :data:`ACTIVE_SHARE`): no push, snapshot or
        penalty reaches the others in this fit, so per-epoch work skips them.

        Parts that name their coordinates (a model wider than a loop's data)
        are summed over those alone, in arrival order (as adding them one by
        one would): no column energy array as wide as the block.  Only an
        update rule keeps the energies (:attr:`RULE_UPDATES`)."""
        parts, self.column_parts = self.column_parts, []
        self.columns_added = False
        n_coords = self.w.shape[0]
        if self.energy is not None:  # whole-block parts came (a narrow model): add the rest
            energy = self.energy
            for ids, counts, part_energy in parts:
                add_snapshot_part((None, self.counts, energy), ids, None,
                                  (counts, part_energy))
            active, energy_active, seen = None, None, slice(None)
        else:
            ids = np.concatenate([p[0] for p in parts] + [np.zeros(0, np.int64)])
            seen, where = np.unique(ids, return_inverse=True)
            counts = np.bincount(where, np.concatenate([p[1] for p in parts] + [[]]),
                                 seen.shape[0])
            energy_active = np.bincount(where, np.concatenate([p[2] for p in parts] + [[]]),
                                        seen.shape[0])
            self.counts[seen] += counts.astype(np.int32)
            active = seen
            energy = None
        self.active = (active.astype(np.int32) if active is not None
                       and active.shape[0] <= ACTIVE_SHARE * n_coords else None)
        self.inactive_penalty = None
        self.fixed = True
        if self.n_log == 0:  # no push yet to undo: the iterate to go back to is here
            self._keep_active()
        if self.precondition:  # 0 where no row touches (see preconditioner)
            counts = self.counts[seen]
            energy_seen = energy[seen] if energy is not None else energy_active
            scale = preconditioner(counts, energy_seen)
            _check_float32(scale, counts, energy_seen)
            self.precond[seen] = scale
        else:
            self.precond[:] = 1.0
        if self.RULE_UPDATES:
            if energy is None:
                energy = np.zeros(n_coords)
                energy[seen] = energy_active
            self.energy = energy
        else:
            self.energy = None

    def _add_snapshot(self, ids, grad, columns):
        self._snapshot_arrays()
        self._open_sum()
        if columns is None or ids is not None:  # named coordinates: summed at the end
            add_snapshot_part((self.drift, None, None), ids, grad)
            if columns is not None:
                self.column_parts.append((ids, *columns))
        else:
            if self.energy is None:
                self.energy = np.zeros(self.w.shape[0])
            add_snapshot_part((self.drift, self.counts, self.energy), ids, grad, columns)
        self.columns_added = self.columns_added or columns is not None

    def svrg_terms(self, ids=None):
        """``[drift | penalty scale | precond]`` of coordinates ``ids`` (``None``: all;
        an :class:`IdSet`), a ``(len(ids), K + 2)`` array: the variance-reduced
        sweeps' per-coordinate constants of the current snapshot (see
        :meth:`finish_snapshot`).  They change only when a snapshot completes,
        so a loop on another worker fetches them once per epoch, for the
        coordinates its shard reads, instead of with every pull."""
        with self.lock:
            self._snapshot_arrays()
            ids = self._ids(ids)
            if ids is None:
                ids = np.arange(self.w.shape[0])
            out = np.empty((ids.shape[0], self.w.shape[1] + 2))
            pack_terms(self.drift, self.counts, self.n_rows, self.precond, self.unpenalised,
                       ids, out)
            return out

    def gap_terms(self, n_samples):
        """What the stopping rule's optimality certificate needs from this block at
        the last snapshot (no loop writes between a snapshot and the driver's
        decision): the penalty's
        :meth:`~dask_asyncopt.objective.penalties.ElasticNet.dual_terms` of the
        coefficients and the mean gradient ``grad_sum / n_samples`` (the drift
        times the row counts: the sum was divided into the drift in place), and
        that gradient at the intercept (``None`` in the blocks without it).  Per
        output: a few floats cross to the driver, not the block."""
        with self.lock:
            self._materialise_all()
            g = self.drift * (np.maximum(self.counts, 1)[:, None] / n_samples)
            icpt = None if self.unpenalised < 0 else g[self.unpenalised].copy()
            return self.penalty.dual_terms(self.w, g, self.unpenalised), icpt

    def coefficients(self):
        """All coefficients of the block, materialised."""
        return self.pull(None).values

    def keep(self):
        """Remember the coefficients as the iterate to go back to (an epoch was
        accepted, see :meth:`restore`): the undo log starts again, or, once the
        active coordinates are known, their values are copied (a whole copy for
        :attr:`RULE_UPDATES`)."""
        with self.lock:
            if not self.RULE_UPDATES:
                self._settle_log()
                self._keep_active()
                return
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
            if self.RULE_UPDATES:
                self._materialise_all()
                if self.w_kept is not None:
                    self.w[:] = self.w_kept
                elif self.init_w is not None:
                    self.w[:] = self.init_w
                else:
                    self.w[:] = 0.0
                self.whole_changed = True
            else:
                if not self.undoable:
                    raise RuntimeError(f"block {self.block_id} was not made undoable")
                if self.kept is not None:  # no log since the copy (see _logs)
                    if self.active is None:
                        self.w[:] = self.kept
                    else:
                        self.w[self.active] = self.kept
                else:
                    if self.track and self.n_log and not self.fixed:
                        # every logged coordinate changes back
                        self.pending.append(np.unique(self.log_ids[:self.n_log]))
                    undo_log(self.w, self.log_ids, self.log_values, self.n_log)
                self.n_log = self.n_reported = 0
            self._reset_snapshot()

    def _keep_active(self):
        """Copy ``w[active]`` (all of ``w`` when ``active`` is ``None``) as the
        iterate to go back to: an undoable block whose active coordinates are
        fixed (no prox history: values are current)."""
        if not (self.undoable and self.fixed):
            return
        if self.active is None:
            if self.kept is None:
                self.kept = self.w.copy()
            else:
                np.copyto(self.kept, self.w)
        else:
            self.kept = self.w[self.active]

    def _logs(self):
        """Whether a push must log the coordinates it changes: for undo until
        ``w[active]`` is kept, for :meth:`changes` until ``active`` is fixed."""
        return ((self.undoable and self.kept is None)
                or (self.track and not self.fixed))

    def changes(self):
        """``(ids, values)``: the coordinates changed since the last call (since the
        fit began, for its first) and their values; ``ids`` is ``None`` when
        ``values`` is the whole block (the block does not track its changes,
        or a proximal map or an update rule changed every coordinate).  Once
        the coordinates the data touches are fixed (``active``), ``ids`` are
        those (``None``, the whole block, when ``active`` is): no push changes
        another, and the values of all of them cost less than sorting out
        which changed.

        The driver's checkpoints apply these to their copy of the model, so a
        checkpoint costs what the epoch changed, not the model's size."""
        with self.lock:
            if (self.RULE_UPDATES or not self.track or self.whole_changed
                    or (self.fixed and self.active is None)):
                self._materialise_all()
                self.pending, self.n_reported = [], self.n_log
                self.whole_changed = False
                return None, self.w.copy()
            if self.active is not None:
                self.pending, self.n_reported = [], self.n_log
                values = np.empty((self.active.shape[0], self.w.shape[1]))
                gather(self.w, self.last, self.hist_d, self.hist_s, self.now, self.active,
                       self.unpenalised, values)
                return self.active.copy(), values
            ids = np.unique(np.concatenate(
                self.pending + [self.log_ids[self.n_reported:self.n_log]]))
            self.pending, self.n_reported = [], self.n_log
            values = np.empty((ids.shape[0], self.w.shape[1]))
            gather(self.w, self.last, self.hist_d, self.hist_s, self.now, ids,
                   self.unpenalised, values)
            return ids, values

    def _unreported(self):
        """Move the log's entries :meth:`changes` has not reported to ``pending``
        (no need once ``active`` is fixed: :meth:`changes` reports those)."""
        if self.track and self.n_reported < self.n_log and not self.fixed:
            self.pending.append(np.unique(self.log_ids[self.n_reported:self.n_log]))
            if len(self.pending) > 8:
                self.pending = [np.unique(np.concatenate(self.pending))]
        self.n_reported = self.n_log

    def _settle_log(self):
        """The iterate is kept: no entry of the undo log is needed any more."""
        self._unreported()
        self.n_log = self.n_reported = 0

    def _reserve_log(self, n_more):
        """Room for ``n_more`` log entries: when the log is full, keep only each
        coordinate's oldest entry (the value to undo to) and grow it if that
        freed less than half: the log stays within a few entries per changed
        coordinate, whatever the number of pushes."""
        size = self.log_ids.shape[0]
        if self.n_log + n_more <= size:
            return
        self._unreported()
        if not self.undoable:
            self.n_log = 0
        elif self.n_log:
            _, first = np.unique(self.log_ids[:self.n_log], return_index=True)
            self.log_ids[:first.shape[0]] = self.log_ids[first]
            self.log_values[:first.shape[0]] = self.log_values[first]
            self.n_log = first.shape[0]
        self.n_reported = self.n_log
        need = self.n_log + n_more
        if need > size // 2:
            size = max(_LOG_START, 2 * need)
            ids = np.empty(size, dtype=np.int32)
            ids[:self.n_log] = self.log_ids[:self.n_log]
            self.log_ids = ids
            if self.undoable:
                values = np.empty((size, self.w.shape[1]))
                values[:self.n_log] = self.log_values[:self.n_log]
                self.log_values = values

    def _materialise_all(self):
        catch_up_all(self.w, self.last, self.hist_d, self.hist_s, self.now, self.unpenalised)

    def penalty_value(self):
        """``alpha * R(w)`` of this block, the intercept excluded."""
        with self.lock:
            return self._penalty_value()

    def _penalty_value(self):
        if self.active is None or self.now != 0 or self.RULE_UPDATES:
            self._materialise_all()
            return self.penalty.value(self.w, self.unpenalised)
        # only the active coordinates change in this fit (no pending catch-up: now == 0)
        active, skip = self.active, self.unpenalised
        if self.inactive_penalty is None and not self.w_set:
            self.inactive_penalty = 0.0  # a cold start's untouched coordinates: zeros
        if self.inactive_penalty is None:  # once per fit, in slices (no model-sized copy)
            others = np.ones(self.w.shape[0], dtype=bool)
            others[active] = False
            if skip >= 0:
                others[skip] = False
            self.inactive_penalty = sum(
                self.penalty.value(self.w[i:i + _SLICE][others[i:i + _SLICE]])
                for i in range(0, self.w.shape[0], _SLICE))
        where = int(np.searchsorted(active, skip)) if skip >= 0 else -1
        if where >= active.shape[0] or (where >= 0 and active[where] != skip):
            where = -1
        return self.inactive_penalty + self.penalty.value(self.w[active], where)

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
        # a bit per coordinate, no sort: this runs every round while the loops wait
        uniq, where = renumber_columns(ids, n, n)
        self._add(uniq, mean_at(where, np.concatenate(deltas), uniq.shape[0]))

    def _add(self, ids, delta):
        if ids is None:
            ids = np.arange(self.w.shape[0])
        if not self._logs():
            add_delta(self.w, self.last, self.hist_d, self.hist_s, self.now, ids, delta,
                      self.unpenalised)
            return
        self._reserve_log(ids.shape[0])
        add_delta_logged(self.w, self.last, self.hist_d, self.hist_s, self.now, ids, delta,
                         self.unpenalised, self.log_ids, self.log_values, self.n_log)
        self.n_log += ids.shape[0]

    def _advance(self, prox_d, prox_s):
        """Append one proximal map to the lazy history."""
        if prox_d == 1.0 and prox_s == 0.0:
            # The identity (updates that applied their prox already, e.g. SVRG
            # sweeps): no entry, so reads find nothing to catch up.
            return
        if self.undoable:
            raise RuntimeError(
                f"block {self.block_id} logs its changes for undo and takes no proximal "
                "maps (the variance-reduced sweeps apply theirs)")
        if self.last.shape[0] == 0:
            self.last = wide_zeros(self.w.shape[0], dtype=np.int32)
        self.whole_changed = True  # the map applies to every coordinate
        if self.now + 1 == self.hist_d.shape[0]:
            self.hist_d = np.concatenate([self.hist_d, np.ones_like(self.hist_d)])
            self.hist_s = np.concatenate([self.hist_s, np.zeros_like(self.hist_s)])
        d, s = self.hist_d[self.now], self.hist_s[self.now]
        self.hist_s[self.now + 1] = s + prox_s * d
        self.hist_d[self.now + 1] = d * prox_d
        self.now += 1
        if self.hist_d[self.now] > _RENORMALISE_ABOVE or self.now >= _MAX_HISTORY:
            # Materialise every coordinate and restart the history at 1 so the
            # products never overflow on very long fits with strong L2 (nor the
            # int32 timestamps).
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
