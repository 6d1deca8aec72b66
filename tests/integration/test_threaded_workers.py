"""Worker processes with several threads each (``dask worker --nthreads 2``): a fit
runs one loop per thread by default, loops in one process reach the other process's
store objects on links of their own (``solvers/channel.py``), and every solver and the
factorisation complete there.  Nothing here depends on timing."""

import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream

from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization
from dask_asyncopt.datasets import make_ratings

from ..conftest import cluster_is_clean, logistic_objective

pytestmark = pytest.mark.slow  # a process cluster of its own

ALPHA = 1e-4


@pytest.fixture(scope="module")
def threaded():
    """Two worker processes of two threads each."""
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster, Client(
            cluster, set_as_default=False) as c:
        yield c


def _loops(stream):
    """(loop, worker) of every loop task in a task stream."""
    return {(t["key"].split("-loop-")[1].split("-")[0], t["worker"])
            for t in stream.data if "-loop-" in t["key"]}


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_a_loop_per_thread_reaches_the_optimum(threaded, data, optimum, solver):
    """Two loops in each worker process; barriers and waits in the store (sync rounds,
    the epoch's hand-off) do not block the other loop of the process."""
    X, y = data
    with threaded.as_current(), get_task_stream(threaded) as stream:
        est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=ALPHA, solver=solver,
                                 tol=1e-4, random_state=0, timeout=60).fit(X, y)
    assert sorted(w for _, w in _loops(stream)) == sorted(2 * list(threaded.nthreads()))
    f = logistic_objective(X, y, est.coef_, est.intercept_, ALPHA, 1.0)
    assert (f - optimum("l1", ALPHA)) / optimum("l1", ALPHA) <= 1e-3
    assert cluster_is_clean(threaded)


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_matrix_factorization_checks_out_blocks_across_loops_of_a_process(threaded, solver):
    """Four loops, two per process, take turns on the item blocks (a check-out waits in
    the store for the holder's release, possibly from the other loop of its process), or
    gossip their item replicas (adpsgd)."""
    X, y = make_ratings(400, 300, 12_000, random_state=0)
    with threaded.as_current():
        with get_task_stream(threaded) as stream:
            mf = MatrixFactorization(n_factors=4, max_iter=4, solver=solver, random_state=0,
                                     timeout=60).fit(X, y)
        assert sorted(w for _, w in _loops(stream)) == sorted(2 * list(threaded.nthreads()))
        one = MatrixFactorization(n_factors=4, max_iter=4, solver=solver, random_state=0,
                                  n_workers=1, timeout=60).fit(X, y)
    assert mf.history_.epoch.max() == 4
    rmse = np.sqrt(np.mean((mf.predict(X) - y) ** 2))
    rmse_one = np.sqrt(np.mean((one.predict(X) - y) ** 2))
    assert rmse <= 1.1 * rmse_one  # four loops learn as one does
    assert cluster_is_clean(threaded)


def _links(client):
    """Links the workers' exchange channels hold (open or failed)."""
    def count(dask_worker):
        return sum(len(p.links) for name, p in dask_worker.plugins.items()
                   if name.startswith("asyncopt-exchange"))
    return sum(client.run(count).values())


def test_a_stream_keeps_one_link_per_loop_and_peer(threaded, data):
    """partial_fit's kept blocks keep their channel: each call's loops take their lanes'
    links again instead of opening new ones."""
    X, y = data
    with threaded.as_current():
        clf = AsyncSGDClassifier(loss="log_loss", random_state=0, timeout=60)
        counts = []
        for start in range(0, 4000, 1000):
            clf.partial_fit(X[start:start + 1000], y[start:start + 1000], classes=[0, 1])
            counts.append(_links(threaded))
        assert clf.score(X, y) > 0.7
        del clf
    # 4 loops, each with a link to the other process's blocks
    assert counts[0] == 4 and set(counts) == {4}
    assert cluster_is_clean(threaded)
