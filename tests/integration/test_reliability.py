"""A fit survives losing a worker process: it resumes from the driver's checkpoint
(``solvers/run.py``'s restarts, end to end on process workers).  The worker is killed
from the fit's own callback after a given epoch: mid-fit by construction."""

import os
import signal
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification

from ..conftest import cluster_is_clean, logistic_objective

pytestmark = pytest.mark.slow  # a 3-process cluster, two fits of 60k rows per test

ALPHA = 1e-4


@pytest.fixture(scope="module")
def cluster3():
    """Three worker processes (their nannies restart a killed one)."""
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(
            cluster, set_as_default=False, direct_to_workers=True) as c:
        yield c


class KillAfter:
    """A fit's callback that SIGKILLs one worker process right after the history row of
    ``epoch``, then waits until the scheduler has removed that worker: the loss lands
    mid-fit by construction (the fit has epochs left, and its loops cannot be more than
    an epoch ahead of the driver's rows), whatever the machine's speed."""

    def __init__(self, client, epoch, patience=300.0):
        self.client = client
        self.epoch = epoch
        self.patience = patience
        pids = client.run(os.getpid)
        self.victim = sorted(pids)[1]
        self.pid = pids[self.victim]
        self.killed = None

    def __call__(self, row):
        if self.killed is not None or row.get("epoch") != self.epoch:
            return
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + self.patience  # a bound, not an expectation
        while self.victim in self.client.nthreads():
            assert time.monotonic() < deadline, "the scheduler kept the killed worker"
            time.sleep(0.05)
        self.killed = self.victim


def _fit_killing_after(monkeypatch, client, estimator, epoch, X, y):
    """Fit ``estimator`` with a :class:`KillAfter` callback next to its own (the
    progress bar); return the fitted estimator and the killed worker's address."""
    from dask_asyncopt.solvers.config import Settings

    killer = KillAfter(client, epoch)
    module = type(estimator).__module__

    def settings(**kw):
        own = kw.get("callback")

        def callback(row):
            if own is not None:
                own(row)
            killer(row)

        return Settings(**{**kw, "callback": callback})

    monkeypatch.setattr(f"{module}.Settings", settings)
    estimator.fit(X, y)
    monkeypatch.undo()
    assert killer.killed is not None, "the fit ended before the worker was killed"
    return estimator, killer.killed


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_fit_survives_a_killed_worker(cluster3, monkeypatch, solver):
    X, y = make_sparse_classification(60_000, 20_000, random_state=21)
    kw = dict(loss="log_loss", penalty="l1", alpha=ALPHA, max_iter=8, tol=None,
              solver=solver, random_state=0, timeout=30)
    with cluster3.as_current():
        undisturbed = AsyncSGDClassifier(**kw).fit(X, y)
        f_ref = logistic_objective(X, y, undisturbed.coef_, undisturbed.intercept_, ALPHA, 1.0)
        est, killed = _fit_killing_after(  # half-way: after epoch 4 of 8
            monkeypatch, cluster3, AsyncSGDClassifier(**kw), 4, X, y)
    events = est.history_["event"].dropna().tolist()
    assert len(events) == 1 and killed in events[0], events
    assert est.n_iter_ == 8 and est.history_.epoch.max() == 8
    f = logistic_objective(X, y, est.coef_, est.intercept_, ALPHA, 1.0)
    assert abs(f - f_ref) / f_ref <= 0.01, (f, f_ref)
    assert cluster_is_clean(cluster3, wait=10)


def test_barrier_free_adpsgd_survives_a_killed_worker(cluster3, monkeypatch):
    """Plain SGD under adpsgd runs one task per loop for the whole fit: the kill
    lands mid-fit, the fit resumes from the last row's mean on the survivors."""
    X, y = make_sparse_classification(60_000, 20_000, random_state=22)
    alpha = 1e-5  # (at ALPHA the optimum is within 0.01% of w = 0 on these data)
    kw = dict(loss="log_loss", penalty="l1", alpha=alpha, max_iter=20, tol=None,
              solver="adpsgd", variance_reduction=None, random_state=0, timeout=30)
    with cluster3.as_current():
        undisturbed = AsyncSGDClassifier(**kw).fit(X, y)
        f_ref = logistic_objective(X, y, undisturbed.coef_, undisturbed.intercept_, alpha, 1.0)
        est, killed = _fit_killing_after(  # half-way: after the row of epoch 10 of 20
            monkeypatch, cluster3, AsyncSGDClassifier(**kw), 10, X, y)
    h = est.history_
    events = h["event"].dropna().tolist()
    assert len(events) == 1 and killed in events[0], events
    assert est.n_iter_ == 20 and h.epoch.max() == 20
    f = logistic_objective(X, y, est.coef_, est.intercept_, alpha, 1.0)
    assert abs(f - f_ref) / f_ref <= 0.02, (f, f_ref)
    assert cluster_is_clean(cluster3, wait=10)


@pytest.mark.parametrize("optimizer,solver", [("sgd", "asyb"), ("amsgrad", "asyb"),
                                              ("sgd", "adpsgd")])
def test_matrix_factorization_survives_a_killed_worker(cluster3, monkeypatch, optimizer,
                                                       solver):
    from dask_asyncopt import MatrixFactorization
    from dask_asyncopt.datasets import make_ratings

    X, y = make_ratings(n_users=4000, n_items=2000, n_ratings=300_000, random_state=8)
    X_test, y_test = X[-30_000:], y[-30_000:]
    X, y = X[:-30_000], y[:-30_000]
    kw = dict(n_factors=16, max_iter=8, random_state=0, timeout=30, optimizer=optimizer,
              solver=solver)
    with cluster3.as_current():
        undisturbed = MatrixFactorization(**kw).fit(X, y)
        rmse_ref = np.sqrt(np.mean((undisturbed.predict(X_test) - y_test) ** 2))
        est, killed = _fit_killing_after(  # after epoch 2 of 8: resumed from its checkpoint
            monkeypatch, cluster3, MatrixFactorization(**kw), 2, X, y)
    events = est.history_["event"].dropna().tolist()
    assert len(events) == 1 and killed in events[0], events
    assert est.n_iter_ == 8
    rmse = np.sqrt(np.mean((est.predict(X_test) - y_test) ** 2))
    # adpsgd resumes with one loop fewer and its item step scales with sqrt(loops):
    # undisturbed fits on 2 and 3 loops differ by ~1% (0.604 vs 0.610, measured)
    tolerance = 0.02 if solver == "adpsgd" else 0.01
    assert abs(rmse - rmse_ref) / rmse_ref <= tolerance, (rmse, rmse_ref)
    assert cluster_is_clean(cluster3, wait=10)
