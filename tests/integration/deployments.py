"""Helpers of the deployment tests: ``benchmarks/deploy.py`` as a module, and
bounded polls for a clean cluster and for exited processes.

(Imported as ``tests.integration.deployments``: works whether or not
``tests/integration`` has an ``__init__.py``.)
"""

import importlib.util
import sys
import time
from pathlib import Path

from tests.conftest import cluster_is_clean

DEPLOY = Path(__file__).resolve().parents[2] / "benchmarks" / "deploy.py"


def load_deploy():
    """``benchmarks/deploy.py`` as a module (``benchmarks/`` is no package)."""
    mod = sys.modules.get("deploy")
    if mod is None:
        spec = importlib.util.spec_from_file_location("deploy", DEPLOY)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["deploy"] = mod
        spec.loader.exec_module(mod)
    return mod


deploy = load_deploy()


def nothing_left(client, wait=10.0):
    """No tasks on the scheduler; no actors, data keys or fit channels (worker
    plugins and comm handlers) on any worker."""
    if not cluster_is_clean(client, wait=wait):
        return False

    def held(dask_worker):
        return len(dask_worker.data) + sum(
            "asyncopt" in k for k in (*dask_worker.plugins, *dask_worker.handlers))

    deadline = time.monotonic() + wait
    while sum(client.run(held).values()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def gone(pids, wait=30.0):
    """Whether every pid in ``pids`` has exited (zombies count as exited)."""
    deadline = time.monotonic() + wait
    while True:
        alive = [p for p in pids if _running(p)]
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.05)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
