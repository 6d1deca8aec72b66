"""Input containers: validation, conversion at the boundary, placement on workers.

In-memory inputs (NumPy, scipy.sparse, pydata ``sparse``) are validated on
the client, shuffled once, cut into one row partition per worker loop and
scattered straight to the loop's worker.  Dask collections (``dask.array``
with dense or sparse chunks, ``dask.dataframe``) never pass through the
client: their partitions are computed where the scheduler puts them, each
loop takes the partitions its worker already holds, and validation (finite
values) happens there.
"""

import math
import uuid

import dask
import numpy as np
import scipy.sparse as sp

from .shards import make_shard

#: Rows per exchange aim at this many non-zeros: enough compute (~10 ms) to
#: dwarf an actor round trip (~1.5 ms between processes).
TARGET_CHUNK_NNZ = 2**18


def is_dask(obj):
    return dask.is_dask_collection(obj)


def is_pydata_sparse(obj):
    return type(obj).__module__.split(".")[0] == "sparse"


def to_scipy(X, name="X"):
    """pydata ``sparse`` (COO, GCXS, DOK) -> scipy CSR; anything else unchanged.

    Sparse inputs have their structure checked first (:func:`check_sparse_structure`):
    scipy does not check index values when a matrix is built from arrays, and
    its conversions, like our kernels, index memory with them unchecked.
    """
    pydata = is_pydata_sparse(X)
    if pydata:
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional, got a {X.ndim}-d sparse array")
        if hasattr(X, "coords"):  # COO: check the coordinates before converting
            _check_coords(X.coords, X.shape, X.data, name)
        if hasattr(X, "compressed_axes"):  # GCXS, likewise
            rows = tuple(X.compressed_axes) == (0,)
            _check_compressed(X.indptr, X.indices, X.data, X.shape[0 if rows else 1],
                              X.shape[1 if rows else 0], name, "column" if rows else "row")
        if not hasattr(X, "to_scipy_sparse"):
            return sp.csr_matrix(X.tocsr())
        X = X.to_scipy_sparse()  # GCXS: a view of its arrays
    if sp.issparse(X):
        check_sparse_structure(X, name)
    return sp.csr_matrix(X) if pydata else X


def _malformed(name, problem):
    return ValueError(
        f"{name} is a malformed sparse matrix: {problem}. scipy does not check index "
        "values when a matrix is built from (data, indices, indptr) arrays; build it "
        "from valid arrays, e.g. scipy.sparse.csr_matrix((data, (rows, cols)), shape=...) "
        "with 0 <= rows < n_rows and 0 <= cols < n_cols")


def _check_index_array(a, name, what):
    if a.ndim != 1:
        raise _malformed(name, f"its {what} array is {a.ndim}-dimensional, not 1-d")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} is a malformed sparse matrix: its {what} array has dtype "
                        f"{a.dtype}, not an integer type; build it with integer indices")


def _check_coords(coords, shape, data, name):
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[0] != len(shape):
        raise _malformed(name, f"its coordinates have shape {coords.shape}, expected "
                               f"({len(shape)}, nnz)")
    _check_index_array(coords[0], name, "coordinate")
    if coords.shape[1] != np.shape(data)[0]:
        raise _malformed(name, f"{coords.shape[1]} coordinates for {np.shape(data)[0]} "
                               "stored values")
    for axis, (c, n) in enumerate(zip(coords, shape, strict=True)):
        _check_range(c, n, name, f"{('row', 'column')[axis] if axis < 2 else 'axis'} index")


def _check_range(ids, n, name, what):
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise _malformed(name, f"a {what} is {bad}, outside 0..{n - 1}")


def check_sparse_structure(X, name="X"):
    """Raise a ``ValueError`` (``TypeError`` for index dtypes) naming the problem
    unless the index arrays of scipy sparse ``X`` are consistent with its shape.

    Checks, without modifying ``X`` (scipy's ``check_format`` prunes and
    recasts in place): CSR/CSC/BSR ``indptr`` length, start, monotonicity and
    end, ``indices``/``data`` lengths and every index in range; COO rows and
    columns in range.  Other formats (DOK, LIL, DIA) cannot hold an index
    outside their shape.  O(nnz), vectorised.
    """
    fmt = X.format
    if fmt in ("csr", "csc", "bsr"):
        n_major, n_minor = X.shape if fmt != "csc" else X.shape[::-1]
        if fmt == "bsr":
            r, c = X.blocksize
            n_major, n_minor = n_major // r, n_minor // c
        _check_compressed(X.indptr, X.indices, X.data, n_major, n_minor, name,
                          "column" if fmt != "csc" else "row")
    elif fmt == "coo":
        rows, cols = np.asarray(X.row), np.asarray(X.col)
        if rows.shape != cols.shape:
            raise _malformed(name, f"{rows.shape[0]} row and {cols.shape[0]} column indices")
        _check_coords(np.vstack([rows, cols]), X.shape, X.data, name)


def _check_compressed(indptr, indices, data, n_major, n_minor, name, minor):
    """The structure of compressed (CSR-like) arrays: ``n_major`` runs of indices
    into ``n_minor`` ``minor`` positions (rows or columns)."""
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    _check_index_array(indptr, name, "indptr")
    _check_index_array(indices, name, "indices")
    major = "rows" if minor == "column" else "columns"
    if indptr.shape[0] != n_major + 1:
        raise _malformed(name, f"indptr has {indptr.shape[0]} entries, expected "
                               f"{n_major + 1} (one more than its {n_major} {major})")
    if indptr[0] != 0:
        raise _malformed(name, f"indptr starts at {indptr[0]}, not 0")
    steps = np.diff(indptr)
    if (steps < 0).any():
        at = int(np.flatnonzero(steps < 0)[0])
        raise _malformed(name, f"indptr decreases at position {at + 1} (indptr must be "
                               "non-decreasing)")
    nnz = int(indptr[-1])
    if nnz > indices.shape[0] or np.shape(data)[0] != indices.shape[0]:
        raise _malformed(name, f"indptr ends at {nnz}, but indices has {indices.shape[0]} "
                               f"entries and data {np.shape(data)[0]}")
    _check_range(indices[:nnz], n_minor, name, f"{minor} index")


