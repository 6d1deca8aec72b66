"""Factor blocks of matrix factorisation (``store/factors.py``): exclusive check-out and
check-in, DSGD's tickets, giving a block back, stopping, statistics; as plain objects
from threads and as Dask actors."""

import asyncio
import threading

import numpy as np
import pytest

from dask_asyncopt.store.blocks import FitStopped
from dask_asyncopt.store.factors import FactorBlock, initial_rows
from dask_asyncopt.store.replies import CheckedIn, CheckedOut, StoreStats

from ..conftest import cluster_is_clean


def run_in_thread(fn, *args):
    box = {}

    def target():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["error"] = exc

    box["thread"] = threading.Thread(target=target, daemon=True)
    box["thread"].start()
    return box


def test_initial_rows():
    W = initial_rows(4000, 8, 0.5, [1, 2], width=14)
    assert W.shape == (4000, 14)
    np.testing.assert_array_equal(W[:, 8], 0.0)  # biases
    np.testing.assert_array_equal(W[:, 9], 1.0)  # AdaGrad's G starts at 1
    np.testing.assert_array_equal(W[:, 10:], 0.0)  # further state columns
    assert W[:, :8].std() == pytest.approx(0.5 / np.sqrt(8), rel=0.02)
    np.testing.assert_array_equal(W, initial_rows(4000, 8, 0.5, [1, 2], width=14))
    assert initial_rows(3, 2, 0.1, 0).shape == (3, 4)  # default width k + 2
    assert not np.array_equal(initial_rows(3, 2, 0.1, 0), initial_rows(3, 2, 0.1, 1))


def test_check_out_and_in_counts_versions_ratings_and_staleness():
    block = FactorBlock(3, 5, 2, 0.1, 0)
    start = block.rows()
    got = block.acquire(0)
    assert isinstance(got, CheckedOut) and got.version == 0
    np.testing.assert_array_equal(got.rows, start)
    got.rows[:] = 9.0  # a copy: the block is not changed until the check-in
    np.testing.assert_array_equal(block.rows(), start)
    assert block.acquire(1, wait=0.0) is None  # exclusive
    new = np.full((5, 4), 2.0)
    assert block.release(0, new, 17) == CheckedIn(1, 0)
    np.testing.assert_array_equal(block.rows(), new)
    with pytest.raises(RuntimeError, match="loop 1 checked in a block held by None"):
        block.release(1, new, 1)
    block.acquire(1)
    block.release(1, new, 3)
    stats = block.stats(reset=False)
    assert stats == StoreStats(3, 2, samples=20, pushes=2, staleness_sum=0, staleness_max=0)
    block.stats()  # reset
    assert block.stats() == StoreStats(3, 2)  # ratings count since the last reset


def test_tickets_hand_the_block_out_in_dsgd_order():
    """With tickets, the block goes to whoever holds the ticket of its version, in
    that order, whatever order the loops ask in."""
    block = FactorBlock(0, 2, 1, 0.0, 0)
    late = run_in_thread(block.acquire, 1, 1, 30.0)  # ticket 1: after the first visit
    late["thread"].join(0.2)
    assert late["thread"].is_alive()
    got = block.acquire(0, 0, 1.0)  # ticket 0 is free
    assert got.version == 0
    block.release(0, got.rows, 1)
    late["thread"].join(30)
    assert late["result"].version == 1 and block.holder == 1
    assert block.acquire(2, 5, 0.05) is None  # ticket 5 never comes within the wait


def test_give_back_releases_unchanged_and_stop_wakes_waiters():
    block = FactorBlock(0, 3, 2, 0.1, 0)
    before = block.rows()
    got = block.acquire(0)
    got.rows[:] = np.nan
    block.give_back(1)  # not the holder: nothing happens
    assert block.holder == 0
    block.give_back(0)
    assert block.holder is None and block.version == 0
    np.testing.assert_array_equal(block.rows(), before)
    block.acquire(0)
    waiting = run_in_thread(block.acquire, 1, None, 60.0)
    waiting["thread"].join(0.2)
    assert waiting["thread"].is_alive()
    block.stop()
    waiting["thread"].join(30)
    assert isinstance(waiting.get("error"), FitStopped)
    with pytest.raises(FitStopped):
        block.release(0, before, 1)


def test_warm_start_rows_are_copied():
    init = np.arange(12.0).reshape(3, 4)
    block = FactorBlock(0, 3, 2, 0.1, 0, init=init)
    init[:] = 0.0
    np.testing.assert_array_equal(block.rows(), np.arange(12.0).reshape(3, 4))


def test_async_twin_waits_without_blocking_the_event_loop():
    block = FactorBlock(0, 2, 1, 0.0, 0)
    got = block.acquire(0)

    async def main():
        waiter = asyncio.ensure_future(block.acquire_async(1, None, 30.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        block.release(0, got.rows, 2)  # the event loop is free to run this
        return await waiter

    assert asyncio.run(main()).version == 1


@pytest.mark.parametrize("where", ["client", "process_client"])
def test_factor_block_as_a_dask_actor(request, where):
    client = request.getfixturevalue(where)
    fut = client.submit(FactorBlock, 0, 4, 2, 0.1, 7, actor=True, pure=False)
    try:
        actor = fut.result(30)
        got = actor.acquire(0).result(30)
        assert isinstance(got, CheckedOut)
        np.testing.assert_array_equal(got.rows, initial_rows(4, 2, 0.1, 7))
        assert actor.acquire_async(1, None, 0.05).result(30) is None
        assert actor.release(0, got.rows + 1.0, 5).result(30) == CheckedIn(1, 0)
        stats = actor.stats().result(30)
        assert isinstance(stats, StoreStats) and (stats.samples, stats.pushes) == (5, 1)
        del actor
    finally:
        client.cancel([fut], force=True)
    assert cluster_is_clean(client)
