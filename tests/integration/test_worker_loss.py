"""A worker and its nanny killed mid-fit on a real CLI deployment: the fit resumes on
the survivors, ends within 1% of an undisturbed fit (matrix factorisation: its test
RMSE, against an undisturbed fit on the survivors, whose stratification the
restart takes), and leaves nothing behind.

The kill happens mid-fit by construction: the fit's own ``callback`` (called
with every history row while the loops wait for the driver) kills a worker of
the fit after the first epoch and waits until the scheduler has removed it.
"""

import numpy as np
import pytest

from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization
from dask_asyncopt.datasets import make_ratings, make_sparse_classification
from dask_asyncopt.progress import FitProgress
from tests.conftest import logistic_objective
from tests.integration.deployments import deploy, nothing_left

pytestmark = pytest.mark.slow

ALPHA = 1e-4


def _kill_after_first_epoch(cluster, monkeypatch):
    """Make the fit's progress callback (it gets every history row, while the loops
    wait for the driver) kill one worker and its nanny after epoch 1 and wait
    until the scheduler has removed it.  Returns the list the victim goes in."""
    killed = []
    show = FitProgress.__call__

    def callback(self, row):
        show(self, row)
        if row.get("epoch") == 1 and not killed:
            workers = sorted(cluster.worker_pids())
            killed.append(workers[-1])
            cluster.kill_worker(workers[-1])
            cluster.wait_for_workers(len(workers) - 1)

    monkeypatch.setattr(FitProgress, "__call__", callback)
    return killed


def _leftovers(client):
    """What any worker still holds of a fit: tasks, actors, data keys, and the
    fit's exchange channel (plugins and handlers)."""
    def held(dask_worker):
        return {"tasks": len(dask_worker.state.tasks), "actors": len(dask_worker.state.actors),
                "data": len(dask_worker.data),
                "channel": [k for k in (*dask_worker.plugins, *dask_worker.handlers)
                            if "asyncopt" in k]}
    return client.run(held)


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_a_fit_survives_a_killed_worker_and_its_nanny(solver, monkeypatch):
    X, y = make_sparse_classification(20_000, 2_000, nnz_per_row=12, random_state=1)
    params = dict(loss="log_loss", penalty="l1", alpha=ALPHA, solver=solver, max_iter=8,
                  tol=None, random_state=0, timeout=30)
    with deploy.cli_cluster(n_workers=3) as cluster, cluster.client.as_current():
        reference = AsyncSGDClassifier(**params).fit(X, y)
        killed = _kill_after_first_epoch(cluster, monkeypatch)
        est = AsyncSGDClassifier(**params).fit(X, y)
        assert killed, "the callback did not kill a worker"
        assert "event" in est.history_ and est.history_["event"].notna().any()
        f_ref = logistic_objective(X, y, reference.coef_, reference.intercept_, ALPHA, 1.0)
        f_got = logistic_objective(X, y, est.coef_, est.intercept_, ALPHA, 1.0)
        assert abs(f_got - f_ref) <= 0.01 * f_ref
        assert nothing_left(cluster.client)
        assert all(v == {"tasks": 0, "actors": 0, "data": 0, "channel": []}
                   for v in _leftovers(cluster.client).values())


def test_matrix_factorization_survives_a_killed_worker_and_its_nanny(monkeypatch):
    X, y = make_ratings(600, 400, 60_000, random_state=2)
    train, test = slice(0, 50_000), slice(50_000, None)
    params = dict(n_factors=6, max_iter=10, random_state=0, timeout=30)
    with deploy.cli_cluster(n_workers=3) as cluster, cluster.client.as_current():
        killed = _kill_after_first_epoch(cluster, monkeypatch)
        mf = MatrixFactorization(**params).fit(X[train], y[train])
        assert killed
        # undisturbed, on the workers the fit ended on (the stratification follows them)
        monkeypatch.undo()
        reference = MatrixFactorization(**params).fit(X[train], y[train])
        rmse = np.sqrt(np.mean((mf.predict(X[test]) - y[test]) ** 2))
        rmse_ref = np.sqrt(np.mean((reference.predict(X[test]) - y[test]) ** 2))
        assert rmse <= 1.01 * rmse_ref
        assert nothing_left(cluster.client)
        assert all(v == {"tasks": 0, "actors": 0, "data": 0, "channel": []}
                   for v in _leftovers(cluster.client).values())
