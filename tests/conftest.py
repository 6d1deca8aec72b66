"""Shared real Dask clusters for the tests.

One thread-based ``LocalCluster`` (2 single-threaded workers, as the default
embedded cluster) serves most tests; it is the default client, which is how
users with an active client run.  A process-based cluster is started only by
the tests that ask for it (serialisation between processes).
"""


import os

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from distributed import Client, LocalCluster

from dask_asyncopt.cluster import WORKER_CONFIG

# The test clusters run as the embedded one does (see WORKER_CONFIG): in this
# process, and in the `dask worker` processes the CLI deployments start.
dask.config.set(WORKER_CONFIG)
os.environ.update({"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
                   for key, value in WORKER_CONFIG.items()})


@pytest.fixture(scope="session")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="session")
def process_client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(
            cluster, set_as_default=False, direct_to_workers=True) as c:
        yield c


@pytest.fixture(autouse=True)
def _default_client(client):
    """Every test runs with the shared cluster active, like a notebook user."""
    with client.as_current():
        yield


def cluster_is_clean(client, wait=5.0):
    """No tasks on the scheduler and no actors on any worker (releases are
    asynchronous: poll for up to ``wait`` seconds)."""
    import gc
    import time

    deadline = time.monotonic() + wait
    while True:
        gc.collect()
        n_tasks = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        actors = sum(client.run(lambda dask_worker: len(dask_worker.state.actors)).values())
        if (n_tasks == 0 and actors == 0) or time.monotonic() > deadline:
            if n_tasks or actors:  # shown with the failing test's output
                print("left on the cluster:", _leftovers(client))
            return n_tasks == 0 and actors == 0
        time.sleep(0.05)


def _leftovers(client):
    """The scheduler's tasks (key, state, who wants them) and the workers' actors."""
    def tasks(dask_scheduler):
        return [(str(key), ts.state, sorted(str(c.client_key) for c in ts.who_wants or ()))
                for key, ts in list(dask_scheduler.tasks.items())[:20]]
    return {"tasks": client.run_on_scheduler(tasks),
            "actors": client.run(lambda dask_worker: [str(k) for k in dask_worker.state.actors])}


def make_sparse_classification(n_samples, n_features, nnz_per_row=10, seed=0,
                               n_classes=2, noise=1.0):
    """Hashed-feature style sparse data with labels from a noisy linear model."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_samples), nnz_per_row)
    cols = rng.integers(0, n_features, size=n_samples * nnz_per_row)
    vals = np.full(n_samples * nnz_per_row, 1.0 / np.sqrt(nnz_per_row))
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n_samples, n_features))
    X.sum_duplicates()
    W = rng.normal(size=(n_features, n_classes)) * 3 * (rng.random((n_features, 1)) < 0.3)
    scores = X @ W + noise * rng.logistic(size=(n_samples, n_classes))
    if n_classes == 2:
        y = (scores[:, 1] - scores[:, 0] > 0).astype(int)
    else:
        y = scores.argmax(axis=1)
    return X, y


def logistic_objective(X, y, coef, intercept, alpha, l1_ratio):
    """scikit-learn SGD's objective: mean log-loss + alpha * elastic-net penalty."""
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    pen = l1_ratio * np.abs(coef).sum() + (1 - l1_ratio) * 0.5 * np.square(coef).sum()
    return np.logaddexp(0, -z).mean() + alpha * pen


@pytest.fixture(scope="session")
def data():
    """The solvers' small sparse test problem (5000 x 2000)."""
    from dask_asyncopt.datasets import make_sparse_classification as make

    return make(5000, 2000, random_state=3)


def penalty_args(penalty):
    """scikit-learn ``LogisticRegression``'s arguments for an ``"l1"`` or ``"l2"``
    penalty on every version the package supports: ``l1_ratio`` alone from 1.8
    (``penalty`` is deprecated there, to be removed in 1.10), ``penalty`` before
    (where ``l1_ratio`` is read for elastic-net only)."""
    import sklearn
    from sklearn.utils.fixes import parse_version

    if parse_version(sklearn.__version__) >= parse_version("1.8"):
        return {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    return {"penalty": penalty}


@pytest.fixture(scope="session")
def saga(data):
    """``fit(penalty, alpha)``: scikit-learn's exact solution of ``data``'s logistic
    objective (``LogisticRegression(solver="saga")`` with the matching ``C``, tol
    1e-8), computed once per session."""
    from sklearn.linear_model import LogisticRegression

    X, y = data
    cache = {}

    def fit(penalty, alpha=1e-4):
        if (penalty, alpha) not in cache:
            # LogisticRegression minimises C * sum(loss) + R(w): the same minimiser as
            # mean(loss) + alpha * R(w) for C = 1 / (n * alpha).
            cache[penalty, alpha] = LogisticRegression(
                **penalty_args(penalty), C=1.0 / (X.shape[0] * alpha), solver="saga",
                tol=1e-8, max_iter=5000).fit(X, y)
        return cache[penalty, alpha]

    return fit


@pytest.fixture(scope="session")
def optimum(data, saga):
    """``f_star(penalty, alpha)``: the exact optimum of ``data``'s logistic objective
    (:func:`saga`'s solution)."""
    X, y = data

    def f_star(penalty, alpha=1e-4):
        lr = saga(penalty, alpha)
        return logistic_objective(X, y, lr.coef_, lr.intercept_, alpha,
                                  1.0 if penalty == "l1" else 0.0)

    return f_star


def returned_objective(history):
    """The history's objective of the coefficients a fit returned: the last epoch's,
    unless epochs at the end raised the objective and were undone (their rows carry
    the event "objective rose ...: epoch undone"; the fit goes back to, and ends at,
    the iterate it kept), then that of the last epoch kept."""
    undone = (history["event"].fillna("").str.startswith("objective rose")
              if "event" in history else np.zeros(len(history), dtype=bool))
    kept = history.loc[~np.asarray(undone), "objective"]
    assert len(kept), "every epoch of the fit was undone"
    return kept.iloc[-1]


def ridge_gap(**params):
    """Relative objective gap of ``AsyncSGDRegressor(penalty="l2", **params)`` against
    scikit-learn's ``Ridge`` on a dense, unevenly scaled regression problem
    (squared error / 2 + alpha |w|^2 / 2, intercept unpenalised)."""
    from sklearn.linear_model import Ridge

    from dask_asyncopt import AsyncSGDRegressor

    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 40)) * rng.uniform(0.5, 3.0, size=40)
    y = X @ rng.normal(size=40) + 2.0 + rng.normal(size=3000)
    alpha = 1e-3

    def objective(coef, intercept):
        r = X @ coef + intercept - y
        return 0.5 * np.mean(r**2) + 0.5 * alpha * coef @ coef

    # Ridge minimises |y - Xw - b|^2 + a |w|^2: the same minimiser for a = n * alpha.
    ref = Ridge(alpha=X.shape[0] * alpha).fit(X, y)
    est = AsyncSGDRegressor(penalty="l2", alpha=alpha, **params).fit(X, y)
    f_star = objective(ref.coef_, ref.intercept_)
    return (objective(est.coef_, est.intercept_[0]) - f_star) / f_star
