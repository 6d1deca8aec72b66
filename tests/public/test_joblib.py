"""Fits run by joblib: hyper-parameter searches on the user's cluster.

* Under ``joblib.parallel_backend("dask")`` each fit runs inside a Dask task:
  it must run on that task's cluster, seceding while it waits (it used to wait
  forever for its own block actors, pinned to the worker whose slot it held),
  and score as a sequential search does.
* ``n_jobs > 1`` under ``threading`` uses the active client; under ``loky``
  (child processes, which cannot see the parent's client) each child starts a
  private embedded cluster and says so with a ``PrivateClusterWarning``.

``solver="sync"`` with an int ``random_state`` is deterministic: scores are
compared exactly.  The ``timeout`` marks only turn a regression (a hang) into
a failure.
"""

import warnings

import joblib
import numpy as np
import pytest
from sklearn.model_selection import cross_val_score

from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization, cluster
from dask_asyncopt.cluster import PrivateClusterWarning
from dask_asyncopt.datasets import make_ratings, make_sparse_classification

from ..conftest import cluster_is_clean

PARAMS = {"max_iter": 3, "tol": None, "solver": "sync", "random_state": 0}


@pytest.fixture(scope="module")
def small():
    return make_sparse_classification(600, 200, random_state=0)


@pytest.mark.timeout(180)
def test_cross_val_score_under_dask_backend_matches_sequential(client, small):
    X, y = small
    est = AsyncSGDClassifier(**PARAMS)
    expected = cross_val_score(est, X, y, cv=3)
    with joblib.parallel_backend("dask"):
        got = cross_val_score(est, X, y, cv=3)
    np.testing.assert_array_equal(got, expected)
    assert cluster_is_clean(client)


@pytest.mark.timeout(180)
def test_cross_val_score_under_dask_backend_on_process_cluster(process_client, small):
    """Process workers: the fit runs on the worker's own client (neither an
    embedded cluster started inside the worker nor a hang)."""
    X, y = small
    est = AsyncSGDClassifier(**PARAMS)
    with process_client.as_current():
        expected = cross_val_score(est, X, y, cv=3)
    with joblib.parallel_backend("dask", client=process_client):
        got = cross_val_score(est, X, y, cv=3)
    np.testing.assert_array_equal(got, expected)
    assert not any(process_client.run(_embedded_started).values())
    assert cluster_is_clean(process_client)


def _embedded_started():
    return bool(cluster._embedded)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["linear", "mf"])
def test_fit_submitted_as_a_task(client, small, kind):
    """``client.submit(est.fit, X, y)``: one fit in a task, as the backend runs it."""
    if kind == "linear":
        X, y = small
        est = AsyncSGDClassifier(**PARAMS)
    else:
        X, y = make_ratings(120, 80, 2_000, random_state=3)
        est = MatrixFactorization(n_factors=4, max_iter=3, solver="sync", random_state=0)
    expected = est.fit(X, y).predict(X)
    fitted = client.submit(est.fit, X, y, pure=False).result()
    np.testing.assert_array_equal(fitted.predict(X), expected)
    assert cluster_is_clean(client)


@pytest.mark.timeout(180)
def test_threading_backend_uses_the_active_client(client, small):
    X, y = small
    est = AsyncSGDClassifier(**PARAMS)
    expected = cross_val_score(est, X, y, cv=3)
    embedded = dict(cluster._embedded)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivateClusterWarning)
        with joblib.parallel_backend("threading"):
            got = cross_val_score(est, X, y, cv=3, n_jobs=2)
    np.testing.assert_array_equal(got, expected)
    assert cluster._embedded == embedded  # no cluster started
    assert cluster_is_clean(client)


def _two_fits_in_child(X, y):
    """Runs in a loky worker: two fits, the warnings they raised, their coefficients."""
    import dask

    caught = []
    coefs = []
    try:
        # as many workers as the shared test cluster: the same blocks and loops
        with dask.config.set({"asyncopt.n-workers": 2}):
            for _ in range(2):
                with warnings.catch_warnings(record=True) as got:
                    warnings.simplefilter("always")
                    coefs.append(AsyncSGDClassifier(**PARAMS).fit(X, y).coef_)
                caught.append([w.category.__name__ for w in got
                               if issubclass(w.category, PrivateClusterWarning)])
    finally:
        cluster._shutdown()  # nothing of this test outlives it in the child
    return caught, coefs


@pytest.mark.timeout(300)
def test_loky_workers_warn_once_and_fit_on_a_private_cluster(client, small):
    X, y = small
    expected = AsyncSGDClassifier(**PARAMS).fit(X, y).coef_
    results = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_two_fits_in_child)(X, y) for _ in range(2))
    for caught, coefs in results:
        # once per process: the first fit starts the cluster, the second reuses it
        assert caught == [["PrivateClusterWarning"], []]
        for coef in coefs:
            np.testing.assert_array_equal(coef, expected)
    assert cluster_is_clean(client)


def test_no_warning_in_the_main_process_without_client():
    """The embedded cluster in the main process (no client, no parent) is the
    documented default: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivateClusterWarning)
        cluster._warn_private_cluster()
