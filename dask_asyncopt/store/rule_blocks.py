"""Parameter blocks that apply pushed *gradients* with an update rule (APAM).

:class:`RuleServer` is a :class:`~dask_asyncopt.store.blocks.BlockServer` whose
coefficients change only by an update rule (:mod:`dask_asyncopt.objective.rules`) it
holds next to them -- for ``optimizer="amsgrad"`` the moments ``m, v, vhat``
of its coordinates.  Worker loops push minibatch gradients computed at the
weights they pulled (stale by the versions applied since); the block applies
them in order, one version per gradient (step), as the master of
asynchronous AMSGrad (APAM) does, but per block and lazily on sparse steps.

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

from .blocks import BlockServer, column_scale
from .replies import Pulled, Pushed


class RuleServer(BlockServer):
    """A parameter block updated by an update rule from pushed gradients.

    Parameters
    ----------
    *args
        As :class:`~dask_asyncopt.store.blocks.BlockServer` (``average_rounds`` unused).
    rule : AMSGradRule
        The update rule; its state is allocated here.
    """

    RULE_UPDATES = True

    def __init__(self, *args, rule, **kwargs):
        super().__init__(*args, **kwargs)
        self.rule = rule
        self.state = rule.init(*self.w.shape)

    # ------------------------------------------------------------------ reads
    def _pull(self, ids, snapshot=False, out=None):
        self.rule.materialise(self.state, self.w, ids)
        values = self.w.copy() if ids is None else self.w[ids]
        if out is not None:
            out[:] = values
            values = None
        if snapshot:
            return Pulled(values, self.version, self.samples, *self._snapshot_terms(ids))
        return Pulled(values, self.version, self.samples)

    def _penalty_value(self):
        self.rule.materialise(self.state, self.w)
        return super()._penalty_value()

    def _materialise_all(self):
        self.rule.materialise(self.state, self.w)

    def restore(self):
        """:meth:`BlockServer.restore`; every coordinate counts as current at the
        rule's step (no momentum catch-up on the restored values)."""
        super().restore()
        with self.lock:
            self.state.last[:] = self.state.t[0]

    def scale_steps(self):
        """Divide each coordinate's step by its column's scale (:func:`column_scale`,
        from the fit's first snapshot): see ``AMSGradRule.set_scales``."""
        with self.lock:
            self.rule.set_scales(self.state, self.w, column_scale(self.counts, self.energy))

    def set_lr(self, lr):
        """Use step ``lr`` from now on (every coordinate is caught up first)."""
        with self.lock:
            self.rule.set_lr(self.state, self.w, lr)

    def rule_state(self):
        """The rule's state, caught up (a copy)."""
        with self.lock:
            self.rule.materialise(self.state, self.w)
            return self.state.copy()

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
