"""Factor blocks of matrix factorisation, one per Dask actor.

A :class:`FactorBlock` owns a block of rows of one side of the model (a
user block or an item block): packed rows ``[factors (k), bias, G]``, with
``optimizer="amsgrad"`` followed by AMSGrad's ``m, v, vhat`` of every factor
and the bias (see :mod:`dask_asyncopt.kernels.factors`).  The step state is part
of the rows, so it travels with a checked-out block and is in every copy the
driver gathers (checkpoints included).  Training is *stratified* (DSGD / NOMAD):
a worker loop checks a whole item block out, runs SGD on the ratings of its
own users that fall in that block, and checks it back in.  While a block is
checked out nobody else can read or write it, so every update is applied to
the current values: the asynchrony is in *which* block a loop takes next,
never in stale reads.  The version counter still measures it: a check-in's
staleness (versions applied since its check-out) is 0 by construction and is
reported so that the claim is checked, not assumed.

Two ways to take a block:

* ``ticket=None`` (solver ``"asyb"``): the block is handed to whoever asks
  while it is free (first come, first served).
* ``ticket=v`` (solver ``"sync"``): the block is handed out only at version
  ``v``; the driver's fixed DSGD schedule gives every (loop, block) visit its
  ticket, which makes a fit deterministic for an int ``random_state``.

Methods are safe to call concurrently (Dask runs them on the actor thread or
the event loop; a loop on the same worker calls the object directly): a
condition variable serialises them.
"""

import asyncio
import threading

import numpy as np

from .blocks import FitStopped
from .replies import CheckedIn, CheckedOut, StoreStats


def initial_rows(n_rows, n_factors, init_scale, seed, width=None):
    """A block's starting rows: factors ``N(0, (init_scale / sqrt(k))**2)`` from
    ``seed``, biases 0, ``G`` 1, any further state columns 0."""
    rng = np.random.default_rng(seed)
    W = np.zeros((n_rows, width or n_factors + 2))
    W[:, :n_factors] = rng.normal(scale=init_scale / np.sqrt(max(n_factors, 1)),
                                  size=(n_rows, n_factors))
    W[:, n_factors + 1] = 1.0
    return W


class FactorBlock:
    """One block of packed factor rows with a check-out lock and a version.

    Parameters
    ----------
    block_id : int
    n_rows, n_factors : int
    init_scale : float
        Factors start ``N(0, (init_scale / sqrt(n_factors))**2)``; biases at 0;
        ``G`` (the adaptive-step accumulator) at 1.
    seed : int
        Seed of this block's initial factors.
    init : ndarray of shape (n_rows, width), optional
        Starting rows (warm start or a checkpoint), used instead of the random start.
    width : int, optional
        Columns of a row (:func:`~dask_asyncopt.kernels.factors.row_width`); default
        ``n_factors + 2``.  Columns after ``G`` (AMSGrad's moments) start at 0.
    """

    def __init__(self, block_id, n_rows, n_factors, init_scale, seed, init=None,
                 width=None):
        self.block_id = block_id
        if init is not None:
            self.W = np.array(init, dtype=np.float64, order="C", copy=True)
        else:
            self.W = initial_rows(n_rows, n_factors, init_scale, seed, width)
        self.version = 0
        self.holder = None  # worker loop holding the block, or None
        self.held_at = 0  # version at check-out
        self.stopped = False
        self.changed = threading.Condition(threading.Lock())
        self.reset_stats()

    # -------------------------------------------------------------- exchange
    def acquire(self, worker, ticket=None, wait=None):
        """Check the block out to ``worker``: a :class:`~.replies.CheckedOut`.

        Waits up to ``wait`` seconds (``None``: forever) for the block to be
        free (and, with ``ticket``, at version ``ticket``); returns ``None``
        if it is not.
        """
        with self.changed:
            if not self.changed.wait_for(
                    lambda: self.stopped or (self.holder is None and (
                        ticket is None or self.version == ticket)), wait):
                return None
            self._check_running()
            self.holder = worker
            self.held_at = self.version
            return CheckedOut(self.W.copy(), self.version)

    async def acquire_async(self, worker, ticket=None, wait=None):
        """:meth:`acquire` for remote callers: waits on an executor thread so
        the worker's event loop stays free to receive the check-in it waits for."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.acquire, worker, ticket, wait)

    def release(self, worker, rows, n_ratings):
        """Check the block in with its new rows (a :class:`~.replies.CheckedIn`)."""
        with self.changed:
            self._check_running()
            if self.holder != worker:
                raise RuntimeError(
                    f"factor block {self.block_id}: loop {worker} checked in a block "
                    f"held by {self.holder}")
            staleness = self.version - self.held_at
            self.W[...] = rows
            self.version += 1
            self.holder = None
            self.n_pushes += 1
            self.ratings += n_ratings
            self.stale_sum += staleness
            self.stale_max = max(self.stale_max, staleness)
            self.changed.notify_all()
            return CheckedIn(self.version, staleness)

    def give_back(self, worker):
        """Release a checked-out block unchanged (a loop failed mid-stratum)."""
        with self.changed:
            if self.holder == worker:
                self.holder = None
                self.changed.notify_all()

    # ----------------------------------------------------------------- reads
    def rows(self):
        """All packed rows (a copy)."""
        with self.changed:
            return self.W.copy()

    def stop(self):
        """Refuse further exchanges and wake every waiting call."""
        with self.changed:
            self.stopped = True
            self.changed.notify_all()

    def _check_running(self):
        if self.stopped:
            raise FitStopped(f"factor block {self.block_id}: the fit was stopped")

    def reset_stats(self):
        self.n_pushes = 0
        self.ratings = 0
        self.stale_sum = 0
        self.stale_max = 0

    def stats(self, reset=True):
        """Check-ins, ratings, staleness sum and max since the last reset."""
        with self.changed:
            out = StoreStats(self.block_id, self.version, self.ratings, self.n_pushes,
                             self.stale_sum, self.stale_max)
            if reset:
                self.reset_stats()
            return out


class CheckoutTable:
    """Which item blocks are checked out, for loops that take any free one.

    Under ``solver="asyb"`` a loop takes whichever of the item blocks it has not
    visited this epoch is free first.  Asking each block in turn is polling; the
    table answers in one call, waiting on its condition until one of the
    loop's candidates is free (:meth:`acquire_any`).  The loop then checks the
    block itself out, waiting there, if need be, for the previous holder's
    check-in to arrive (the table is told first).
    """

    def __init__(self, n_blocks):
        self.held = [False] * n_blocks
        self.stopped = False
        self.changed = threading.Condition(threading.Lock())

    def acquire_any(self, worker, candidates, timeout):
        """The first of ``candidates`` that is free, now held; ``None`` if none
        became free within ``timeout`` seconds."""
        with self.changed:
            def free():
                return next((b for b in candidates if not self.held[b]), None)

            if not self.changed.wait_for(lambda: self.stopped or free() is not None,
                                         timeout):
                return None
            if self.stopped:
                raise FitStopped("the check-out table of the fit was stopped")
            b = free()
            self.held[b] = True
            return b

    def release(self, block):
        """Block ``block`` may be taken again."""
        with self.changed:
            self.held[block] = False
            self.changed.notify_all()

    def stop(self):
        """Refuse further check-outs and wake every waiting call."""
        with self.changed:
            self.stopped = True
            self.changed.notify_all()
