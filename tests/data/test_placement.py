"""Placement of the training data on the workers (``data/placement.py``): rows per chunk,
shards built from arrays and from dask partitions, in-memory data shuffled and
shipped to each loop's worker, dask collections computed where they fall."""

import math
import os

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from distributed import wait

from dask_asyncopt.data import inputs, placement
from dask_asyncopt.data.shards import ShardLayout, WorkerShard

from ..conftest import cluster_is_clean


def _rows(shard):
    """A shard's rows (dense, with their targets and weights), in chunk order; an
    unweighted chunk's weights (``NO_WEIGHTS``) are all 1."""
    X = np.vstack([c.X.toarray() if hasattr(c.X, "indptr") else c.X for c in shard.chunks])
    W = np.vstack([np.ones_like(c.Y) if c.W.size == 0 else c.W for c in shard.chunks])
    return X, np.vstack([c.Y for c in shard.chunks]), W


def _as_set(*columns):
    return sorted(map(tuple, np.hstack(columns).round(12).tolist()))


def _encode(labels, sample_weight):
    """A classifier's targets (+1 / -1) and weights, shaped as the targets."""
    Y = np.where(labels == 1, 1.0, -1.0)[:, None]
    return Y, None if sample_weight is None else sample_weight[:, None]


def test_auto_batch_size_aims_at_target_non_zeros():
    assert placement.TARGET_CHUNK_NNZ == 2 ** 18
    # 20 non-zeros a row: 13108 rows make 2**18 non-zeros
    assert placement.auto_batch_size(10 ** 6, 20 * 10 ** 6) == math.ceil(2 ** 18 / 20)
    # at least 8 chunks a shard, at least 16 rows
    assert placement.auto_batch_size(8_000, 20 * 8_000) == 1_000
    assert placement.auto_batch_size(50, 50) == 16
    assert placement.auto_batch_size(0, 0) == 16


def test_shard_from_arrays_takes_the_rows_and_chooses_the_batch():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(300, 4)), rng.normal(size=(300, 1))
    W = rng.uniform(0.5, 2.0, size=(300, 1))
    rows = np.sort(rng.choice(300, 120, replace=False))
    shard = placement.shard_from_arrays(X, Y, W, ShardLayout(4, 2, False), 0, rows)
    assert isinstance(shard, WorkerShard) and shard.n_rows == 120
    assert [c.n_rows for c in shard.chunks] == [16] * 7 + [8]  # auto: max(16, 120 / 8)
    got_X, got_Y, got_W = _rows(shard)
    np.testing.assert_array_equal(got_X, X[rows][:, [0, 2, 1, 3]])  # columns: block order
    np.testing.assert_array_equal(got_Y, Y[rows])
    np.testing.assert_array_equal(got_W, W[rows])  # each row keeps its weight
    unweighted = placement.shard_from_arrays(X, Y, None, ShardLayout(4, 2, False), 0, rows)
    assert all(c.W.size == 0 for c in unweighted.chunks)  # NO_WEIGHTS: every weight 1


