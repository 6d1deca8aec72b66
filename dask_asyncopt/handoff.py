"""The hand-off between long-running worker loops and the driver, once per epoch.

A variance-reduced (or plain SGD) fit runs one task per worker loop for all
its epochs instead of one per epoch: a task round trip through the scheduler
cost 13-17 ms per epoch on a thread ``LocalCluster`` (measured), about as much
as the kernels of a 20k-row epoch.  At the end of each epoch every loop
*posts* its report to block 0 and waits for the driver's *decision*: stop, or
go on with the next sample target and changed settings (a halved step, a
smaller ``eta0``).  While the loops wait, the driver reads the blocks
(statistics, coefficients for checkpoints and validation scores) as it did
between epoch tasks, so the coefficients it sees are those of the epoch's end.

:class:`EpochHandOff` is mixed into the block servers: it shares their lock,
their ``stop`` (which wakes every waiter) and their actor, so it costs no
extra actor per fit.
"""

import asyncio


class EpochHandOff:
    """Per-epoch reports of the worker loops and the driver's decisions.

    Needs the host's ``changed`` (a ``threading.Condition``), ``stopped`` flag,
    ``_check_running()`` and ``block_id``; call :meth:`_init_handoff` in its
    ``__init__``.
    """

    def _init_handoff(self):
        self.epoch_reports = {}  # epoch -> {loop: report}
        self.decisions = {}  # epoch -> decision (None: stop)

    def post_epoch(self, epoch, worker, report):
        """Worker loop ``worker`` finished ``epoch``; ``report`` is its summary."""
        with self.changed:
            self._check_running()
            self.epoch_reports.setdefault(epoch, {})[worker] = report
            self.changed.notify_all()

    def collect_epoch(self, epoch, n_loops, wait):
        """The reports of ``epoch`` in loop order once all ``n_loops`` posted, or
        ``None`` if they did not within ``wait`` seconds (the driver polls, to
        notice a failed loop task in between)."""
        with self.changed:
            posted = self.epoch_reports.setdefault(epoch, {})
            self.changed.wait_for(lambda: self.stopped or len(posted) >= n_loops, wait)
            self._check_running()
            if len(posted) < n_loops:
                return None
            del self.epoch_reports[epoch]
            return [posted[w] for w in sorted(posted)]

    async def collect_epoch_at(self, epoch, n_loops, wait):
        """:meth:`collect_epoch` for a driver in another process (waits on an
        executor thread: the event loop must stay free to receive the posts)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.collect_epoch, epoch, n_loops, wait)

    def decide(self, epoch, decision):
        """The driver's decision after ``epoch``: ``None`` stops the loops, else a
        dict with the next epoch's sample ``target`` and ``config`` changes."""
        with self.changed:
            self.decisions[epoch] = decision
            self.changed.notify_all()

    def await_decision(self, epoch, timeout):
        """The decision after ``epoch``, once the driver took it."""
        with self.changed:
            if not self.changed.wait_for(
                    lambda: self.stopped or epoch in self.decisions, timeout):
                raise TimeoutError(
                    f"block {self.block_id}: no decision from the driver {timeout} s after "
                    f"epoch {epoch} (the client is gone or stalled)")
            self._check_running()
            return self.decisions[epoch]

    async def await_decision_at(self, epoch, timeout):
        """:meth:`await_decision` for a loop on another worker."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.await_decision, epoch, timeout)
