"""Placement of the training data on the workers, as the loops' shards.

In-memory inputs are shuffled once, cut into one row partition per worker
loop and handed to the loop's worker (through shared memory on the client's
host, else scattered straight to it).  Dask collections never
pass through the client: their partitions are computed where the scheduler
puts them, each loop takes the partitions its worker already holds, and
validation (structure, finite values) happens there.
"""

import math
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from .inputs import check_finite_part, check_magnitude, to_scipy
from .shards import make_shard
from .shared import reachable, read_part, remove_part, write_part

#: Rows per exchange aim at this many non-zeros: enough compute to dwarf an
#: exchange's round trip between processes.
TARGET_CHUNK_NNZ = 2**18


def auto_batch_size(n_rows, nnz):
    """Rows per chunk: about TARGET_CHUNK_NNZ non-zeros, at least 8 chunks a shard."""
    per_row = max(nnz / max(n_rows, 1), 1.0)
    return int(max(16, min(math.ceil(TARGET_CHUNK_NNZ / per_row), math.ceil(n_rows / 8))))


def held_index(n, k, seed, part, labels=None):
    """The ``k`` held-out rows (sorted) of row chunk ``part`` of ``n`` rows
    (``k`` from :meth:`~dask_asyncopt.solvers.config.HeldOut.counts`); with the
    chunk's class ``labels``, stratified: each class holds out its share of
    ``k`` (the largest remainders round up), as scikit-learn's
    ``StratifiedShuffleSplit`` splits a classifier's data in memory.

    A function of its arguments alone: :func:`held_rows` and
    :func:`shard_from_parts` run apart (other tasks, other workers) and must
    split a chunk the same way, and so must every attempt of a fit (a restart
    after a lost worker places the data again: the held-out rows stay held out)."""
    rng = np.random.default_rng([seed, part])
    if labels is None:
        return np.sort(rng.choice(n, k, replace=False))
    _, of_class, sizes = np.unique(np.asarray(labels).ravel(), return_inverse=True,
                                   return_counts=True)
    quota = k * sizes / n
    take = np.floor(quota).astype(np.int64)
    # ties between equal remainders broken at random, not by class order
    order = np.lexsort((rng.random(sizes.shape[0]), take - quota))
    take[order[:k - take.sum()]] += 1  # never above a class's size: k < n
    rows = [rng.choice(np.flatnonzero(of_class == c), t, replace=False)
            for c, t in enumerate(take) if t]
    return np.sort(np.concatenate(rows)) if rows else np.empty(0, np.int64)


def _held(y, n, k, seed, part, stratify):
    """:func:`held_index` of a chunk with targets ``y`` (its labels, when ``stratify``)."""
    return held_index(n, k, seed, part, labels=y if stratify else None)


def _take(a, index):
    """Rows ``index`` of a chunk of ``X``, ``y`` or the weights (``None`` stays)."""
    if a is None:
        return None
    a = to_scipy(a)
    return sp.csr_matrix(a)[index] if sp.issparse(a) else np.asarray(a)[index]


def held_rows(x, y, w, k, seed, part, stratify=False):
    """The held-out rows of one chunk: ``(X, y, sample_weight or None)`` (a task).
    Their ``X`` is checked as a shard's is (:func:`shard_from_parts` sees the
    other rows only): a NaN there would make every validation score NaN."""
    index = _held(y, x.shape[0], k, seed, part, stratify)
    X = _take(x, index)
    check_finite_part(X)
    check_magnitude(X)
    return X, _take(y, index), _take(w, index)


def _weighs(shard):
    """Whether a shard's rows carry any weight (an unweighted chunk's are all 1).
    The data's weights were checked whole, before a hold-out took its rows: the
    rest may weigh nothing, and a fit on them would return its start."""
    return any(c.W.size == 0 or bool((c.W > 0).any()) for c in shard.chunks)


