"""The per-epoch hand-off between worker loops and the driver (``store/handoff.py``:
``EpochHandOff``), as mixed into ``BlockServer``: plain calls from threads, the async
entry points, and through a real Dask actor."""

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.solvers.config import Decision
from dask_asyncopt.store.blocks import BlockServer, FitStopped


def new_server(n_workers=2):
    return BlockServer(0, 1, 3, 1, ElasticNet(), -1, "async", n_workers, None)


def test_reports_come_in_loop_order_once_all_posted():
    server = new_server(n_workers=3)
    assert server.collect_epoch(1, 3, 0.01) is None  # nobody posted: the poll times out
    server.post_epoch(1, 2, {"loop": 2})
    server.post_epoch(1, 0, {"loop": 0})
    assert server.collect_epoch(1, 3, 0.01) is None  # two of three
    server.post_epoch(2, 1, {"early": True})  # a later epoch does not count for epoch 1
    assert server.collect_epoch(1, 3, 0.01) is None
    server.post_epoch(1, 1, {"loop": 1})
    assert server.collect_epoch(1, 3, 0.01) == [{"loop": 0}, {"loop": 1}, {"loop": 2}]
    assert 1 not in server.epoch_reports and 2 in server.epoch_reports


def test_collect_wakes_on_the_last_post_and_loops_wake_on_the_decision():
    server = new_server(n_workers=2)
    decisions = {}

    def loop(i):
        time.sleep(0.05 * i)
        server.post_epoch(4, i, i)
        decisions[i] = server.await_decision(4, 10)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    tick = time.perf_counter()
    assert server.collect_epoch(4, 2, 10) == [0, 1]
    assert time.perf_counter() - tick < 5  # woken by the post, not the 10 s poll
    time.sleep(0.05)
    assert decisions == {}  # the loops wait for the driver
    decision = Decision(target=100, config=None)
    server.decide(4, decision)
    for t in threads:
        t.join(5)
    assert decisions == {0: decision, 1: decision}


def test_await_decision_times_out_and_stop_wakes_every_waiter():
    server = new_server()
    server.post_epoch(1, 0, {})
    with pytest.raises(TimeoutError, match="one is lost or stalled"):
        server.await_decision(1, 0.05)  # the other loop never finished epoch 1
    server.post_epoch(1, 1, {})
    with pytest.raises(TimeoutError, match="no decision from the driver"):
        server.await_decision(1, 0.05)
    errors = []

    def wait(call):
        try:
            call()
        except FitStopped as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=(lambda: server.await_decision(2, 30),)),
               threading.Thread(target=wait, args=(lambda: server.collect_epoch(2, 2, 30),))]
    for t in threads:
        t.start()
    time.sleep(0.1)
    server.stop()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads) and len(errors) == 2
    with pytest.raises(FitStopped):  # a loop posting after the fit stopped learns it
        server.post_epoch(3, 0, {})


def test_decision_timeout_counts_from_the_slowest_loop(monkeypatch):
    """A fast loop waits for a straggler's epoch and then ``timeout`` for the driver.

    The hand-off's clock is a fake one the test moves, so no deadline depends on
    how fast the threads run: the decision comes 0.45 s after the fast loop's post
    (past its own 0.3 s) but 0.2 s after the straggler's (within 0.3 s).
    """
    from dask_asyncopt.store import handoff

    now = [0.0]
    monkeypatch.setattr(handoff, "time", SimpleNamespace(monotonic=lambda: now[0]))
    server = new_server()
    box = {}
    waiting = threading.Event()

    def fast():
        server.post_epoch(1, 0, {})
        waiting.set()
        try:
            box["decision"] = server.await_decision(1, 0.3)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["error"] = exc

    t = threading.Thread(target=fast)
    t.start()
    assert waiting.wait(30)
    time.sleep(0.2)  # let it start waiting at clock 0 (only makes the test sharper)
    now[0] = 0.25
    server.post_epoch(1, 1, {})  # the straggler, near the fast loop's own timeout
    now[0] = 0.45  # past 0.3 s after the fast loop's post, within 0.3 s of the last
    with server.changed:
        server.notify()  # the fast loop looks at the clock again
    time.sleep(0.2)
    assert t.is_alive() and box == {}  # still waiting, no timeout
    server.decide(1, Decision(2, None))
    t.join(30)
    assert box == {"decision": Decision(2, None)}
    # past the straggler's deadline too, a loop gives up
    server.post_epoch(2, 0, {})
    server.post_epoch(2, 1, {})
    now[0] = 1.0
    with pytest.raises(TimeoutError, match="no decision from the driver"):
        server.await_decision(2, 0.0)


def test_async_waits_hold_no_thread():
    """Many remote waiters on one event loop (a barrier and the hand-off) are woken
    without an executor thread each."""
    n = 40
    server = new_server(n_workers=n + 1)

    async def main():
        before = threading.active_count()
        barrier = [asyncio.ensure_future(server.arrive_async("e", i, 10, float(i)))
                   for i in range(n)]
        decisions = [asyncio.ensure_future(server.await_decision_async(1, 10)) for _ in range(n)]
        await asyncio.sleep(0.1)
        assert not any(f.done() for f in barrier + decisions)
        assert threading.active_count() < before + 4
        # the last loop arrives from a thread, as a loop on the block's worker would
        await asyncio.get_running_loop().run_in_executor(None, server.arrive, "e", n, 10, -1.0)
        for i in range(n + 1):
            server.post_epoch(1, i, {})
        server.decide(1, None)
        return await asyncio.gather(*barrier), await asyncio.gather(*decisions)

    maxima, decisions = asyncio.run(main())
    assert maxima == [float(n - 1)] * n and decisions == [None] * n


def test_none_decides_stop():
    server = new_server()
    server.decide(7, None)
    assert server.await_decision(7, 1) is None


def test_async_entry_points():
    server = new_server(n_workers=1)

    async def main():
        waiting = asyncio.ensure_future(server.await_decision_async(1, 5))
        server.post_epoch(1, 0, "done")
        reports = await server.collect_epoch_async(1, 1, 5)
        server.decide(1, Decision(1, None))
        return reports, await waiting

    assert asyncio.run(main()) == (["done"], Decision(1, None))


def test_hand_off_through_a_dask_actor(client):
    fut = client.submit(BlockServer, 0, 1, 3, 1, ElasticNet(), -1, "async", 1, None,
                        actor=True, key="test-handoff-actor")
    try:
        actor = fut.result(timeout=10)
        waiting = actor.await_decision_async(2, 10)
        actor.post_epoch(2, 0, {"loss_sum": 1.5}).result(timeout=10)
        assert actor.collect_epoch_async(2, 1, 5).result(timeout=10) == [{"loss_sum": 1.5}]
        actor.decide(2, None).result(timeout=10)
        assert waiting.result(timeout=10) is None
        del actor, waiting
    finally:
        client.cancel([fut], force=True)
        del fut
