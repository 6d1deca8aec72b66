"""The hand-off between long-running worker loops and the driver, once per epoch.

A fit runs one task per worker loop for all its epochs instead of one per
epoch: a task round trip through the scheduler per epoch costs about as
much as the kernels of a small epoch.  At the end of each epoch every loop *posts* its report to
block 0 and waits for the driver's *decision*: stop, or go on with the next
sample target and changed settings (a halved step, a smaller ``eta0``).  While
the loops wait, the driver reads the blocks (statistics, coefficients for
checkpoints and validation scores) as it did between epoch tasks, so what it
reads is the model at the epoch's end.

:class:`EpochHandOff` is mixed into the block servers: it shares their lock,
their ``stop`` (which wakes every waiter) and their actor, so it costs no
extra actor per fit.
"""

import time

from .waits import Waits


class EpochHandOff(Waits):
    """Per-epoch reports of the worker loops and the driver's decisions.

    Needs the host's ``changed`` (a ``threading.Condition``), ``stopped`` flag,
    ``_check_running()``, ``block_id`` and ``n_workers`` (the number of worker
    loops); call :meth:`_init_handoff` in its ``__init__``.

    A loop waits for a decision at most ``timeout`` seconds after the later of
    its own post and the last loop's: a straggler's epoch is bounded as at a
    barrier, the driver's work between epochs (history row, callback,
    checkpoint, validation score) separately.
    """

    def _init_handoff(self):
        self._init_waits()
        self.epoch_reports = {}  # epoch -> {loop: report}
        self.completed = {}  # epoch -> time.monotonic() when the last loop posted
        self.decisions = {}  # epoch -> decision (None: stop)

    def post_epoch(self, epoch, worker, report):
        """Worker loop ``worker`` finished ``epoch``; ``report`` is its summary."""
        with self.changed:
            self._check_running()
            posted = self.epoch_reports.setdefault(epoch, {})
            posted[worker] = report
            if len(posted) == self.n_workers:
                self.completed[epoch] = time.monotonic()
            self.notify()

    def _collected(self, epoch, n_loops):
        return self.stopped or len(self.epoch_reports.get(epoch, ())) >= n_loops

    def _take(self, epoch, n_loops):
        self._check_running()
        if not self._collected(epoch, n_loops):
            return None
        posted = self.epoch_reports.pop(epoch)
        return [posted[w] for w in sorted(posted)]

    def collect_epoch(self, epoch, n_loops, wait):
        """The reports of ``epoch`` in loop order once all ``n_loops`` posted, or
        ``None`` if they did not within ``wait`` seconds (the driver polls, to
        notice a failed loop task in between)."""
        with self.changed:
            self.changed.wait_for(lambda: self._collected(epoch, n_loops), wait)
            return self._take(epoch, n_loops)

    async def collect_epoch_async(self, epoch, n_loops, wait):
        """:meth:`collect_epoch` through the actor (a caller in another process
        without the fit's channel), waiting on the event loop."""
        await self.wait_async(lambda: self._collected(epoch, n_loops), wait)
        with self.changed:
            return self._take(epoch, n_loops)

    def decide(self, epoch, decision):
        """The driver's decision after ``epoch``: ``None`` stops the loops, else a
        dict with the next epoch's sample ``target`` and ``config`` changes."""
        with self.changed:
            # every loop read the earlier decisions before posting this epoch
            self.decisions = {epoch: decision}
            self.completed = {e: t for e, t in self.completed.items() if e > epoch}
            self.notify()

    def _decided(self, epoch):
        return self.stopped or epoch in self.decisions

    def _deadline(self, epoch, posted, timeout):
        return max(posted, self.completed.get(epoch, posted)) + timeout

    def _decision(self, epoch, posted, timeout):
        self._check_running()
        if epoch in self.decisions:
            return self.decisions[epoch]
        what = ("from the driver" if epoch in self.completed else
                "(not every worker loop finished the epoch: one is lost or stalled)")
        raise TimeoutError(f"block {self.block_id}: no decision {what} {timeout} s after "
                           f"epoch {epoch}")

    def await_decision(self, epoch, timeout):
        """The decision after ``epoch`` (see the class docstring for ``timeout``)."""
        posted = time.monotonic()
        with self.changed:
            while not self._decided(epoch):
                # every post wakes the wait: the last one moves the deadline
                left = self._deadline(epoch, posted, timeout) - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return self._decision(epoch, posted, timeout)

    async def await_decision_async(self, epoch, timeout):
        """:meth:`await_decision` for a loop on another worker (holds no thread)."""
        posted = time.monotonic()
        while True:
            with self.changed:
                left = self._deadline(epoch, posted, timeout) - time.monotonic()
            if left <= 0 or await self.wait_async(lambda: self._decided(epoch), left):
                break
        with self.changed:
            return self._decision(epoch, posted, timeout)