def shard_from_parts(X_parts, y_parts, w_parts, encode, layout, seed, drop=None):
    """Build a shard on a worker from its dask partitions (runs as a task);
    ``w_parts`` are the sample weights' partitions, or ``None``; ``drop``, per
    partition, ``(k, seed, part, stratify)`` of the rows held out
    (:func:`held_index`) that it leaves out."""
    if drop is not None:
        keep = [np.delete(np.arange(x.shape[0]), _held(y, x.shape[0], *d))
                for x, y, d in zip(X_parts, y_parts, drop, strict=True)]
        X_parts = [_take(x, i) for x, i in zip(X_parts, keep, strict=True)]
        y_parts = [_take(y, i) for y, i in zip(y_parts, keep, strict=True)]
        w_parts = None if w_parts is None else [
            _take(w, i) for w, i in zip(w_parts, keep, strict=True)]
    parts = [to_scipy(x) for x in X_parts]
    if any(sp.issparse(x) for x in parts):
        X = sp.vstack([sp.csr_matrix(x, dtype=np.float64) for x in parts], format="csr")
    else:
        X = np.vstack([np.asarray(x, dtype=np.float64) for x in parts])
    check_finite_part(X)
    check_magnitude(X)
    y = np.concatenate([np.asarray(y).ravel() for y in y_parts])
    sw = None if w_parts is None else np.concatenate(
        [np.asarray(w, dtype=np.float64).ravel() for w in w_parts])
    Y, W = encode(y, sw)
    # Shuffled once here (in-memory data is shuffled by place_in_memory): the
    # sweeps visit a chunk's rows in storage order (WorkerShard.next_chunk).
    perm = np.random.default_rng([seed, 1]).permutation(X.shape[0])
    return shard_from_arrays(X[perm], Y[perm], None if W is None else W[perm], layout, seed)


def shard_from_arrays(X, Y, W, layout, seed, rows=None):
    """Build a shard from a partition already on this worker (runs as a task);
    with ``rows``, from those rows of ``X``, ``Y`` and the weights ``W``."""
    if rows is not None:
        X, Y = X[rows], Y[rows]
        W = None if W is None else W[rows]
    if layout.batch_size is None:
        nnz = X.nnz if sp.issparse(X) else X.size
        layout = replace(layout, batch_size=auto_batch_size(X.shape[0], nnz))
    return make_shard(X, Y, layout, seed, W)


def _shard_from_shared(part, layout, seed):
    """A shard from rows the client wrote to shared memory (a task; ``part``: the
    file's path and spec)."""
    return shard_from_arrays(*read_part(*part), layout, seed)


def place_in_memory(client, X, Y, W, loop_workers, layout, rng):
    """Shuffle, split into one partition per loop, ship each to its worker.

    The rows stay in shuffled order (not re-sorted): the sweeps visit a
    chunk's rows in storage order (see ``WorkerShard.next_chunk``), and a
    chunk of rows in the user's order could hold one class only.  Workers in
    this process (threads, the embedded default) take their rows from ``X``
    themselves, in parallel (scipy's row indexing releases the GIL); worker
    processes on this host read a copy of theirs from shared memory
    (:mod:`.shared`); others receive one over the comms, scattered without
    hashing for its key (hashing reads every byte of the shard once more).
    """
    n = X.shape[0]
    perm = rng.permutation(n)
    bounds = np.linspace(0, n, len(loop_workers) + 1).astype(int)
    seeds = [int(rng.integers(2**31)) for _ in loop_workers]
    in_process = client.scheduler.address.startswith("inproc://")
    near = set() if in_process else reachable(client, set(loop_workers))

    def place(i):
        idx = perm[bounds[i]:bounds[i + 1]]
        where = {"workers": [loop_workers[i]], "allow_other_workers": False, "pure": False,
                 "key": f"asyncopt-shard-{i}-{uuid.uuid4().hex[:12]}"}
        if in_process:  # scattered in this process: a reference, not a copy
            part = client.scatter((X, Y, W, idx), workers=where["workers"], direct=True,
                                  hash=False)
            return client.submit(lambda part, layout, seed: shard_from_arrays(
                *part[:3], layout, seed, part[3]), part, layout, seeds[i], **where)
        part = X[idx], Y[idx], None if W is None else W[idx]
        if loop_workers[i] in near:
            try:
                path, spec = write_part(*part)
            except OSError:  # a full /dev/shm: over the comms after all
                pass
            else:
                # The file's name is scattered to the worker, as the rows would be: a
                # shard must not be computed again once its worker is lost (its file
                # is gone and the task pinned there would wait for good), it must
                # fail, so that the fit restarts (solvers.run.WorkerLost).
                named = client.scatter((path, spec), workers=where["workers"], direct=True,
                                       hash=False)
                shard = client.submit(_shard_from_shared, named, layout, seeds[i], **where)
                # the task removes the file once open; if it never runs (a fit
                # that failed or was cancelled first), dropping its future does
                weakref.finalize(shard, remove_part, path)
                return shard
        part = client.scatter(part, workers=where["workers"], direct=True, hash=False)
        return client.submit(lambda part, layout, seed: shard_from_arrays(*part, layout, seed),
                             part, layout, seeds[i], **where)

    if in_process or len(loop_workers) == 1:
        return [place(i) for i in range(len(loop_workers))], n
    # One loop's rows are gathered (scipy releases the GIL) and written or
    # serialised while another's are on their way.
    with ThreadPoolExecutor(min(len(loop_workers), 4)) as pool:
        return list(pool.map(place, range(len(loop_workers)))), n


