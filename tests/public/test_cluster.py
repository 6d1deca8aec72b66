"""The embedded default cluster: started once per process, reused by every fit.

Runs in a fresh interpreter, where no Dask client exists, exactly as a user
script that never creates one.
"""

import asyncio
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from distributed import Client, LocalCluster

from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization

SCRIPT = textwrap.dedent("""
    import pickle
    import numpy as np
    from sklearn.base import clone
    from dask_asyncopt import AsyncSGDClassifier, cluster

    if __name__ == "__main__":
        rng = np.random.default_rng(0)
        X = rng.normal(size=(300, 4))
        y = (X[:, 0] > 0).astype(int)
        est = AsyncSGDClassifier(max_iter=3, tol=None)
        est.fit(X, y)
        first = cluster.get_client()
        assert len(first.scheduler_info()["workers"]) == cluster._n_cores()
        est.fit(X, y)
        assert cluster.get_client() is first, "the embedded cluster was started twice"
        assert len(cluster._embedded) == 1
        # its workers run without Dask's profiler (cluster.WORKER_CONFIG)
        assert not any(first.run(lambda dask_worker: "profile" in
                                 dask_worker.periodic_callbacks).values())
        assert est.score(X, y) > 0.8
        # no client is an estimator parameter: clone and pickle just work
        assert pickle.loads(pickle.dumps(est)).score(X, y) == est.score(X, y)
        assert clone(est).get_params() == est.get_params()
        print("OK")
""")


def test_embedded_cluster_started_once_and_reused(tmp_path):
    path = tmp_path / "no_client.py"
    path.write_text(SCRIPT)
    # without the test session's Dask settings (tests/conftest.py): the package's own
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
    # closed at exit as quietly as it ran (cluster._shutdown): no closing comm's
    # traceback from distributed's loggers
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


def test_an_asynchronous_client_gets_a_clear_error_and_a_thread_fits():
    """``Client(asynchronous=True)``: a fit on its event loop's thread is told to
    run in a thread (it failed with "'coroutine' object is not iterable"), and
    ``asyncio.to_thread`` fits on that cluster."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int)

    async def main():
        async with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                asynchronous=True, dashboard_address=None) as cluster, \
                Client(cluster, asynchronous=True) as client:
            with client.as_current():
                for est, args in ((AsyncSGDClassifier(max_iter=2), (X, y)),
                                  (MatrixFactorization(max_iter=1), (X[:, :2] > 0, y))):
                    with pytest.raises(RuntimeError, match=r"asyncio.to_thread\(est.fit"):
                        est.fit(*args)
                est = await asyncio.to_thread(AsyncSGDClassifier(max_iter=3).fit, X, y)
            assert est.score(X, y) > 0.8
            left = None
            for _ in range(100):
                left = await client.run_on_scheduler(lambda dask_scheduler: [
                    (str(k), ts.state) for k, ts in dask_scheduler.tasks.items()])
                if not left:
                    break
                await asyncio.sleep(0.1)
            assert not left

    asyncio.run(main())
