"""Which Dask cluster a fit runs on.

``fit`` uses the active ``distributed`` client when there is one.  Otherwise
it starts an *embedded* ``LocalCluster`` once per process and reuses it, so a
small fit (e.g. inside ``GridSearchCV`` or scikit-learn's estimator checks)
does not pay a cluster start each time.

The embedded cluster runs one single-threaded worker per core, as **threads
of this process** by default (``processes=False``): the kernels release the
GIL, so threads give real parallelism, block calls are plain function calls,
the data is shared rather than serialised to worker processes, and start-up
takes a fraction of a process cluster's (``docs/performance.md`` compares
the deployments).  Set ``dask.config.set({"asyncopt.processes": True})`` for
process workers (isolation, a killed worker does not kill the session).
"""

import atexit
import os
import threading

import dask
from distributed import Client, LocalCluster

_lock = threading.Lock()
_embedded = {}


def _n_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def embedded_client():
    """The process-wide embedded client, started on first use.

    One ``LocalCluster`` with one single-threaded worker per core (the
    ``asyncopt.n-workers`` config overrides the count), threads of this
    process unless ``asyncopt.processes`` is set; it is closed at exit.

    Returns
    -------
    distributed.Client
        A client of the embedded cluster; not made the default client.

    Examples
    --------
    >>> from dask_asyncopt.cluster import embedded_client
    >>> client = embedded_client()
    >>> client is embedded_client()  # started once, then reused
    True
    """
    processes = bool(dask.config.get("asyncopt.processes", False))
    with _lock:
        client = _embedded.get(processes)
        if client is None or client.status not in ("running", "connecting"):
            n = int(dask.config.get("asyncopt.n-workers", None) or _n_cores())
            # ":0": a free port for the dashboard (client.dashboard_link), no warning
            # when another cluster already holds 8787
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                   dashboard_address=":0", silence_logs=40)
            client = Client(cluster, set_as_default=False, direct_to_workers=True)
            _embedded[processes] = client
        return client


def get_client():
    """The client ``fit`` runs on: the active one if there is one, else the embedded one.

    Returns
    -------
    distributed.Client
        ``Client.current()`` when a client is active (e.g. inside
        ``with Client(...):``), otherwise :func:`embedded_client`.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from dask_asyncopt.cluster import get_client
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
    ...     with Client(cluster) as client:
    ...         get_client() is client
    True
    """
    try:
        return Client.current(allow_global=True)
    except ValueError:
        return embedded_client()


@atexit.register
def _shutdown():
    for client in list(_embedded.values()):
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    _embedded.clear()
