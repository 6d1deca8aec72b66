"""The per-epoch hand-off between worker loops and the driver (``handoff.EpochHandOff``),
as mixed into ``BlockServer``: plain calls from threads, the async entry points,
and through a real Dask actor."""

import asyncio
import threading
import time

import pytest

from dask_asyncopt.store import BlockServer, FitStopped


def new_server(n_workers=2):
    return BlockServer(0, 1, 3, 1, 0.0, 0.0, -1, "async", n_workers, None)


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
    decision = {"target": 100, "config": {"svrg": {"eta": 2.0}}}
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


def test_decision_timeout_counts_from_the_slowest_loop():
    """A fast loop waits for a straggler's epoch and then ``timeout`` for the driver."""
    server = new_server()
    box = {}

    def fast():
        server.post_epoch(1, 0, {})
        box["decision"] = server.await_decision(1, 0.3)

    t = threading.Thread(target=fast)
    t.start()
    time.sleep(0.25)
    server.post_epoch(1, 1, {})  # the straggler, near the fast loop's own timeout
    time.sleep(0.2)  # past 0.3 s after the fast loop's post, within 0.3 s of the last
    server.decide(1, {"target": 2, "config": {}})
    t.join(5)
    assert box == {"decision": {"target": 2, "config": {}}}


def test_async_waits_hold_no_thread():
    """Many remote waiters on one event loop (a barrier and the hand-off) are woken
    without an executor thread each."""
    n = 40
    server = new_server(n_workers=n + 1)

    async def main():
        before = threading.active_count()
        barrier = [asyncio.ensure_future(server.arrive_at("e", i, 10, float(i)))
                   for i in range(n)]
        decisions = [asyncio.ensure_future(server.await_decision_at(1, 10)) for _ in range(n)]
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
        waiting = asyncio.ensure_future(server.await_decision_at(1, 5))
        server.post_epoch(1, 0, "done")
        reports = await server.collect_epoch_at(1, 1, 5)
        server.decide(1, {"target": 1, "config": {}})
        return reports, await waiting

    assert asyncio.run(main()) == (["done"], {"target": 1, "config": {}})


def test_hand_off_through_a_dask_actor(client):
    fut = client.submit(BlockServer, 0, 1, 3, 1, 0.0, 0.0, -1, "async", 1, None, actor=True,
                        key="test-handoff-actor")
    try:
        actor = fut.result(timeout=10)
        waiting = actor.await_decision_at(2, 10)
        actor.post_epoch(2, 0, {"loss_sum": 1.5}).result(timeout=10)
        assert actor.collect_epoch_at(2, 1, 5).result(timeout=10) == [{"loss_sum": 1.5}]
        actor.decide(2, None).result(timeout=10)
        assert waiting.result(timeout=10) is None
        del actor, waiting
    finally:
        client.cancel([fut], force=True)
        del fut


def _post_after(block, delay, worker, fail=False):
    """A worker loop's task ending with its last epoch's post (or failing instead)."""
    time.sleep(delay)
    if fail:
        raise ValueError("a loop failed")
    block.post_epoch(1, worker, worker).result(10)
    return {"worker": worker}


@pytest.mark.parametrize("where", ["client", "process_client"])
def test_driver_collects_epochs_and_sees_failed_loops(request, where):
    """``_Run.epoch_reports``: a loop whose task already ended (after its last post)
    is no failure while a slower one has yet to post; a failed loop's error is
    raised.  Direct calls on a thread cluster, actor calls on a process cluster."""
    from dask_asyncopt.solvers.driver import Settings, _Run

    client = request.getfixturevalue(where)
    fut = client.submit(BlockServer, 0, 1, 3, 1, 0.0, 0.0, -1, "async", 2, None, actor=True,
                        key=f"test-handoff-driver-{where}")
    try:
        run = _Run(client, [], [], Settings(timeout=10), "t")
        run.actors = [fut.result(timeout=10)]
        workers = sorted(client.nthreads())
        for fail in (False, True):
            run.loops = [client.submit(_post_after, run.actors[0], delay, i, fail and i == 1,
                                       workers=[workers[i]], pure=False)
                         for i, delay in enumerate((0.0, 0.4))]
            run.epochs = (0, 1)
            assert (run.local_blocks()[0] is None) == (where == "process_client")
            if fail:
                with pytest.raises(ValueError, match="a loop failed"):
                    run.epoch_reports(1, poll=0.05)
            else:
                assert run.epoch_reports(1, poll=0.05) == [0, 1]
            run.loops.clear()
    finally:
        client.cancel([fut], force=True)
