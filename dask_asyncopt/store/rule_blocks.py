"""Parameter blocks that apply pushed *gradients* with an update rule (APAM).

:class:`RuleServer` is a :class:`~dask_asyncopt.store.blocks.BlockServer` whose
coefficients change only by an update rule (:mod:`dask_asyncopt.objective.rules`) it
holds next to them -- for ``optimizer="amsgrad"`` the moments ``m, v, vhat``
of its coordinates.  Worker loops push minibatch gradients computed at the
weights they pulled (stale by the versions applied since); the block applies
them in order, one version per gradient (step), as the master of
asynchronous AMSGrad (APAM) does, but per block and per coordinate (a step
changes only the coordinates it touches, see :mod:`dask_asyncopt.objective.rules`).

* ``"async"``: a push of ``n`` steps is applied on arrival.  Its ``i``-th step
  (from 0) has staleness ``version - read_version + i``: the steps of one
  exchange were all computed at the pulled weights.  With ``max_staleness``
  the push waits while applying it would leave another worker's outstanding
  read more than ``max_staleness`` versions behind; the estimators then send
  one gradient per exchange, so every gradient's staleness is bounded (up to
  ties of reads at the same version, as in :mod:`dask_asyncopt.store.blocks`).
* ``"sync"``: the pushes of a round are buffered; step ``i`` of the round is
  the sum of every worker's step ``i`` over the sum of their rows (the
  minibatch gradient of the union, as an all-reduce would form it), added
  in worker order; then the steps are applied and the version advances by one.

The SVRG snapshot terms (gradient sum and row counts) and the statistics are
inherited; the ``(D, S)`` proximal history of the parent is not used (it stays
at its start, so the parent's catch-up kernels are no-ops).
"""

import asyncio

import numpy as np

from ..objective.penalties import sparse_penalty_scale
from ..objective.rules import MOMENTS
from .blocks import BlockServer, column_scale
from .replies import Pushed


