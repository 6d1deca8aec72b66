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

A fit called *inside a Dask task* (``joblib.parallel_backend("dask")``
around ``GridSearchCV``/``cross_val_score``, or ``client.submit(est.fit,
...)``) runs on the cluster of that task, through its worker's client, and
the task secedes from the worker's thread pool while the fit waits
(:func:`fit_client`): the fit's block actors, shards and loops are pinned to
the cluster's workers and need the slot the task holds.

A fit in a child process with no client (a ``loky``/``multiprocessing``
joblib worker, e.g. ``GridSearchCV(n_jobs=2)``) cannot see a client of its
parent: it starts its own embedded cluster there and warns
(:class:`PrivateClusterWarning`).
"""

import atexit
import contextlib
import logging
import multiprocessing
import os
import threading
import warnings

import dask
import distributed
from distributed import Client, LocalCluster, worker_client

_lock = threading.Lock()
_embedded = {}


def _n_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Dask settings of the clusters this package starts.  Dask's statistical profiler
#: reads the frames of the threads running tasks from each worker's event loop
#: (``sys._current_frames``) every 10 ms; on CPython 3.11 that access to another
#: running thread's frames is not safe, and a worker process died of a segfault
#: in it (``PyFrame_GetCode`` on its event-loop thread) under the fits' long
#: tasks.  In the embedded thread cluster that worker is the user's process.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


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
            with dask.config.set(WORKER_CONFIG):
                cluster = LocalCluster(n_workers=n, threads_per_worker=1,
                                       processes=processes, dashboard_address=":0",
                                       silence_logs=40)
            client = Client(cluster, set_as_default=False, direct_to_workers=True)
            _embedded[processes] = client
        return client


class PrivateClusterWarning(UserWarning):
    """A fit in a child process found no Dask client: it starts a private cluster.

    Raised (once per process) by :func:`get_client` in e.g. the joblib ``loky``
    workers of ``GridSearchCV(n_jobs=2)``: a client of the parent process is not
    visible there.  Use ``joblib.parallel_backend("dask")`` to run the fits as
    tasks on your cluster, or filter this warning to accept private clusters.

    Examples
    --------
    >>> import warnings
    >>> from dask_asyncopt.cluster import PrivateClusterWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", PrivateClusterWarning)
    """


def _in_task():
    """Whether this thread runs a Dask task (its worker is then known)."""
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def _warn_private_cluster():
    """No client in a child process: the parent's client (if any) is not
    visible here; say so once per process, with the ways to use it."""
    if multiprocessing.parent_process() is None or _embedded:
        return
    warnings.warn(
        "fit() runs in a child process with no Dask client (e.g. a joblib 'loky' worker "
        "of GridSearchCV(n_jobs>1)): it starts a private LocalCluster in this process, "
        "not on a cluster of the parent process.  To run each fit as a task on your "
        "cluster use `with joblib.parallel_backend('dask'):`; or keep n_jobs=None "
        "(each fit is already parallel).", PrivateClusterWarning, stacklevel=2)


def get_client():
    """The client ``fit`` runs on: the task's cluster, the active client, else the
    embedded one.

    Returns
    -------
    distributed.Client
        Inside a Dask task, the client of the worker running it (the fit runs on
        that cluster, see :func:`fit_client`); else ``Client.current()`` when a
        client is active (e.g. inside ``with Client(...):``); otherwise
        :func:`embedded_client` (with a :class:`PrivateClusterWarning` in a
        child process, e.g. a joblib ``loky`` worker).

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from dask_asyncopt.cluster import get_client
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
    ...     with Client(cluster) as client:
    ...         get_client() is client
    True
    """
    if _in_task():
        # This task's cluster: not a default client of this process (with thread
        # workers, possibly another cluster's) nor an embedded cluster started
        # inside a worker (whose scatters would go to the task's worker).
        return distributed.get_client()
    try:
        return Client.current(allow_global=True)
    except ValueError:
        _warn_private_cluster()
        return embedded_client()


@contextlib.contextmanager
def fit_client():
    """The client of one fit, for the duration of the fit.

    Inside a Dask task it is the task's worker client, and the task secedes
    from its worker's thread pool until the fit ends (then rejoins):
    ``distributed.worker_client``.  Without it, a fit in a task (e.g. under
    ``joblib.parallel_backend("dask")``) waits forever for its block actors,
    which are pinned to the cluster's workers and need the slot the task holds.
    Elsewhere it is :func:`get_client`, which must not be an asynchronous client
    driven by this thread's event loop (a ``RuntimeError`` says to run the fit in
    a thread: ``await asyncio.to_thread(est.fit, X, y)``).

    Yields
    ------
    distributed.Client

    Examples
    --------
    >>> from dask_asyncopt.cluster import fit_client, get_client
    >>> with fit_client() as client:  # not in a task: get_client()
    ...     client is get_client()
    True
    """
    if _in_task():
        with worker_client() as client:
            yield client
        return
    client = get_client()
    if client.asynchronous:
        # Its methods return coroutines here, for this thread's event loop, which
        # the blocking fit would hold: the fit failed deep inside with a TypeError
        # ("'coroutine' object is not iterable").
        raise RuntimeError(
            "fit() blocks until the fit ends, but the active Dask client is asynchronous "
            "(Client(asynchronous=True)) and runs on this thread's event loop, which the "
            "fit would block: run the fit in a thread, `est = await "
            "asyncio.to_thread(est.fit, X, y)`, or use a synchronous Client")
    try:
        yield client
    except Exception as exc:
        if client.status in ("running", "newly-created"):
            raise
        # The client lost its scheduler (it tries to reconnect for distributed's
        # connect timeout, then closes): what failed was a call through it, whose
        # error ("ConnectionPool closing") does not say so.
        address = getattr(client.scheduler, "address", None) or "its address"
        raise RuntimeError(
            f"the fit lost its Dask scheduler ({address}; the client is "
            f"{client.status}): start the scheduler again, or connect to another "
            "cluster, and fit again") from exc


class _BelowError(logging.Filter):
    """Drops ``distributed``'s records below ERROR: :func:`_shutdown`'s quiet."""

    def filter(self, record):
        return record.levelno >= logging.ERROR or not record.name.startswith("distributed")


@atexit.register
def _shutdown():
    """Close the embedded clusters at exit, as quietly as they ran (``silence_logs``).

    A closing cluster restores the levels of ``distributed``'s log handlers that it
    raised, and the scheduler's stream to the closed client can fail after that:
    ``distributed.batched`` then printed its INFO "Batched Comm Closed" with a
    ``CommClosedError`` traceback at the user's exit.  A filter, which the restored
    levels do not touch, keeps that chatter out while the clusters close.
    """
    quiet = _BelowError()
    handlers = logging.getLogger("distributed").handlers
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        for client in list(_embedded.values()):
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
        _embedded.clear()
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