def dask_to_array(obj, name):
    """A dask DataFrame/Series becomes a dask array with known chunk sizes."""
    if hasattr(obj, "to_dask_array"):
        obj = obj.to_dask_array(lengths=True)
    if any(math.isnan(c) for c in obj.chunks[0]):
        obj = obj.compute_chunk_sizes()
    if name == "X" and obj.ndim != 2:
        raise ValueError(f"X must be 2-dimensional, got a {obj.ndim}-d dask array; "
                         "reshape it to (n_samples, n_features)")
    return obj


def auto_batch_size(n_rows, nnz):
    """Rows per chunk: about TARGET_CHUNK_NNZ non-zeros, at least 8 chunks a shard."""
    per_row = max(nnz / max(n_rows, 1), 1.0)
    return int(max(16, min(math.ceil(TARGET_CHUNK_NNZ / per_row), math.ceil(n_rows / 8))))


def check_finite_part(X):
    data = X.data if sp.issparse(X) else X
    if not np.isfinite(data).all():
        raise ValueError("Input X contains NaN or infinity; remove or impute those values "
                         "before fitting")


def shard_from_parts(X_parts, y_parts, encode, layout):
    """Build a shard on a worker from its dask partitions (runs as a task)."""
    parts = [to_scipy(x) for x in X_parts]
    if any(sp.issparse(x) for x in parts):
        X = sp.vstack([sp.csr_matrix(x, dtype=np.float64) for x in parts], format="csr")
    else:
        X = np.vstack([np.asarray(x, dtype=np.float64) for x in parts])
    check_finite_part(X)
    Y = encode(np.concatenate([np.asarray(y).ravel() for y in y_parts]))
    # Shuffled once here (in-memory data is shuffled by place_in_memory): the
    # sweeps visit a chunk's rows in storage order (WorkerShard.next_chunk).
    perm = np.random.default_rng([layout["seed"], 1]).permutation(X.shape[0])
    return shard_from_arrays(X[perm], Y[perm], layout)


def shard_from_arrays(X, Y, layout, rows=None):
    """Build a shard from a partition already on this worker (runs as a task);
    with ``rows``, from those rows of ``X`` and ``Y``."""
    if rows is not None:
        X, Y = X[rows], Y[rows]
    layout = dict(layout)
    if layout["batch_size"] is None:
        nnz = X.nnz if sp.issparse(X) else X.size
        layout["batch_size"] = auto_batch_size(X.shape[0], nnz)
    return make_shard(X, Y, **layout)


def place_in_memory(client, X, Y, loop_workers, layout, rng):
    """Shuffle, split into one partition per loop, ship each to its worker.

    The rows stay in shuffled order (not re-sorted): the sweeps visit a
    chunk's rows in storage order (see ``WorkerShard.next_chunk``), and a
    chunk of rows in the user's order could hold one class only.  Workers in
    this process (threads, the embedded default) take their rows from ``X``
    themselves, in parallel (scipy's row indexing releases the GIL); others
    receive a copy of theirs.  Scattered data is not hashed for its key
    (hashing took 0.08 s per 120 MB shard).
    """
    n = X.shape[0]
    perm = rng.permutation(n)
    bounds = np.linspace(0, n, len(loop_workers) + 1).astype(int)
    in_process = client.scheduler.address.startswith("inproc://")
    shards = []
    for i, addr in enumerate(loop_workers):
        idx = perm[bounds[i]:bounds[i + 1]]
        part = (X, Y, idx) if in_process else (X[idx], Y[idx], None)
        part = client.scatter(part, workers=[addr], direct=True, hash=False)
        shards.append(client.submit(
            lambda part, layout, seed: shard_from_arrays(
                part[0], part[1], dict(layout, seed=seed), part[2]),
            part, layout, int(rng.integers(2**31)), workers=[addr],
            allow_other_workers=False, pure=False,
            key=f"asyncopt-shard-{i}-{uuid.uuid4().hex[:12]}"))
    return shards, n


def place_dask(client, X, y, loop_workers, layout, encode, rng):
    """Compute the partitions where they fall and give each loop those it holds."""
    from distributed import wait

    X = X.rechunk({1: -1}) if X.numblocks[1] > 1 else X
    y = y.rechunk({0: X.chunks[0]})
    x_parts = client.compute(list(X.to_delayed().ravel()))
    y_parts = client.compute(list(y.to_delayed().ravel()))
    wait(x_parts + y_parts)
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
        if not all(assigned):
            raise ValueError(
                f"X has {len(x_parts)} row chunks for {len(loop_workers)} worker loops; "
                "rechunk X into at least n_workers row chunks or lower n_workers")
        shards = [client.submit(
            shard_from_parts, [x_parts[j] for j in mine], [y_parts[j] for j in mine],
            encode, dict(layout, seed=int(rng.integers(2**31))), workers=[addr],
            allow_other_workers=False, pure=False)
            for mine, addr in zip(assigned, loop_workers, strict=True)]
        try:
            wait(shards)
            for f in shards:
                if f.status == "error":
                    f.result()  # re-raises a partition's validation error here
        except BaseException:
            client.cancel(shards)
            raise
    finally:
        # release, not cancel: cancelling a key cancels its dependents (the shards)
        for f in x_parts + y_parts:
            f.release()
    return shards, sum(rows)