class RuleServer(BlockServer):
    """A parameter block updated by an update rule from pushed gradients.

    The rule changes only the coordinates a step touches (no lazy catch-up),
    so reads, snapshots and rollbacks are the parent's: its proximal history
    stays empty.

    Parameters
    ----------
    *args
        As :class:`~dask_asyncopt.store.blocks.BlockServer` (``average_rounds`` unused).
    rule : AMSGradRule
        The update rule; its state is allocated here.
    moments : tuple of ndarrays, optional
        The rule's moments to start from (a warm start), shaped as the block.
    """

    RULE_UPDATES = True

    def __init__(self, *args, rule, moments=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rule = rule
        self.state = rule.init(*self.w.shape, moments=moments)
        self.reweight = np.zeros(self.w.shape[0])  # n / n_j, see finish_snapshot

    def finish_snapshot(self, n_samples=None):
        """:meth:`BlockServer.finish_snapshot`; given ``n_samples``, also each
        coordinate's reweighting ``n / n_j`` (the intercept's too, see
        :mod:`dask_asyncopt.objective.rules`)."""
        super().finish_snapshot(n_samples)
        if n_samples is not None:
            with self.lock:
                sparse_penalty_scale(n_samples, self.counts, out=self.reweight)

    def rule_terms(self):
        """``(drift, reweight)``: what a loop's gradients need besides the weights.
        They change only when a snapshot completes, so a loop fetches them once
        per epoch (see :func:`~dask_asyncopt.solvers.gradients.grad_epoch`)."""
        with self.lock:
            return self.drift, self.reweight

    def scale_steps(self):
        """Divide each coordinate's step by its column's scale (:func:`column_scale`,
        from the fit's first snapshot): see ``AMSGradRule.set_scales``."""
        with self.lock:
            self.rule.set_scales(self.state, column_scale(self.counts, self.energy))

    def set_lr(self, lr):
        """Use step ``lr`` from now on."""
        with self.lock:
            self.rule.set_lr(self.state, lr)

    def moments(self):
        """The rule's moments (copies): what a warm start continues from."""
        with self.lock:
            return tuple(getattr(self.state, name).copy() for name in MOMENTS)

    # ----------------------------------------------------------------- writes
    def push_grads(self, worker, ptr, ids, g, pen, rows, read_version, timeout=None):
        """Apply packed gradient steps (see :mod:`dask_asyncopt.objective.rules`).

        Parameters
        ----------
        worker : int
        ptr, ids, g, pen : ndarray
            Steps: ``ids`` local to this block, ``g`` gradient sums, ``pen``
            penalty weight sums.
        rows : int64 ndarray
            Rows of each step's minibatch.
        read_version : int
            Version of this block when the worker pulled.
        timeout : float, optional
            Longest wait for admission under ``max_staleness``.

        Returns
        -------
        Pushed
            With the staleness of the last step.
        """
        n_steps = ptr.shape[0] - 1
        with self.changed:
            self._check_running()
            if self.mode == "sync":
                return self._push_grads_sync(worker, (ptr, ids, g, pen, rows), read_version)
            self._wait_for_admission(worker, read_version, timeout,
                                     lambda: self._admissible_steps(worker, n_steps))
            first = self.version - read_version
            self._apply_steps(ptr, ids, g, pen, rows)
            self.version += n_steps
            self.samples += int(rows.sum())
            # step i has staleness first + i
            self.stale_sum += n_steps * first + n_steps * (n_steps - 1) // 2
            self.stale_max = max(self.stale_max, first + n_steps - 1)
            self.n_pushes += n_steps
            self.notify()
            return Pushed(self.version, self.samples, first + n_steps - 1)

    async def push_grads_async(self, *args, **kwargs):
        """:meth:`push_grads` for remote callers: waits on an executor thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.push_grads(*args, **kwargs))

    def _admissible_steps(self, worker, n_steps):
        read_version = self.ready[worker]
        if read_version > min(self.ready.values()):
            return False  # an older ready push goes first
        oldest_read = min(self.reading.values(), default=self.version + n_steps)
        return self.version + n_steps - oldest_read <= self.max_staleness

    def _apply_steps(self, ptr, ids, g, pen, rows):
        self.rule.update(self.state, self.w, ptr, ids, g, pen, 1.0 / rows,
                         penalty=self.penalty, skip=self.unpenalised)

    def _push_grads_sync(self, worker, steps, read_version):
        if read_version != self.version:
            raise RuntimeError(
                f"sync push for round {read_version} arrived at round {self.version}")
        self.round_buffer[worker] = steps
        if len(self.round_buffer) == self.n_workers:
            pushes = [self.round_buffer[w] for w in sorted(self.round_buffer)]
            self.round_buffer.clear()
            merged = merge_rounds(pushes, self.w.shape[1])
            self._apply_steps(*merged)
            self.version += 1
            self.samples += int(merged[4].sum())
            self.n_pushes += merged[0].shape[0] - 1
            self.notify()
        return Pushed(self.version, self.samples, 0)


def merge_rounds(pushes, n_outputs):
    """Sum step ``i`` of every push (in the given order) into one step per ``i``.

    Returns packed ``(ptr, ids, g, pen, rows)`` with as many steps as the
    longest push; a step's ids are the union of the pushes' ids, sorted.
    """
    n_steps = max(p[0].shape[0] - 1 for p in pushes)
    out = []
    for s in range(n_steps):
        parts = [(p[1][p[0][s]:p[0][s + 1]], p[2][p[0][s]:p[0][s + 1]],
                  p[3][p[0][s]:p[0][s + 1]], p[4][s]) for p in pushes if s < p[0].shape[0] - 1]
        ids = np.concatenate([q[0] for q in parts])
        uniq, where = np.unique(ids, return_inverse=True)
        g = np.zeros((uniq.shape[0], n_outputs))
        np.add.at(g, where, np.concatenate([q[1] for q in parts]))
        pen = np.bincount(where, weights=np.concatenate([q[2] for q in parts]),
                          minlength=uniq.shape[0])
        out.append((uniq, g, pen, sum(int(q[3]) for q in parts)))
    ptr = np.zeros(n_steps + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(o[0]) for o in out])
    return (ptr, np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]),
            np.concatenate([o[2] for o in out]), np.array([o[3] for o in out], dtype=np.int64))