@pytest.mark.parametrize("sparse", [False, True])
def test_shard_from_parts_stacks_encodes_and_shuffles(sparse):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 5)) * (rng.random((90, 5)) < 0.6)
    y = rng.integers(0, 2, 90)
    sw = rng.uniform(0.5, 2.0, 90)
    cuts = [0, 20, 55, 90]
    parts = [X[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    if sparse:
        parts = [sp.csr_matrix(p) for p in parts]
    y_parts = [y[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    w_parts = [sw[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    layout = ShardLayout(5, 1, False, 30)

    shard = placement.shard_from_parts(parts, y_parts, w_parts, _encode, layout, 4)
    got_X, got_Y, got_W = _rows(shard)
    # every row with its target and its weight
    assert _as_set(got_X, got_Y, got_W) == _as_set(X, *_encode(y, sw))
    assert not np.array_equal(got_X, X)  # shuffled once, here
    again = _rows(placement.shard_from_parts(parts, y_parts, w_parts, _encode, layout, 4))
    np.testing.assert_array_equal(again[0], got_X)  # by the seed
    got_X, got_Y, got_W = _rows(placement.shard_from_parts(parts, y_parts, None, _encode,
                                                           layout, 4))
    assert _as_set(got_X, got_Y) == _as_set(X, _encode(y, None)[0])
    assert (got_W == 1).all()  # unweighted
    bad = [p.copy() for p in parts]
    bad[1][3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        placement.shard_from_parts(bad, y_parts, w_parts, _encode, layout, 4)


@pytest.mark.parametrize(("where", "shared"), [
    ("client", False), ("process_client", True), ("process_client", False)])
def test_place_in_memory_ships_one_shuffled_part_to_each_loops_worker(
        request, monkeypatch, where, shared):
    """Thread workers take their rows from X; worker processes on this host read
    theirs from shared memory (none left there after), or, with
    ``asyncopt.shared-memory`` off, receive them over the comms: the same shards."""
    import dask

    from dask_asyncopt.data import shared as shm

    client = request.getfixturevalue(where)
    written = []
    monkeypatch.setattr(placement, "write_part",
                        lambda *part: written.append(1) or shm.write_part(*part))
    monkeypatch.setitem(dask.config.config, "asyncopt", {
        **dask.config.config.get("asyncopt", {}), "shared-memory": shared})
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1000, 6))
    Y = rng.normal(size=(1000, 1))
    W = rng.uniform(0.5, 2.0, size=(1000, 1))
    workers = sorted(client.nthreads())
    loop_workers = [workers[0], workers[1], workers[0]]  # three loops on two workers
    futures, n = placement.place_in_memory(client, X, Y, W, loop_workers,
                                           ShardLayout(6, 2, False, 100),
                                           np.random.default_rng(0))
    try:
        assert n == 1000 and len(futures) == 3
        wait(futures)
        who = client.who_has(futures)
        assert [list(who[f.key]) for f in futures] == [[a] for a in loop_workers]
        shards = client.gather(futures)
        assert [s.n_rows for s in shards] == [333, 333, 334]
        rows = [_rows(s) for s in shards]
        got_X = np.vstack([r[0] for r in rows])[:, np.argsort([0, 2, 4, 1, 3, 5])]
        got_Y = np.vstack([r[1] for r in rows])
        got_W = np.vstack([r[2] for r in rows])
        # every row once, with its target and its weight
        assert _as_set(got_X, got_Y, got_W) == _as_set(X, Y, W)
        assert not np.array_equal(got_Y, Y)  # shuffled
        assert len({f.key for f in futures}) == 3 and all(
            f.key.startswith("asyncopt-shard-") for f in futures)
        assert len(written) == (3 if shared else 0)
        mine = f"{shm.PREFIX}{os.getpid()}-"
        assert not [f for f in os.listdir(shm.DIRECTORY) if f.startswith(mine)]
    finally:
        client.cancel(futures)
    assert cluster_is_clean(client)


def test_place_dask_gives_each_loop_whole_partitions(client):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 6))
    y = rng.integers(0, 2, 400)
    sw = rng.uniform(0.5, 2.0, 400)
    Xd = da.from_array(X, chunks=(50, 3))  # 8 row chunks, 2 column chunks
    yd = da.from_array(y, chunks=100)
    swd = da.from_array(sw, chunks=200)  # rechunked as X's rows

    workers = sorted(client.nthreads())
    futures, n = placement.place_dask(client, Xd, yd, swd, workers,
                                      ShardLayout(6, 2, False, 64), _encode,
                                      np.random.default_rng(0))
    try:
        assert n == 400 and len(futures) == 2
        shards = client.gather(futures)
        sizes = [s.n_rows for s in shards]
        assert sum(sizes) == 400 and all(s % 50 == 0 for s in sizes)  # whole partitions
        got = [_rows(s) for s in shards]
        got_X = np.vstack([g[0] for g in got])[:, np.argsort([0, 2, 4, 1, 3, 5])]
        got_Y = np.vstack([g[1] for g in got])
        got_W = np.vstack([g[2] for g in got])
        assert _as_set(got_X, got_Y, got_W) == _as_set(X, *_encode(y, sw))
    finally:
        client.cancel(futures)
    assert cluster_is_clean(client)
    with pytest.raises(ValueError, match="rechunk X into at least n_workers row chunks"):
        placement.place_dask(client, da.from_array(X, chunks=(400, 6)), yd, None, workers,
                             ShardLayout(6, 2, False, 64), _encode, np.random.default_rng(0))
    bad = X.copy()
    bad[123, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        placement.place_dask(client, da.from_array(bad, chunks=(50, 6)), yd, None, workers,
                             ShardLayout(6, 2, False, 64), _encode, np.random.default_rng(0))
    assert cluster_is_clean(client)


@pytest.mark.parametrize(("sparse", "stratify"), [(False, False), (True, True)])
def test_place_dask_holds_out_rows_and_scores_them_where_they_lie(client, sparse, stratify):
    """With a hold-out, the shards train on every row but the held-out ones
    (each chunk's count from HeldOut.counts, by class when stratified), those rows
    come back as futures on the cluster, and their score there is scikit-learn's
    on the same rows."""
    from sklearn.metrics import accuracy_score

    from dask_asyncopt.solvers.config import HeldOut, LinearProblem
    from dask_asyncopt.solvers.linear import held_out_score

    rng = np.random.default_rng(6)
    X = rng.normal(size=(430, 6))
    y = rng.integers(0, 2, 430)
    sw = rng.uniform(0.5, 2.0, 430)
    Xd = da.from_array(sp.csr_matrix(X) if sparse else X, chunks=(100, 6), asarray=False)
    classes = np.array([0, 1])

    def part_score(decision, labels, w):
        return float(w @ (classes[(decision[:, 0] > 0).astype(int)] == labels)), float(w.sum())

    def combine(sums):
        return sum(s[0] for s in sums) / sum(s[1] for s in sums)

    spec = HeldOut(0.25, 11, part_score, combine, stratify=stratify)
    counts = spec.counts(Xd.chunks[0])
    assert counts == [25, 25, 25, 25, 8]
    futures, n, held = placement.place_dask(
        client, Xd, da.from_array(y, chunks=100), da.from_array(sw, chunks=100),
        sorted(client.nthreads()), ShardLayout(6, 2, False, 64), _encode,
        np.random.default_rng(0), spec)
    try:
        assert n == 430 - sum(counts)
        index = np.concatenate([100 * j + placement.held_index(
            m, k, 11, j, y[100 * j:100 * j + m] if stratify else None)
            for j, (m, k) in enumerate(zip(Xd.chunks[0], counts, strict=True))])
        train = np.setdiff1d(np.arange(430), index)
        got = [_rows(s) for s in client.gather(futures)]
        got_X = np.vstack([g[0] for g in got])[:, np.argsort([0, 2, 4, 1, 3, 5])]
        assert _as_set(got_X, np.vstack([g[1] for g in got]), np.vstack([g[2] for g in got])
                       ) == _as_set(X[train], *_encode(y[train], sw[train]))
        parts = client.gather(held)
        X_val = np.vstack([p[0].toarray() if sparse else p[0] for p in parts])
        np.testing.assert_array_equal(X_val, X[index])
        coef = np.r_[rng.normal(size=6), 0.1][:, None]  # intercept last
        problem = LinearProblem(n_features=6, n_outputs=1, loss=0, penalty=None,
                                fit_intercept=True, schedule=None)
        expected = accuracy_score(y[index], (X[index] @ coef[:6, 0] + 0.1 > 0).astype(int),
                                  sample_weight=sw[index])
        assert held_out_score(client, held, problem, spec, coef) == pytest.approx(expected)
    finally:
        client.cancel(futures + held)
    assert cluster_is_clean(client)


@pytest.mark.parametrize("labels", [
    np.repeat(["a", "b", "c"], [70, 20, 10]),  # shares exact at k=10: 7, 2, 1
    np.repeat([0, 1, 2], [34, 33, 33]),  # remainders: one class rounds up
    np.repeat([5, 7], [99, 1]),  # a class of one row
    np.zeros(100),  # one class
])
@pytest.mark.parametrize("k", [0, 10, 37, 99])
def test_a_stratified_hold_out_takes_each_class_share(labels, k):
    """Each class holds out its share of the chunk's ``k`` rows, rounded so the
    shares add up to ``k`` and no class gives more rows than it has; the same
    rows for the same seed and chunk (the shard and the held-out rows are cut
    by different tasks), others for another chunk."""
    labels = np.random.default_rng(k).permutation(labels)
    index = placement.held_index(100, k, 3, 2, labels)
    np.testing.assert_array_equal(index, placement.held_index(100, k, 3, 2, labels))
    assert index.shape == (k,) and np.all(np.diff(index) > 0)
    for c in np.unique(labels):
        of_c = labels == c
        assert abs(np.count_nonzero(of_c[index]) - k * of_c.mean()) < 1
    if 0 < k < 99:
        assert not np.array_equal(index, placement.held_index(100, k, 3, 5, labels))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_held_out_row_fails_the_placement(client, bad):
    """A held-out row is checked as the training rows are: before, a NaN there
    passed, and every validation score of the fit was NaN."""
    from dask_asyncopt.solvers.config import HeldOut

    X = np.random.default_rng(9).normal(size=(200, 3))
    X[100 + placement.held_index(100, 20, 4, 1)[0], 2] = bad  # held out of chunk 1
    with pytest.raises(ValueError, match="NaN or infinity"):
        placement.place_dask(
            client, da.from_array(X, chunks=(100, 3)), da.from_array(X[:, 0] > 0, chunks=100),
            None, sorted(client.nthreads()), ShardLayout(3, 1, False, 64), _encode,
            np.random.default_rng(0), HeldOut(0.2, 4, None, None))
    assert cluster_is_clean(client)


def test_a_hold_out_that_leaves_the_training_rows_no_weight_fails(client):
    """Weights positive on the held-out rows alone pass the check of all the
    weights; the placement then refuses (as the in-memory hold-out does),
    where before the fit returned its starting point without a word."""
    from dask_asyncopt.solvers.config import HeldOut

    X = np.random.default_rng(10).normal(size=(200, 3))
    w = np.zeros(200)
    for j in range(2):
        w[100 * j + placement.held_index(100, 20, 4, j)] = 1.0
    with pytest.raises(ValueError, match="training rows are all zero"):
        placement.place_dask(
            client, da.from_array(X, chunks=(100, 3)), da.from_array(X[:, 0] > 0, chunks=100),
            da.from_array(w, chunks=100), sorted(client.nthreads()),
            ShardLayout(3, 1, False, 64), _encode, np.random.default_rng(0),
            HeldOut(0.2, 4, None, None))
    assert cluster_is_clean(client)


def test_held_out_rows_outlive_the_worker_they_lay_on():
    """A worker holding held-out rows leaves (the fit restarts on the others):
    the rows are computed again on a survivor, so the epoch's score is still
    taken (before, each was pinned to its first worker and waited for it
    forever, hanging the fit)."""
    from distributed import Client, LocalCluster

    from dask_asyncopt.solvers.config import HeldOut, LinearProblem
    from dask_asyncopt.solvers.linear import held_out_score

    X = np.random.default_rng(8).normal(size=(400, 3))
    y = (X[:, 0] > 0).astype(int)
    spec = HeldOut(0.25, 5, lambda d, labels, w: (float(((d[:, 0] > 0) == labels).sum()),
                                                 float(labels.shape[0])),
                   lambda sums: sum(s[0] for s in sums) / sum(s[1] for s in sums))
    problem = LinearProblem(n_features=3, n_outputs=1, loss=0, penalty=None,
                            fit_intercept=True, schedule=None)
    coef = np.array([[1.0], [0.0], [0.0], [0.0]])  # intercept last: the labels' rule
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(
            cluster, set_as_default=False) as c:
        shards, _, held = placement.place_dask(
            c, da.from_array(X, chunks=(100, 3)), da.from_array(y, chunks=100), None,
            sorted(c.nthreads()), ShardLayout(3, 1, True, 64), _encode,
            np.random.default_rng(0), spec)
        c.cancel(shards)
        victim = next(iter(c.who_has(held)[held[0].key]))
        c.sync(next(w for w in cluster.workers.values() if w.address == victim).close)
        wait(held, timeout=60)  # a bound: pinned rows never finish
        assert held_out_score(c, held, problem, spec, coef) == 1.0
        c.cancel(held)
        assert cluster_is_clean(c)


def test_place_dask_feeds_a_loop_whose_worker_holds_no_partition(client):
    """Every partition on one worker (the scheduler's choice): the other loop still
    gets rows, as long as there are as many row chunks as loops."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 4))
    y = rng.integers(0, 2, 300)
    first, second = sorted(client.nthreads())
    Xd = client.persist(da.from_array(X, chunks=(50, 4)), workers=[first])
    wait(Xd)
    assert {w for ws in client.who_has(Xd).values() for w in ws} == {first}
    futures, n = placement.place_dask(client, Xd, da.from_array(y, chunks=50), None,
                                      [first, second], ShardLayout(4, 2, False, 64),
                                      _encode, np.random.default_rng(0))
    try:
        sizes = [s.n_rows for s in client.gather(futures)]
        assert n == 300 and sum(sizes) == 300 and min(sizes) >= 50
    finally:
        client.cancel(futures)
    del Xd
    assert cluster_is_clean(client)


def test_placement_keeps_rows_shuffled(client):
    """Rows sorted by class reach every chunk mixed: the shards keep the
    placement's shuffle (the sweeps visit rows in storage order)."""
    n = 4000
    X = sp.random(n, 50, density=0.1, format="csr", random_state=0)
    Y = np.repeat([[-1.0], [1.0]], n // 2, axis=0)  # sorted by class
    workers = sorted(client.nthreads())
    layout = ShardLayout(n_features=50, n_blocks=2, fit_intercept=True, batch_size=200)
    futures, _ = placement.place_in_memory(client, X, Y, None, workers, layout,
                                           np.random.default_rng(0))
    for shard in client.gather(futures):
        for chunk in shard.chunks:
            share = (chunk.Y > 0).mean()
            assert 0.25 < share < 0.75
    client.cancel(futures)
    assert cluster_is_clean(client)



def test_place_dask_with_keys_shared_by_x_and_y_leaves_no_task(process_client):
    """X and y selected by one mask share its keys: computed as one graph, no
    key gets two tasks, and every task is released after the placement."""
    rng = np.random.default_rng(4)
    X = da.from_array(rng.normal(size=(400, 6)), chunks=(100, 6))
    y = da.from_array(rng.integers(0, 2, 400), chunks=100)
    keep = X[:, 1] > -1.0
    with process_client.as_current():
        Xm, ym = inputs.dask_to_arrays(X=X[keep], y=y[keep])
    workers = sorted(process_client.nthreads())
    futures, n = placement.place_dask(process_client, Xm, ym, None, workers,
                                      ShardLayout(6, 2, False, 64), _encode,
                                      np.random.default_rng(0))
    try:
        assert n == Xm.shape[0] and sum(s.n_rows for s in process_client.gather(futures)) == n
    finally:
        process_client.cancel(futures)
    assert cluster_is_clean(process_client)
