"""Model replicas for decentralised training (AD-PSGD): one per worker loop.

A :class:`Replica` is a Dask actor placed on its loop's worker.  It holds a
full copy of the model (``n_coords x n_outputs``, global coordinate order,
the intercept last), a version counter, the samples each loop is known to
have processed (gossiped, see below) and, for the variance-reduced solver,
the snapshot's gradient sum and row counts.  There is no server: replicas
only talk to each other in pairs.

**Pairwise averaging, sum-preserving.**  An *active* loop sends its replica's
values ``x_a`` to a *passive* peer's :meth:`Replica.exchange`, which, under
the passive replica's lock, computes ``d = (x_a - x_p) / 2``, adds it
(``x_p <- (x_a + x_p) / 2``) and returns ``d``; the active side then
subtracts ``d`` (:meth:`Replica.absorb`).  Whatever happened to the active
replica while the call was in flight (its own loop's steps) is kept on top
of the average, so:

* the sum of all replicas is conserved exactly by every exchange (the
  mixing matrix ``I - (e_a - e_p)(e_a - e_p)^T / 2`` is doubly stochastic);
* when nothing intervened both replicas end equal (atomic averaging);
* otherwise the outcome is exactly "averaged when the passive side ran, then
  the active loop's in-flight steps applied" - AD-PSGD with those steps
  computed at a stale replica, the delay its analysis allows.

The active loop need not wait for the reply (a stopped or slow peer does not
stall its computation): it keeps at most one exchange in flight.  Passive
replicas never call anyone, so no cycle of waits (deadlock) can form.

**Proximal steps.**  A loop's step is a delta on the coordinates its chunk
touches plus, for plain proximal SGD, the chunk's composed proximal map
``(D, S)`` (see :mod:`dask_asyncopt.objective.penalties`) applied eagerly to every
penalised coordinate (the variance-reduced sweeps apply their prox inside
the kernel and send the identity).

**Update rules** (``optimizer="amsgrad"``).  A replica built with a
``rule`` (:mod:`dask_asyncopt.objective.rules`) keeps the rule's state next to its
values (for AMSGrad its own moments ``m, v, vhat``); its loop sends minibatch
gradients (:meth:`Replica.apply_grads`) instead of deltas.  Averaging mixes
the *values* only: each replica keeps its own moments (measured against also
averaging them, see :mod:`dask_asyncopt.solvers.adpsgd`).  A rule's step
changes only the coordinates it touches: nothing to bring up to date before
an exchange or a read.

**Gossiped progress.**  Every replica keeps the cumulative samples processed
by each loop as far as it knows (its own loop's count is exact); exchanges
merge both sides' vectors by element-wise maximum.  An epoch ends for a
loop once the known total reaches the epoch's target, so a fast loop can
take more than its share while a slow one falls behind (see
:mod:`dask_asyncopt.solvers.adpsgd`).
"""

import threading

import numpy as np

from ..kernels.lazy import step_replica
from ..objective.rules import MOMENTS
from .blocks import FitStopped, column_scale, preconditioner
from .replies import Averaged, Pulled, StoreStats


