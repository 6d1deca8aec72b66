"""In-memory rows through shared memory (``data/shared.py``): a lossless round trip,
no file left behind whatever happens to the task that reads it, and only workers that
see this host's ``/dev/shm`` are sent there."""

import gc
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import scipy.sparse as sp
from distributed import Event

from dask_asyncopt.data import placement, shared
from dask_asyncopt.data.shards import ShardLayout

from ..conftest import cluster_is_clean


def _ours():
    """This process's part files (others may come and go meanwhile)."""
    mine = f"{shared.PREFIX}{os.getpid()}-"
    return sorted(f for f in os.listdir(shared.DIRECTORY) if f.startswith(mine))


@pytest.mark.parametrize("kind", ["csr", "csr64", "dense", "empty"])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_part_comes_back_as_it_was_written_and_its_file_goes(kind, weighted):
    rng = np.random.default_rng(1)
    rows = 0 if kind == "empty" else 50
    X = sp.random(rows, 30, density=0.2, format="csr", random_state=rng)
    if kind == "csr64":
        X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    if kind == "dense":
        X = X.toarray()
    Y = rng.normal(size=(rows, 2))
    W = rng.random((rows, 2)) if weighted else None
    path, spec = shared.write_part(X, Y, W)
    assert os.path.exists(path)
    X2, Y2, W2 = shared.read_part(path, spec)
    assert not os.path.exists(path)
    assert type(X2) is type(X) and X2.shape == X.shape
    if sp.issparse(X):
        for name in ("indptr", "indices", "data"):  # (scipy may narrow the indices)
            np.testing.assert_array_equal(getattr(X2, name), getattr(X, name))
    else:
        np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(Y2, Y)
    assert (W2 is None) if W is None else np.array_equal(W2, W)


def test_a_write_that_fails_leaves_no_file():
    before = _ours()
    with pytest.raises(ValueError):  # a datetime array exports no buffer
        shared.write_part(np.zeros((3, 2)), np.zeros(3, "datetime64[D]"), None)
    assert _ours() == before


def test_old_files_of_writers_that_died_are_swept(monkeypatch):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = os.path.join(shared.DIRECTORY, f"{shared.PREFIX}{dead}-{uuid.uuid4().hex}")
    alive = os.path.join(shared.DIRECTORY, f"{shared.PREFIX}{os.getpid()}-{uuid.uuid4().hex}")
    recent = os.path.join(shared.DIRECTORY, f"{shared.PREFIX}{dead}-{uuid.uuid4().hex}")
    for path in (stale, alive, recent):
        open(path, "wb").close()
    old = os.stat(recent).st_mtime - shared.STALE_SECONDS - 1
    for path in (stale, alive):
        os.utime(path, (old, old))
    try:
        monkeypatch.setattr(shared, "_swept", False)
        shared.remove_part(shared._new_path())  # a new file's name sweeps once
        # the dead writer's old file goes; a live writer's and a recent one stay
        assert not os.path.exists(stale) and os.path.exists(alive) and os.path.exists(recent)
    finally:
        for path in (stale, alive, recent):
            shared.remove_part(path)


def test_only_workers_that_see_this_hosts_shared_memory_are_reached(process_client,
                                                                    monkeypatch):
    import dask

    workers = set(process_client.nthreads())
    assert shared.reachable(process_client, workers) == workers
    # an address that is not this host's is never asked (nothing listens there)
    assert shared.reachable(process_client, {"tcp://203.0.113.7:1234"}) == set()
    assert not shared._probe(os.path.join(shared.DIRECTORY, "no-such-file"), b"x")
    with dask.config.set({"asyncopt.shared-memory": False}):
        assert shared.reachable(process_client, workers) == set()


def test_a_placement_whose_tasks_never_run_leaves_no_file(process_client):
    """The fit is cancelled while its workers are busy: the rows' files are there
    until the fit drops the shards' futures, then gone, and so is everything else."""
    client = process_client
    workers = sorted(client.nthreads())
    busy = Event(f"busy-{uuid.uuid4().hex}", client=client)
    blockers = [client.submit(busy.wait, 60, workers=[w], pure=False) for w in workers]
    rng = np.random.default_rng(0)
    before = _ours()
    try:
        shards, _ = placement.place_in_memory(
            client, sp.random(400, 20, density=0.1, format="csr", random_state=0),
            rng.normal(size=(400, 1)), None, workers, ShardLayout(20, 2, False, 50), rng)
        assert len(_ours()) == len(before) + len(workers)
        client.cancel(shards)
        del shards
        gc.collect()
        assert _ours() == before
    finally:
        busy.set()
        client.gather(blockers)
        del blockers
    assert cluster_is_clean(client)
