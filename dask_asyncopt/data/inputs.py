"""Input containers: validation and conversion at the boundary.

The estimators validate in-memory inputs (NumPy, scipy.sparse, pydata
``sparse``) on the client; Dask collections (``dask.array`` with dense or
sparse chunks, ``dask.dataframe``) are checked chunk by chunk where they are,
by the same functions, when the loops' shards are built (:mod:`.placement`).
"""

import math

import dask
import numpy as np
import scipy.sparse as sp


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
    return dask_to_arrays(**{name: obj})[0]


def dask_to_arrays(**named):
    """Dask collections (``None`` passes through) as dask arrays with known chunk
    sizes, the unknown ones computed in ONE graph.

    Why one graph: ``X[mask]`` and ``y[mask]`` (or two columns of one frame)
    share keys, and each computation is optimised on its own: the same key can
    get two different tasks.  Sized one after the other with dask's
    ``compute_chunk_sizes``, such a pair left the shared keys' task states on
    the scheduler for good (``released``, wanted by no one).
    """
    import dask.array as da

    arrays = []
    for name, obj in named.items():
        if obj is not None and hasattr(obj, "to_dask_array"):
            obj = obj.to_dask_array()
        if name == "X" and obj is not None and obj.ndim != 2:
            raise ValueError(f"X must be 2-dimensional, got a {obj.ndim}-d dask array; "
                             "reshape it to (n_samples, n_features)")
        arrays.append(obj)
    unknown = [i for i, a in enumerate(arrays)
               if a is not None and any(math.isnan(c) for cs in a.chunks for c in cs)]
    shapes = dask.compute(*[arrays[i].map_blocks(
        _block_shape, dtype=np.int64, new_axis=arrays[i].ndim,
        chunks=tuple((1,) * len(c) for c in arrays[i].chunks) + ((arrays[i].ndim,),))
        for i in unknown])
    for i, shape in zip(unknown, shapes, strict=True):
        a = arrays[i]
        chunks = tuple(tuple(int(n) for n in np.moveaxis(shape, axis, 0)[
            (slice(None),) + (0,) * (a.ndim - 1) + (axis,)]) for axis in range(a.ndim))
        arrays[i] = da.Array(a.dask, a.name, chunks, meta=a._meta)
    return arrays


def _block_shape(block):
    return np.array(block.shape, dtype=np.int64).reshape((1,) * block.ndim + (block.ndim,))


def check_finite_part(X):
    data = X.data if sp.issparse(X) else X
    if not np.isfinite(data).all():
        raise ValueError("Input X contains NaN or infinity; remove or impute those values "
                         "before fitting")


def check_magnitude(X):
    """Raise unless the squares of finite ``X``'s values (float64) add up to a
    finite number.  The solvers size their steps and precondition their
    coordinates by rows' and columns' sums of squares: one that overflows to
    infinity gives a step of 0, and the fit would return its starting point
    without a word.  Bounds every such sum at the cost of one dot product."""
    data = X.data if sp.issparse(X) else np.ravel(X)
    with np.errstate(over="ignore"):  # the error below says it
        total = float(np.dot(data, data))
    if not math.isfinite(total):
        raise ValueError(
            f"X has values so large (up to {np.abs(data).max():.3g}) that the sum of their "
            "squares overflows float64, which the step sizes are computed from; scale the "
            "features (e.g. sklearn.preprocessing.MaxAbsScaler) before fitting")




def check_sample_weight(sample_weight, n_samples):
    """In-memory ``sample_weight`` as a new float64 array of shape ``(n_samples,)``
    (a scalar weighs every sample alike), or ``None``; a ``ValueError`` or
    ``TypeError`` naming the problem otherwise.  The caller's array is never
    modified."""
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        sw = np.full(n_samples, sw)
    if sw.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight has dtype {sw.dtype}; pass numeric weights, one "
                        "per sample")
    if sw.ndim != 1 or sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight has shape {sw.shape}; this fit needs "
                         f"({n_samples},): one weight per sample (row of X)")
    sw = np.array(sw, dtype=np.float64)
    check_weight_values(bool(np.isfinite(sw).all()), sw.min(initial=0.0),
                        sw.max(initial=0.0))
    return sw


def check_dask_sample_weight(sample_weight, row_chunks):
    """A dask ``sample_weight`` (dask or in-memory weights for dask ``X``) as a
    1-d dask array chunked as ``X``'s rows; its values are checked by
    :func:`check_weight_values` on the statistics of :func:`weight_stats`."""
    import dask.array as da

    if sample_weight is None:
        return None
    if is_dask(sample_weight):
        sw = dask_to_array(sample_weight, "sample_weight")
    else:
        sw = np.asarray(sample_weight)
        if sw.ndim == 1 and sw.shape[0] == sum(row_chunks):
            sw = da.from_array(sw, chunks=(row_chunks,))
    if sw.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight has dtype {sw.dtype}; pass numeric weights, one "
                        "per sample")
    if sw.ndim != 1 or sw.shape[0] != sum(row_chunks):
        raise ValueError(f"sample_weight has shape {sw.shape}; this fit needs "
                         f"({sum(row_chunks)},): one weight per sample (row of X)")
    return sw.astype(np.float64)


def weight_stats(sw):
    """Lazy (all finite, min, max) of dask weights, for :func:`check_weight_values`."""
    import dask.array as da

    return da.isfinite(sw).all(), sw.min(), sw.max()


def check_weight_values(finite, lowest, highest):
    """Weights must be finite, non-negative and not all zero (no sample would
    count: the fit would return the penalty's minimiser whatever the data)."""
    if not finite:
        raise ValueError("sample_weight contains NaN or infinity; pass finite weights")
    if lowest < 0:
        raise ValueError(f"sample_weight has negative values (the smallest is {lowest:g}); "
                         "weights must be >= 0")
    if highest <= 0:
        raise ValueError("sample_weight is zero for every sample, so no sample would count; "
                         "give some samples a positive weight")
