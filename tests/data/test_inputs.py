"""Every input container fits and predicts with matching accuracy."""

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import sparse

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor
from dask_asyncopt.data import inputs
from dask_asyncopt.datasets import make_sparse_classification

from ..conftest import cluster_is_clean


@pytest.fixture(scope="module")
def data():
    X, y = make_sparse_classification(4000, 300, nnz_per_row=15, random_state=5)
    return X.tocsr(), y


def _fit_score(X, y, X_eval, y_eval):
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, random_state=0, max_iter=15)
    est.fit(X, y)
    pred = est.predict(X_eval)
    if hasattr(pred, "compute"):
        pred = pred.compute()
    return est, float(np.mean(pred == y_eval))


@pytest.fixture(scope="module")
def reference_accuracy(data):
    X, y = data
    return _fit_score(X, y, X, y)[1]


CONTAINERS = {
    "numpy": lambda X, y: (X.toarray(), y),
    "csr": lambda X, y: (X, y),
    "csc": lambda X, y: (X.tocsc(), y),
    "coo": lambda X, y: (X.tocoo(), y),
    "sparse.COO": lambda X, y: (sparse.COO.from_scipy_sparse(X), y),
    "sparse.GCXS": lambda X, y: (sparse.GCXS.from_scipy_sparse(X), y),
    "dask.array dense": lambda X, y: (da.from_array(X.toarray(), chunks=(1000, -1)),
                                      da.from_array(y, chunks=1000)),
    "dask.array sparse chunks": lambda X, y: (
        da.from_array(X, chunks=(1000, -1), asarray=False), da.from_array(y, chunks=1000)),
    "dask.dataframe": lambda X, y: (
        dd.from_pandas(pd.DataFrame(X.toarray()).rename(columns=str), npartitions=4),
        dd.from_pandas(pd.Series(y), npartitions=4)),
}


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_container_fits_and_predicts(container, data, reference_accuracy, client):
    X, y = data
    Xc, yc = CONTAINERS[container](X, y)
    est, acc = _fit_score(Xc, yc, Xc, y)
    assert acc >= reference_accuracy - 0.03
    assert est.n_features_in_ == X.shape[1]
    if container.startswith("dask"):
        assert hasattr(est.predict(Xc), "dask")  # lazy result for lazy input
        assert hasattr(est.predict_proba(Xc), "dask")
        np.testing.assert_allclose(est.predict_proba(Xc).compute(),
                                   est.predict_proba(X.toarray()))
    assert cluster_is_clean(client)


def test_regressor_on_dask_dataframe():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    y = X @ [1.0, -2.0, 0.5, 0.0] + 0.3
    ddf = dd.from_pandas(pd.DataFrame(X, columns=list("abcd")), npartitions=3)
    ys = dd.from_pandas(pd.Series(y), npartitions=3)
    reg = AsyncSGDRegressor(random_state=0).fit(ddf, ys)
    pred = reg.predict(ddf)
    assert hasattr(pred, "dask")
    np.testing.assert_allclose(pred.compute(), X @ reg.coef_ + reg.intercept_)
    assert reg.score(X, y) > 0.99


def test_masked_dask_rows_are_sized_in_one_graph(client):
    """``X[keep]``, ``y[keep]`` share keys and have unknown chunk sizes: sized
    together they match dask's own sizes, and neither the sizing nor a fit on
    them leaves a task on the cluster (dask's ``compute_chunk_sizes`` on one,
    then the other, left the shared keys' task states on the scheduler)."""
    Xn = np.random.default_rng(4).normal(size=(400, 6))
    X = da.from_array(Xn, chunks=(100, 6))
    y = da.from_array((Xn[:, 0] > 0).astype(int), chunks=100)
    keep, kept = X[:, 1] > -1.0, Xn[:, 1] > -1.0
    Xm, ym, none = inputs.dask_to_arrays(X=X[keep], y=y[keep], sample_weight=None)
    assert none is None
    assert Xm.chunks == (tuple(int(kept[i:i + 100].sum()) for i in range(0, 400, 100)), (6,))
    assert ym.chunks == (Xm.chunks[0],)
    np.testing.assert_array_equal(ym.compute(), (Xn[:, 0] > 0)[kept])
    est = AsyncSGDClassifier(max_iter=2, tol=None, random_state=0).fit(X[keep], y[keep])
    assert est.n_features_in_ == 6
    assert cluster_is_clean(client)


def test_process_cluster(process_client, data):
    """Workers in other processes: data, actors and updates are serialised."""
    X, y = data
    with process_client.as_current():
        est, acc = _fit_score(X, y, X, y)
    assert acc > 0.7
    assert cluster_is_clean(process_client)


def test_more_loops_than_workers(data):
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, n_workers=3, max_iter=3,
                             tol=None).fit(X, y)
    assert est.history_.samples.iloc[-1] >= 3 * X.shape[0]


def test_sparse_and_dense_agree_sync(data):
    X, y = data
    kw = dict(loss="log_loss", alpha=1e-4, solver="sync", random_state=0, max_iter=10)
    a = AsyncSGDClassifier(**kw).fit(X, y)
    b = AsyncSGDClassifier(**kw).fit(sp.coo_matrix(X), y)
    np.testing.assert_allclose(a.coef_, b.coef_)


@pytest.mark.parametrize("penalty,dense", [("l1", False), ("l2", False), ("l1", True)])
def test_process_cluster_sync_fit_equals_thread_fit(process_client, data, penalty, dense):
    """Across processes a loop reads only weights from the other worker's block
    and takes the SVRG drift and penalty scale once per epoch
    (``BlockServer.svrg_terms``); on threads every read packs all three.  The
    deterministic solver must not tell the two apart."""
    X, y = data
    X = X.toarray() if dense else X
    kw = dict(loss="log_loss", penalty=penalty, alpha=1e-4, solver="sync", random_state=0,
              max_iter=4, tol=None)
    threads = AsyncSGDClassifier(**kw).fit(X, y)
    with process_client.as_current():
        processes = AsyncSGDClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(processes.coef_, threads.coef_)
    np.testing.assert_array_equal(processes.intercept_, threads.intercept_)
    np.testing.assert_array_equal(processes.history_.objective, threads.history_.objective)
    assert cluster_is_clean(process_client)