class Replica:
    """A full model replica with its version counter and gossiped progress.

    Parameters
    ----------
    rank, n_replicas : int
        This replica's loop index and the number of loops.
    n_coords, n_outputs : int
        Model shape (the intercept, if fitted, is coordinate ``intercept``).
    intercept : int
        Index of the unpenalised intercept coordinate, or ``-1``.
    init : ndarray of shape (n_coords, n_outputs), optional
        Starting values.
    rule : AMSGradRule, optional
        Update rule of :meth:`apply_grads` (its state is allocated here).
    penalty : ElasticNet, optional
        The penalty the rule's proximal steps apply.
    moments : tuple of ndarrays, optional
        The rule's moments to start from (a warm start).
    """

    def __init__(self, rank, n_replicas, n_coords, n_outputs, intercept=-1, init=None,
                 rule=None, penalty=None, moments=None):
        self.rank = rank
        self.intercept = intercept
        if init is None:
            self.w = np.zeros((n_coords, n_outputs))
        else:
            self.w = np.array(init, dtype=np.float64, order="C", copy=True)
        self.known = np.zeros(n_replicas, dtype=np.int64)
        self.grad_sum = np.zeros_like(self.w)
        self.row_counts = np.zeros(n_coords, dtype=np.int64)
        self.energy = np.zeros(n_coords)  # sum of each column's squares (intercept: rows)
        self.precond = np.zeros(n_coords)  # see blocks.preconditioner
        self.rule = rule
        self.state = None if rule is None else rule.init(n_coords, n_outputs, moments)
        self.penalty = penalty
        self.lock = threading.Lock()
        self.version = 0  # modifications: own steps, exchanges, absorbed replies
        self.stopped = False
        # Set by the driver of a fit without epoch barriers (plain SGD): the loop
        # reads them before each chunk (see solvers/adpsgd.py).
        self.halted = False  # finish after the current chunk
        self.params = None  # new kernel parameters (learning_rate="adaptive")
        self.recorded = 0  # epochs of this fit the driver has recorded
        self.reset_stats()

    def begin(self):
        """Serve another fit on the values as they are (``partial_fit``): the
        values and the rule's state carry over; the last fit's progress, halt,
        kernel parameters, snapshot and column statistics are dropped."""
        with self.lock:
            self.stopped = self.halted = False
            self.params = None
            self.recorded = 0
            self.known[:] = 0
            for a in (self.grad_sum, self.row_counts, self.energy, self.precond):
                a[...] = 0
            self.reset_stats()

    # ------------------------------------------------------------------ reads
    def read(self, ids, snapshot=False, out=None):
        """Values at ``ids`` (``None``: all) and the version they were read at
        (a :class:`~.replies.Pulled`).

        With ``snapshot`` also the variance-reduced solver's terms at ``ids``:
        the snapshot gradient sum over the row counts (``drift``) and the
        counts.  ``out``: an array of shape ``(len(ids), n_outputs)`` to read
        the values into (a loop reuses one; see :func:`~dask_asyncopt.kernels.lazy.step_replica`
        on allocations).
        """
        with self.lock:
            self._check_running()
            if ids is None:
                values = self.w.copy()
            elif out is not None:
                values = np.take(self.w, ids, axis=0, out=out, mode="clip")
            else:
                values = self.w[ids]
            if not snapshot:
                return Pulled(values, self.version)
            grad = self.grad_sum if ids is None else self.grad_sum[ids]
            counts = self.row_counts if ids is None else self.row_counts[ids]
            precond = self.precond if ids is None else self.precond[ids]
            return Pulled(values, self.version, 0, grad / np.maximum(counts, 1)[:, None],
                          counts, precond)

    def total_known(self):
        """Samples processed by all loops, as far as this replica knows."""
        with self.lock:
            return int(self.known.sum())

    def own(self):
        """Samples this replica's loop has processed this fit."""
        with self.lock:
            return int(self.known[self.rank])

    def outgoing(self, ids=None):
        """Values (at ``ids``) and known progress to send in an exchange (an
        :class:`~.replies.Averaged` whose ``delta`` is the values)."""
        with self.lock:
            self._check_running()
            values = self.w.copy() if ids is None else self.w[ids]
            self.n_sent += 1
            return Averaged(values, self.known.copy())

    # ----------------------------------------------------------------- writes
    def step(self, ids, delta, prox_d, prox_s, n_samples, read_version, loss=0.0,
             seconds=0.0):
        """Apply this loop's step: add ``delta`` at ``ids``, then the prox map.

        ``loss`` (the chunk's summed loss before the step) and ``seconds`` (its
        kernel time) are added to the statistics.  Returns the step's
        staleness: modifications by others (exchanges) between the loop's read
        and this step.
        """
        with self.lock:
            self._check_running()
            step_replica(self.w, np.asarray(ids, dtype=np.int64),
                         np.asarray(delta, dtype=np.float64), float(prox_d), float(prox_s),
                         self.intercept)
            self.loss_sum += loss
            self.kernel_time += seconds
            return self._count_step(n_samples, read_version)

    def _count_step(self, n_samples, read_version):
        staleness = self.version - read_version
        self.version += 1
        self.known[self.rank] += n_samples
        self.n_steps += 1
        self.stale_sum += staleness
        self.stale_max = max(self.stale_max, staleness)
        return staleness

    def apply_grads(self, ids, ptr, g, pen, rows, read_version):
        """Apply packed minibatch gradients with the rule (:mod:`~dask_asyncopt.objective.rules`).

        Parameters
        ----------
        ids : int64 ndarray
            Coordinates of the entries (steps are ``ptr[s]:ptr[s + 1]``).
        ptr, g, pen : ndarray
            Packed steps: gradient sums and penalty weight sums.
        rows : int64 ndarray
            Rows of each step's minibatch.
        read_version : int
            Version when the loop read the values the gradients are at.

        Returns
        -------
        staleness : int
            Modifications by others between the loop's read and these steps.
        """
        with self.lock:
            self._check_running()
            self.rule.update(self.state, self.w, ptr, ids, g, pen, 1.0 / rows,
                             penalty=self.penalty, skip=self.intercept)
            return self._count_step(int(rows.sum()), read_version)

    def scale_steps(self):
        """Divide each coordinate's rule step by its column's scale (from the fit's
        first snapshot; see ``AMSGradRule.set_scales``)."""
        with self.lock:
            self.rule.set_scales(self.state, column_scale(self.row_counts, self.energy))

    def set_lr(self, lr):
        """Use rule step ``lr`` from now on."""
        with self.lock:
            self.rule.set_lr(self.state, lr)

    def moments(self):
        """The rule's moments (copies): what a warm start continues from."""
        with self.lock:
            return tuple(getattr(self.state, name).copy() for name in MOMENTS)

    def exchange(self, values, known, ids=None):
        """Passive side of a pairwise average: ``x <- (values + x) / 2`` at ``ids``.

        Returns an :class:`~.replies.Averaged`: the change applied here (the
        active side subtracts it, see :meth:`absorb`) and this replica's merged
        progress.
        """
        with self.lock:
            self._check_running()
            if ids is None:
                d = 0.5 * (values - self.w)
                self.w += d
            else:
                d = 0.5 * (values - self.w[ids])
                self.w[ids] += d
            np.maximum(self.known, known, out=self.known)
            self.version += 1
            self.n_exchanges += 1
            return Averaged(d, self.known.copy())

    def absorb(self, d, known, ids=None):
        """Active side: subtract the passive side's change ``d`` and merge progress."""
        with self.lock:
            if ids is None:
                self.w -= d
            else:
                self.w[ids] -= d
            np.maximum(self.known, known, out=self.known)
            self.version += 1
            self.n_exchanges += 1

    def assign(self, values, known=None):
        """Overwrite the values (the driver's consensus at an epoch boundary)."""
        with self.lock:
            self._check_running()
            self.w[:] = values
            if known is not None:
                self.known[:] = known
            self.version += 1

    def shift(self, d, recorded):
        """Add ``d`` to every value: the driver's move of this replica to the
        replicas' mean, given as a difference so that the loop's steps since the
        driver read the values are kept (and the shifts of all replicas sum to
        0); the driver has now recorded ``recorded`` epochs of this fit."""
        with self.lock:
            self._check_running()
            self.w += d
            self.version += 1
        self.recorded = recorded

    # --------------------------------------------------------------- snapshot
    def reset_snapshot(self):
        """Zero the snapshot gradient sum (row counts are kept)."""
        with self.lock:
            self.grad_sum[:] = 0.0

    def add_snapshot(self, grad, columns=None):
        """Add one loop's gradient sum (and, once per fit, its column statistics:
        ``(row counts, sums of squares)``, from which the steps' preconditioner
        follows)."""
        with self.lock:
            self._check_running()
            self.grad_sum += grad
            if columns is not None:
                self.row_counts += columns[0]
                self.energy += columns[1]
                preconditioner(self.row_counts, self.energy, out=self.precond)

    def gap_terms(self, n_samples):
        """What the stopping rule's optimality certificate needs at the snapshot (the
        driver has just written the average to every replica and no loop runs):
        the penalty's
        :meth:`~dask_asyncopt.objective.penalties.ElasticNet.dual_terms` of the
        coefficients and the full mean gradient ``grad_sum / n_samples``, and
        that gradient at the intercept (``None`` without one).  A few floats per
        output cross to the driver, not the replica."""
        with self.lock:
            g = self.grad_sum / n_samples
            icpt = None if self.intercept < 0 else g[self.intercept].copy()
            return self.penalty.dual_terms(self.w, g, self.intercept), icpt

    # ------------------------------------------------------------------ stats
    def values(self):
        """A copy of all values."""
        return self.read(None).values

    def stop(self):
        """Refuse further calls: worker loops stop at their next one."""
        with self.lock:
            self.stopped = True

    def halt(self):
        """Let this replica's loop finish after its current chunk (the fit's end)."""
        self.halted = True

    def set_params(self, params):
        """Kernel parameters for this replica's loop from its next chunk on."""
        self.params = params

    def progress(self):
        """Samples this replica's loop has processed this fit (exact)."""
        return int(self.known[self.rank])

    def _check_running(self):
        if self.stopped:
            raise FitStopped(f"replica {self.rank}: the fit was stopped")

    def reset_stats(self):
        """Start a new measurement window."""
        self.n_steps = 0
        self.n_exchanges = 0
        self.n_sent = 0
        self.stale_sum = 0
        self.stale_max = 0
        self.loss_sum = 0.0
        self.kernel_time = 0.0

    def report(self):
        """:meth:`stats` (a new window) and :meth:`values` in one call."""
        return self.stats(), self.values()

    def stats(self, reset=True):
        """Steps, exchanges, staleness and progress since the last reset."""
        with self.lock:
            out = StoreStats(self.rank, self.version, int(self.known[self.rank]),
                             self.n_steps, self.stale_sum, self.stale_max,
                             exchanges=self.n_exchanges, sent=self.n_sent,
                             loss_sum=self.loss_sum, kernel_time=self.kernel_time)
            if reset:
                self.reset_stats()
            return out
