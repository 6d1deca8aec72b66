"""Waiting on a block's condition from worker threads *and* from the event loop.

A worker loop on the block's own worker calls the block directly and waits on
its ``threading.Condition``; so do requests through a fit's exchange channel,
each served on a thread of its own.  A caller in another process without the
channel calls through the actor: Dask runs ``async`` actor methods on the
worker's event loop, where a blocking wait would stall every other call.  Handing the wait to
an executor thread (``run_in_executor``) holds one thread per waiting caller,
from a default pool of ``min(32, cores + 4)`` threads: with more remote
waiters than that, the call that would release them queues behind them and
every one times out.  :meth:`Waits.wait_async` holds no thread: it parks an
``asyncio`` future that :meth:`Waits.notify` resolves.
"""

import asyncio


def _wake(future):
    if not future.done():
        future.set_result(None)


class Waits:
    """Mixin: ``notify`` wakes the host's thread waiters and its event-loop waiters.

    The host provides ``changed`` (a ``threading.Condition``) and calls
    :meth:`_init_waits` in its ``__init__``; whoever changes what a waiter
    waits for calls :meth:`notify` with the lock held.
    """

    def _init_waits(self):
        self._async_waiters = []  # (event loop, future) parked by wait_async

    def notify(self):
        """Wake every waiter (call with ``changed`` held)."""
        self.changed.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    async def wait_async(self, ready, timeout):
        """Wait on the event loop until ``ready()`` (evaluated with ``changed``
        held) is true; ``False`` if it was not within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.changed:
                if ready():
                    return True
                parked = loop.create_future()
                self._async_waiters.append((loop, parked))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(parked, remaining)
            except asyncio.TimeoutError:
                pass  # ready() is checked once more, then False
