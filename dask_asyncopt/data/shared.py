"""In-memory rows handed to worker processes on the client's own host through its
shared memory (``/dev/shm``) rather than the cluster's comms.

Shipping a loop's rows over a TCP connection to a worker process on the same
machine costs more CPU than the copies themselves: the kernel's TCP path
(segments, wake-ups), Dask's framing and the receiver's buffers.  On a host
whose cores also run the fit, that CPU comes out of the first epoch.  A file
in ``/dev/shm`` costs a copy into it and a copy out.  The scheduling stays
Dask's: the loop's shard is a task pinned to its worker as before; only the
bytes take the short way, and only to a worker that proved it sees this
host's ``/dev/shm`` (:func:`reachable`).  Anything else -- another host, a
container, another user, no ``/dev/shm``, a full one, or
``dask.config.set({"asyncopt.shared-memory": False})`` -- ships over the
comms as before.

Invariant: a part's file exists only between its writing and its reading.
The reader removes it as soon as it has it open; the driver removes it when
it drops the future of the task that reads it (a task that never ran: a fit
that failed or was cancelled first) or exits; files left by a driver that
died in between are removed by a fit on this host an hour later (their names
carry the writer's process id).
"""

import os
import socket
import threading
import time
import uuid

import dask
import numpy as np
import scipy.sparse as sp

DIRECTORY = "/dev/shm"
PREFIX = "asyncopt-part-"

_lock = threading.Lock()
_reachable = {}  # (client id, worker address) -> bool
_swept = False


def enabled():
    """Whether in-memory rows may go through shared memory at all."""
    return bool(dask.config.get("asyncopt.shared-memory", True)) and os.path.isdir(DIRECTORY)


def _local_hosts():
    import psutil

    hosts = {"localhost", socket.gethostname()}
    for addresses in psutil.net_if_addrs().values():
        hosts.update(a.address.split("%")[0] for a in addresses
                     if a.family in (socket.AF_INET, socket.AF_INET6))
    return hosts


def _host(address):
    return address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def _probe(path, token):
    """On a worker: whether it reads the file ``path`` holding ``token``."""
    try:
        with open(path, "rb") as f:
            return f.read() == token
    except OSError:
        return False


def reachable(client, addresses):
    """The workers among ``addresses`` that read this host's shared memory.

    A worker qualifies when its address is one of this host's and it reads
    a file the client just wrote there (so a container or a network
    namespace with a ``/dev/shm`` of its own does not).  Asked once per
    client and worker address."""
    if not enabled():
        return set()
    with _lock:
        unknown = [a for a in addresses if (client.id, a) not in _reachable]
    if unknown:
        local = _local_hosts()
        candidates = [a for a in unknown if _host(a) in local]
        seen = {}
        if candidates:
            token = uuid.uuid4().bytes
            path = _new_path()
            try:
                with open(path, "xb") as f:
                    f.write(token)
                seen = client.run(_probe, path, token, workers=candidates, on_error="return")
            except Exception:  # noqa: BLE001 - a worker not asked is sent its rows by comms
                seen = {}
            finally:
                remove_part(path)
        with _lock:
            for a in unknown:
                _reachable[(client.id, a)] = seen.get(a) is True
    with _lock:
        return {a for a in addresses if _reachable[(client.id, a)]}


def _new_path():
    _sweep_once()
    return os.path.join(DIRECTORY, f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex}")


def remove_part(path):
    """Remove a part's file if it is still there."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


#: a part file older than this whose writer is gone was left behind (a part lives
#: seconds; the age guards against a writer's process id from another PID namespace)
STALE_SECONDS = 3600.0


def _sweep_once():
    """Remove the part files of writers that died before removing them."""
    global _swept
    with _lock:
        if _swept:
            return
        _swept = True
    try:
        names = os.listdir(DIRECTORY)
    except OSError:
        return
    for name in names:
        if not name.startswith(PREFIX):
            continue
        path = os.path.join(DIRECTORY, name)
        try:
            pid = int(name[len(PREFIX):].split("-", 1)[0])
            if time.time() - os.stat(path).st_mtime < STALE_SECONDS:
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            remove_part(path)
        except (ValueError, OSError):  # gone already, or another user's process
            pass


def write_part(X, Y, W):
    """Write a loop's rows (``X`` CSR or dense, ``Y``, the weights ``W`` or
    ``None``) to a new file in shared memory: its path and what
    :func:`read_part` needs to read it back.  An ``OSError`` (a full or
    missing ``/dev/shm``) leaves no file behind."""
    if sp.issparse(X):
        kind, arrays = "csr", [X.indptr, X.indices, X.data]
    else:
        kind, arrays = "dense", [X]
    arrays = [np.ascontiguousarray(a) for a in [*arrays, Y] + ([] if W is None else [W])]
    spec = (kind, X.shape, W is not None, [(a.dtype.str, a.shape) for a in arrays])
    path = _new_path()
    try:
        with open(path, "xb") as f:
            for a in arrays:
                if a.nbytes:
                    f.write(memoryview(a).cast("B"))
    except BaseException:
        remove_part(path)
        raise
    return path, spec


def read_part(path, spec):
    """``(X, Y, W)`` from a file :func:`write_part` wrote (removed once open)."""
    kind, shape, weighted, layout = spec
    with open(path, "rb") as f:
        remove_part(path)
        arrays = []
        for dtype, array_shape in layout:
            a = np.empty(array_shape, np.dtype(dtype))
            if a.nbytes and f.readinto(memoryview(a).cast("B")) != a.nbytes:
                raise OSError(f"{path} was cut short")
            arrays.append(a)
    W = arrays.pop() if weighted else None
    Y = arrays.pop()
    X = sp.csr_matrix(tuple(arrays[::-1]), shape=shape) if kind == "csr" else arrays[0]
    return X, Y, W
