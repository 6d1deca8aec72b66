"""The one local-or-remote binding (``solvers/handles.py``) on real clusters: direct calls
to objects in this process (thread workers, the driver included), actor calls to the
others (process workers), and chunks' ids sent once per fit to a remote block."""

import numpy as np
import pytest
import scipy.sparse as sp
from distributed import Actor, get_worker

from dask_asyncopt.data.shards import ShardLayout, make_shard
from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.solvers.handles import Handle, Ready, StoreRef, bind, objects_here
from dask_asyncopt.store.blocks import BlockServer, IdSet
from dask_asyncopt.store.replies import Pulled, StoreStats

from ..conftest import cluster_is_clean


def _blocks(client, n_coords=8):
    workers = sorted(client.nthreads())
    futures = [client.submit(BlockServer, b, 2, n_coords, 1, ElasticNet(), -1, "async", 1,
                             None, np.full((n_coords, 1), float(b + 1)), actor=True,
                             workers=[workers[b]], pure=False) for b in range(2)]
    return futures, client.gather(futures)


def test_ready_is_a_completed_call():
    ready = Ready(5)
    assert ready.done() and ready.result() == 5 and ready.result(timeout=1) == 5


@pytest.mark.parametrize("where", ["client", "process_client"])
def test_the_driver_binds_objects_here_and_actors_elsewhere(request, where):
    client = request.getfixturevalue(where)
    futures, actors = _blocks(client)
    try:
        here = objects_here()
        handles = bind(actors)
        local = where == "client"  # thread workers: every block is in this process
        assert [h.local for h in handles] == [local, local]
        assert all((a.key in here) == local for a in actors)
        for b, (h, actor) in enumerate(zip(handles, actors, strict=True)):
            assert h.actor is actor and h.sent is None
            if local:
                assert h.obj is here[actor.key] and isinstance(h.obj, BlockServer)
            call = h.call("stats")
            assert isinstance(call, Ready) == local
            stats = call.result(30)
            assert isinstance(stats, StoreStats) and stats.block == b
            # a call that may wait in the store: its async twin through the actor
            pulled = h.wait("pull_when", np.array([1, 3]), 0, 10.0).result(30)
            assert isinstance(pulled, Pulled) and pulled.version == 0
            np.testing.assert_array_equal(pulled.values, b + 1.0)
            assert h.ids(np.array([1, 2])) is not None and not isinstance(
                h.ids(np.array([1, 2])), IdSet)  # no shard: ids as they are
        del handles
    finally:
        del actors
        client.cancel(futures, force=True)
    assert cluster_is_clean(client)


def _in_task(shard, actors, ids):
    """What a loop does: bind from its shard's task; name a chunk's ids to each block."""
    handles = bind(actors, shard, loop=3)
    here = get_worker().address
    names = []
    values = []
    for h in handles:
        first, second = h.ids(ids), h.ids(ids)
        names.append((h.local, first, second))
        values.append([h.call("pull", name).result(30).values for name in (first, second)])
    again = [h.ids(ids) for h in bind(actors, shard, loop=3)]  # the same shard: sent already
    other = [h.ids(ids) for h in bind(actors, shard, loop=4)]  # another loop's names
    return here, names, values, again, other, {k: len(v) for k, v in shard.sent_ids.items()}


def test_a_loop_sends_a_chunks_ids_once_to_a_remote_block(process_client):
    client = process_client
    futures, actors = _blocks(client)
    workers = sorted(client.nthreads())
    X = sp.random(10, 16, density=0.3, format="csr", random_state=0)
    shard = client.submit(make_shard, X, np.ones((10, 1)), ShardLayout(16, 2, False, 10), 0,
                          workers=[workers[0]], pure=False)
    ids = np.array([0, 5, 6], dtype=np.int64)
    try:
        here, names, values, again, other, sent = client.submit(
            _in_task, shard, actors, ids, workers=[workers[0]], pure=False).result(60)
        assert here == workers[0]
        (local0, first0, second0), (local1, first1, second1) = names
        assert local0 and not local1  # block 0 lives on the loop's worker, block 1 not
        assert first0 is second0 and np.array_equal(first0, ids)  # direct calls: the array
        # the remote block: the ids with the first call, their name alone afterwards
        assert isinstance(first1, IdSet) and np.array_equal(first1.ids, ids)
        assert isinstance(second1, IdSet) and second1.ids is None
        assert first1.key == second1.key and first1.key[0] == 3
        for b in range(2):
            for v in values[b]:
                np.testing.assert_array_equal(v, b + 1.0)
        assert again[1].ids is None and again[1].key == first1.key
        assert isinstance(other[1], IdSet) and other[1].ids is not None  # loop 4: new name
        assert not isinstance(again[0], IdSet)
        assert sent == {actors[0].key: 0, actors[1].key: 2}
        # the remote block resolved the name to the ids it received once
        key = actors[1].key
        names = client.run(lambda dask_worker: list(dask_worker.state.actors[key].id_sets),
                           workers=[workers[1]])
        assert names == {workers[1]: [first1.key]}  # received once, by its name after
    finally:
        del actors
        client.cancel(futures + [shard], force=True)
    assert cluster_is_clean(client)


def test_handle_without_shard_or_object():
    """Loops get references (key, address), not actors: without the object here or a
    channel link, the handle binds an actor from the reference; it names a chunk's
    ids by their key after the first time.  With the object here it calls it."""
    ref = StoreRef("asyncopt-block-test", "tcp://127.0.0.1:1", BlockServer)
    h = Handle(ref, obj=None, sent=set(), loop=1)
    assert not h.local and h.ref is ref
    assert isinstance(h.actor, Actor) and StoreRef.of(h.actor) == ref
    ids = np.arange(3)
    named = h.ids(ids)
    assert isinstance(named, IdSet) and named.ids is ids and named.key == (1, id(ids))
    again = h.ids(ids)
    assert again.ids is None and again.key == named.key
    assert h.ids(None) is None
    obj = object()
    here = Handle(ref, obj=obj, sent=set())
    assert here.local and here.actor is None and here.ids(ids) is ids
    assert isinstance(here.call("__repr__"), Ready) and here.n_calls == 0
    del h
