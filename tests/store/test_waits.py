"""Waiting on a block's condition from threads and from the event loop
(``store/waits.py``): ``notify`` wakes both kinds, an event-loop wait holds no thread."""

import asyncio
import threading

from dask_asyncopt.store.waits import Waits


class Host(Waits):
    """The smallest host: a condition and a value waiters wait for."""

    def __init__(self):
        self.changed = threading.Condition(threading.Lock())
        self.value = 0
        self._init_waits()

    def set(self, value):
        with self.changed:
            self.value = value
            self.notify()


def test_wait_async_returns_once_ready_after_a_notify_from_a_thread():
    host = Host()

    async def main():
        waiter = asyncio.ensure_future(host.wait_async(lambda: host.value == 2, 30.0))
        await asyncio.sleep(0.05)
        host.set(1)  # notified, not ready: still waiting
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await asyncio.get_running_loop().run_in_executor(None, host.set, 2)
        return await waiter

    assert asyncio.run(main()) is True
    assert host._async_waiters == []  # every parked future was handed its wake-up


def test_wait_async_is_false_after_the_timeout_and_true_if_ready_at_once():
    host = Host()
    assert asyncio.run(host.wait_async(lambda: False, 0.05)) is False
    assert asyncio.run(host.wait_async(lambda: True, 0.0)) is True


def test_notify_wakes_thread_and_event_loop_waiters_alike():
    host = Host()
    woken = []

    def thread_waiter():
        with host.changed:
            host.changed.wait_for(lambda: host.value == 1, 30)
            woken.append("thread")

    t = threading.Thread(target=thread_waiter)
    t.start()

    async def main():
        n = 50  # far more than an executor's threads: parked futures, no threads
        before = threading.active_count()
        waiters = [asyncio.ensure_future(host.wait_async(lambda: host.value == 1, 30.0))
                   for _ in range(n)]
        await asyncio.sleep(0.05)
        assert threading.active_count() <= before + 1
        assert len(host._async_waiters) == n
        await asyncio.get_running_loop().run_in_executor(None, host.set, 1)
        return await asyncio.gather(*waiters)

    assert asyncio.run(main()) == [True] * 50
    t.join(30)
    assert woken == ["thread"]
