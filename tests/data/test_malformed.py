"""Malformed sparse inputs get a clear error before any kernel sees them.

scipy builds a matrix from ``(data, indices, indptr)`` without checking index
values; an index outside the shape used to crash the user's process in a
kernel (or in scipy's own format conversions).  Hypothesis generates valid
matrices, corrupts one part of their structure, and every container (scipy
CSR/CSC/COO, pydata COO/GCXS, a dask array with one malformed chunk) must give
a ``ValueError``/``TypeError`` that says "malformed" and what is wrong, in
``fit`` and in ``predict``, leaving the cluster clean.
"""

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.data.inputs import check_sparse_structure, to_scipy

from ..conftest import cluster_is_clean

CORRUPTIONS = ["index too large", "negative index", "indptr decreasing", "indptr length",
               "indptr start", "indptr end", "float indices", "data length"]


@st.composite
def malformed_compressed(draw):
    """(arrays of a CSR matrix with one corruption, shape, corruption)."""
    n_rows = draw(st.integers(2, 12))
    n_cols = draw(st.integers(1, 9))
    nnz_row = draw(st.lists(st.integers(0, n_cols), min_size=n_rows, max_size=n_rows))
    if sum(nnz_row) == 0:
        nnz_row[0] = 1
    indptr = np.concatenate([[0], np.cumsum(nnz_row)]).astype(np.int32)
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    indices = np.concatenate([rng.choice(n_cols, k, replace=False) for k in nnz_row]
                             ).astype(np.int32)
    data = rng.normal(size=indices.shape[0])
    what = draw(st.sampled_from(CORRUPTIONS))
    at = draw(st.integers(0, indices.shape[0] - 1))
    big = draw(st.sampled_from([n_cols, n_cols + 1, 10**6, 2**31 - 1]))
    if what == "index too large":
        indices[at] = big
    elif what == "negative index":
        indices[at] = -draw(st.integers(1, 2**31 - 1))
    elif what == "indptr decreasing":
        r = int(np.argmax(nnz_row))  # a row with entries: its end moves before its start
        indptr[r + 1] = indptr[r] - 1
        if indptr[r + 1] < 0:
            indptr[r + 1] = 0
            indptr[r] = 1
    elif what == "indptr length":
        indptr = indptr[:-1] if draw(st.booleans()) else np.append(indptr, indptr[-1])
    elif what == "indptr start":
        indptr = indptr + draw(st.integers(1, 3))
    elif what == "indptr end":
        indptr[-1] = indices.shape[0] + draw(st.integers(1, 5))
    elif what == "float indices":
        indices = indices.astype(np.float64)
    elif what == "data length":
        data = data[:-1]
    return (data, indices, indptr), (n_rows, n_cols), what


def _malformed_matrix(fmt, arrays, shape):
    data, indices, indptr = arrays
    if fmt == "gcxs":  # pydata's compressed format, rows compressed, arrays swapped in
        X = sparse.GCXS(sparse.COO.from_numpy(np.ones(shape)), compressed_axes=(0,))
        X.data, X.indices, X.indptr = data, indices, indptr
        return X
    if fmt == "csr":
        X = sp.csr_matrix(shape)
        X.data, X.indices, X.indptr = data, indices, indptr
        return X
    if fmt == "csc":
        X = sp.csc_matrix(shape[::-1])
        X.data, X.indices, X.indptr = data, indices, indptr
        return X
    raise AssertionError(fmt)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=malformed_compressed(), fmt=st.sampled_from(["csr", "csc", "gcxs"]))
def test_malformed_compressed_matrices_are_refused(case, fmt):
    arrays, shape, what = case
    X = _malformed_matrix(fmt, arrays, shape)
    if fmt != "gcxs":
        with pytest.raises((ValueError, TypeError), match="malformed sparse matrix"):
            check_sparse_structure(X)
    with pytest.raises((ValueError, TypeError), match="malformed sparse matrix"):
        to_scipy(X)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=malformed_compressed())