def place_dask(client, X, y, sample_weight, loop_workers, layout, encode, rng,
               hold_out=None):
    """Compute the partitions where they fall and give each loop those it holds
    (with its rows' labels and, if any, sample weights); a loop whose worker holds
    none takes one from another loop.  An error only with fewer row chunks than
    loops.

    Returns the shards and their rows; with ``hold_out`` (a
    :class:`~dask_asyncopt.solvers.config.HeldOut`) the shards leave the held-out
    rows out, and a third item lists futures of those rows per chunk
    (:func:`held_rows`), computed from the same partitions where they lie.
    """
    from distributed import wait

    X = X.rechunk({1: -1}) if X.numblocks[1] > 1 else X
    y = y.rechunk({0: X.chunks[0]})
    weights = [] if sample_weight is None else list(
        sample_weight.rechunk({0: X.chunks[0]}).to_delayed().ravel())
    # One graph: X, y and the weights often share keys (y = X[:, 0] > 0, or
    # columns of one dataframe), and collections computed separately are
    # optimised separately, which can give one key two different tasks (the
    # scheduler then keeps stale task states and may deadlock).
    n_parts = len(X.chunks[0])
    futures = client.compute(list(X.to_delayed().ravel()) + list(y.to_delayed().ravel())
                             + weights)
    x_parts, y_parts = futures[:n_parts], futures[n_parts:2 * n_parts]
    w_parts = futures[2 * n_parts:]
    wait(futures)
    try:
        who = client.who_has(x_parts)
        rows = X.chunks[0]
        loops_at = {}
        for i, addr in enumerate(loop_workers):
            loops_at.setdefault(addr, []).append(i)
        assigned = [[] for _ in loop_workers]
        load = [0] * len(loop_workers)
        for j, fut in enumerate(x_parts):
            local = [i for a in who.get(fut.key, ()) for i in loops_at.get(a, ())]
            # keep a partition where it lies when a loop runs there, else even out rows
            i = min(local or range(len(loop_workers)), key=lambda i: load[i])
            assigned[i].append(j)
            load[i] += rows[j]
        # The scheduler may have put every partition on some loops' workers: a loop
        # left without one takes one from the most loaded loop holding several (its
        # rows then move worker to worker), so enough row chunks always suffice.
        for i in [i for i, mine in enumerate(assigned) if not mine]:
            donors = [k for k, mine in enumerate(assigned) if len(mine) > 1]
            if not donors:
                break
            k = max(donors, key=lambda k: load[k])
            j = assigned[k].pop()
            assigned[i].append(j)
            load[k] -= rows[j]
            load[i] += rows[j]
        if not all(assigned):
            raise ValueError(
                f"X has {len(x_parts)} row chunks for {len(loop_workers)} worker loops; "
                "rechunk X into at least n_workers row chunks or lower n_workers")
        counts = None if hold_out is None else hold_out.counts(rows)
        # not bound to a worker: the scheduler runs them where their partition
        # lies, and recomputes them elsewhere if that worker is lost
        held = [] if hold_out is None else [client.submit(
            held_rows, x_parts[j], y_parts[j], w_parts[j] if w_parts else None, k,
            hold_out.seed, j, hold_out.stratify, pure=False)
            for j, k in enumerate(counts) if k]
        shards = [client.submit(
            shard_from_parts, [x_parts[j] for j in mine], [y_parts[j] for j in mine],
            [w_parts[j] for j in mine] if w_parts else None, encode, layout,
            int(rng.integers(2**31)),
            None if counts is None else [(counts[j], hold_out.seed, j, hold_out.stratify)
                                         for j in mine],
            workers=[addr], allow_other_workers=False, pure=False)
            for mine, addr in zip(assigned, loop_workers, strict=True)]
        try:
            wait(shards + held)
            for f in shards + held:
                if f.status == "error":
                    f.result()  # re-raises a partition's validation error here
            if held and w_parts and not any(client.gather(
                    [client.submit(_weighs, s, pure=False) for s in shards])):
                raise ValueError(
                    "the sample weights of the training rows are all zero (every weighted "
                    "sample was held out for validation): use another random_state or "
                    "validation_fraction, or early_stopping=False")
        except BaseException:
            client.cancel(shards + held)
            raise
    finally:
        # release, not cancel: cancelling a key cancels its dependents (the shards)
        for f in x_parts + y_parts + w_parts:
            f.release()
    if hold_out is None:
        return shards, sum(rows)
    return shards, sum(rows) - sum(counts), held
