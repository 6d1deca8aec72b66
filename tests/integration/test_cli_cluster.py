"""Fits on a real CLI deployment: ``dask scheduler`` and ``dask worker`` (with
nannies) as subprocesses (``benchmarks/deploy.py``), and the deployment's
teardown.  Nothing here depends on timing: waits are bounded polls."""

import gc

import numpy as np
import pytest

from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization
from dask_asyncopt.datasets import make_ratings, make_sparse_classification
from tests.integration.deployments import deploy, gone, nothing_left

pytestmark = pytest.mark.slow  # scheduler and worker processes started from the CLI


@pytest.fixture(scope="module")
def cli():
    with deploy.cli_cluster(n_workers=2) as cluster:
        yield cluster


@pytest.mark.parametrize("optimizer", ["sgd", "amsgrad"])
@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_classifier_fits_on_cli_cluster(cli, solver, optimizer):
    X, y = make_sparse_classification(3000, 500, nnz_per_row=10, random_state=0)
    with cli.client.as_current():
        clf = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=1e-4, solver=solver,
                                 optimizer=optimizer, max_iter=3, tol=None, random_state=0,
                                 timeout=60).fit(X, y)
    assert clf.n_iter_ == 3
    assert clf.score(X, y) > 0.7
    assert nothing_left(cli.client)


@pytest.mark.parametrize("solver", ["asyb", "adpsgd"])
def test_partial_fit_stream_on_cli_cluster(cli, solver):
    """The blocks (replicas) a stream keeps between calls live in worker
    processes; deleting the estimator frees them and their channel."""
    X, y = make_sparse_classification(3000, 500, nnz_per_row=10, random_state=1)
    with cli.client.as_current():
        clf = AsyncSGDClassifier(loss="log_loss", solver=solver, random_state=0, timeout=60)
        for start in range(0, 3000, 1000):
            part = slice(start, start + 1000)
            clf.partial_fit(X[part], y[part], classes=[0, 1],
                            sample_weight=np.full(1000, 0.5))
        assert clf.score(X, y) > 0.7
        # the kept blocks keep their channel, but each call closed the driver's links
        assert _driver_links_closed()
        del clf
        gc.collect()
    assert nothing_left(cli.client)


def _driver_links_closed(wait=30.0):
    """No link thread of a channel left in this (the driver's) process: a closed
    link's reader ends once its socket is shut (asynchronously: a bounded poll)."""
    import threading
    import time

    deadline = time.monotonic() + wait
    while any(t.name.startswith("asyncopt-link") for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_matrix_factorization_fits_on_cli_cluster(cli):
    X, y = make_ratings(300, 200, 8000, random_state=0)
    with cli.client.as_current():
        mf = MatrixFactorization(n_factors=4, max_iter=3, random_state=0, timeout=60).fit(X, y)
    assert np.isfinite(mf.predict(X[:10])).all()
    assert mf.history_.epoch.max() == 3
    assert nothing_left(cli.client)


def test_teardown_stops_everything_even_when_the_body_raises():
    with pytest.raises(RuntimeError, match="body failed"):
        with deploy.cli_cluster(n_workers=2) as cluster:
            workers, nannies = cluster.worker_pids(), cluster.nanny_pids()
            assert set(workers) == set(nannies) and len(workers) == 2
            victim = sorted(workers)[0]
            cluster.kill_worker(victim)  # SIGKILL to the worker and its nanny together
            assert gone([workers[victim], nannies[victim]])
            cluster.wait_for_workers(1)  # no nanny left to restart it
            pids = [*workers.values(), *nannies.values(), cluster.scheduler.pid]
            tmpdir = cluster.tmpdir
            raise RuntimeError("body failed")
    assert gone(pids, wait=0)  # terminate() waited for them
    assert not tmpdir.exists()


def test_a_fit_after_the_scheduler_died_says_so():
    """The scheduler process is killed between two fits: the next fit fails (once the
    client gave up reconnecting: its ``timeout``) with an error naming the lost
    scheduler, not distributed's "ConnectionPool closing"."""
    import signal

    from distributed import Client

    X, y = make_sparse_classification(500, 50, random_state=0)
    with deploy.cli_cluster(n_workers=1) as cluster, Client(
            cluster.address, timeout=3, set_as_default=False) as client:
        with client.as_current():
            AsyncSGDClassifier(max_iter=1, tol=None).fit(X, y)
            cluster.scheduler.popen.send_signal(signal.SIGKILL)
            cluster.scheduler.popen.wait(30)
            with pytest.raises(RuntimeError, match="lost its Dask scheduler"):
                AsyncSGDClassifier(max_iter=1, tol=None, timeout=10).fit(X, y)