def test_a_dask_array_with_a_malformed_chunk_is_refused_on_the_worker(case, client):
    """The check runs where the chunk is, in the task that builds the loop's shard."""
    import dask

    arrays, shape, what = case
    good = sp.random(shape[0], shape[1], density=0.5, format="csr", random_state=0)
    chunks = [da.from_delayed(dask.delayed(m)(), shape=shape, dtype=np.float64,
                              meta=sp.csr_matrix((0, shape[1])))
              for m in (lambda: good, lambda: _malformed_matrix("csr", arrays, shape))]
    X = da.concatenate(chunks, axis=0)
    y = da.from_array(np.arange(2 * shape[0]) % 2, chunks=shape[0])
    with pytest.raises((ValueError, TypeError), match="malformed sparse matrix"):
        AsyncSGDClassifier(max_iter=1, n_workers=2).fit(X, y)
    assert cluster_is_clean(client)


@st.composite
def malformed_coords(draw):
    n_rows, n_cols = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    nnz = draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    coords = np.vstack([rng.integers(0, n_rows, nnz), rng.integers(0, n_cols, nnz)])
    axis, at = draw(st.integers(0, 1)), draw(st.integers(0, nnz - 1))
    # within int32: scipy's setters cast (wrap) coordinates to its index dtype
    coords[axis, at] = draw(st.sampled_from([-1, -(2**31), (n_rows, n_cols)[axis],
                                             2**31 - 1]))
    return coords, (n_rows, n_cols)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=malformed_coords(), kind=st.sampled_from(["scipy", "pydata"]))
def test_malformed_coordinates_are_refused(case, kind):
    coords, shape = case
    if kind == "scipy":
        X = sp.coo_matrix(shape)
        X.row, X.col, X.data = coords[0], coords[1], np.ones(coords.shape[1])
    else:
        X = sparse.COO(np.zeros((2, 0), dtype=np.int64), np.ones(0), shape=shape)
        X.coords, X.data = coords, np.ones(coords.shape[1])  # past pydata's own check
    with pytest.raises(ValueError, match="malformed sparse matrix"):
        to_scipy(X)


def _bad_csr():
    """The reported crash: one column index is 10**6 in a 60 x 3 matrix."""
    cols = np.where(np.arange(60) == 7, 10**6, np.arange(60) % 3)
    return sp.csr_matrix((np.ones(60), cols, np.arange(61)), shape=(60, 3))


def test_fit_and_predict_refuse_a_malformed_matrix(client):
    """The reported crash: a column index >= n_features killed the process."""
    X, y = _bad_csr(), np.arange(60) % 2
    with pytest.raises(ValueError, match="column index is 1000000, outside 0..2"):
        AsyncSGDClassifier(max_iter=3).fit(X, y)
    good = sp.csr_matrix((np.ones(60), np.arange(60) % 3, np.arange(61)), shape=(60, 3))
    est = AsyncSGDClassifier(max_iter=2, random_state=0).fit(good, y)
    with pytest.raises(ValueError, match="malformed"):
        est.predict(X)
    assert cluster_is_clean(client)


def test_a_malformed_chunk_of_a_dask_array_is_refused_on_the_worker(client):
    good = sp.csr_matrix(np.random.default_rng(0).random((30, 4)))
    parts = [da.from_array(good, chunks=(30, 4), asarray=False),
             da.from_array(_bad_4(), chunks=(30, 4), asarray=False)]
    X = da.concatenate(parts, axis=0)
    y = da.from_array(np.arange(60) % 2, chunks=30)
    with pytest.raises(ValueError, match="malformed sparse matrix"):
        AsyncSGDClassifier(max_iter=2).fit(X, y)
    assert cluster_is_clean(client)
    est = AsyncSGDClassifier(max_iter=2, random_state=0).fit(good, np.arange(30) % 2)
    with pytest.raises(ValueError, match="malformed sparse matrix"):
        est.predict(X).compute()


def _bad_4():
    X = sp.csr_matrix(np.random.default_rng(1).random((30, 4)))
    X.indices[5] = 4
    return X
