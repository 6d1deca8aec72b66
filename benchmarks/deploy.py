"""Real Dask deployments for benchmarks and tests: CLI processes, optionally one
Linux network namespace ("host") per process with a user-space network delay.

Two context managers, each yielding a :class:`Deployment`:

``cli_cluster(n_workers=2, nthreads=1, nanny=True, preload=None, env=None)``
    ``dask scheduler`` and ``n_workers`` x ``dask worker ADDR --nthreads N`` as
    subprocesses of this process, on 127.0.0.1: the scheduler picks a free
    port (``--port 0``) and writes it to a ``--scheduler-file``; no dashboards.

``netns_cluster(n_workers=2, rtt_ms=0.0, ...)``
    a multi-host deployment on one machine (root and ``ip`` needed): the
    scheduler and every worker run in their own network namespace
    (``ip netns exec``), each with a veth pair to one bridge in the root
    namespace; the bridge holds ``10.213.X.1/24``, the scheduler ``.2``, worker
    ``i`` ``.(10 + i)`` (``X``: the first /24 of 10.213.0.0/16 not in use on this
    machine).  This process (the driver, its clients) stays in the root
    namespace and reaches them over the bridge; the namespaces have no other
    route, so nothing leaves the machine.  ``rtt_ms`` adds that round trip
    between any two hosts (driver included) in user space: ``netdelay.py`` is
    preloaded into scheduler, nannies and workers and installed in this
    process, and delays every message to another host by ``rtt_ms / 2`` (see
    ``netdelay.py``; the kernel here has no ``netem``).

Both start everything, wait (bounded by ``timeout``) until all workers are
registered, and on exit -- also when the body raises -- close their client,
stop every process group they started (SIGTERM, SIGKILL after
``term_timeout``), remove their network devices and namespaces and their
temporary directory (logs included, unless ``log_dir`` is given).  Every
process is started in its own session (the nanny's worker process shares its
group) and, when ``setpriv`` exists, with ``--pdeathsig KILL``, so it is also
killed if this process dies (the parent-death signal fires when the *thread*
that started the cluster ends: enter and leave the context in one thread).

Example::

    from deploy import cli_cluster, netns_cluster   # benchmarks/ on sys.path

    with netns_cluster(n_workers=2, rtt_ms=1.0) as cluster:
        with cluster.client.as_current():
            AsyncSGDClassifier().fit(X, y)
        cluster.kill_worker(next(iter(cluster.worker_pids())))   # worker + nanny

Network names carry a per-run id: namespaces ``dxa-<id>-s`` / ``dxa-<id>-w<i>``,
bridge ``dxa<id>br``, host-side veths ``dxa<id>s`` / ``dxa<id>w<i>``; a state
file ``/run/dask_asyncopt_netns/<id>.json`` names the owning process (and its
temp dir).  Before creating a run, resources of runs whose owner is gone (a
crashed run) are removed: :func:`cleanup_stale` (only names with this prefix).

``python benchmarks/deploy.py --check`` starts each deployment (cli, netns at
0, 1 and 5 ms) and prints the measured round trips (:func:`measure_rtts`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NETDELAY = HERE / "netdelay.py"
PREFIX = "dxa"
STATE_DIR = Path("/run/dask_asyncopt_netns")
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
SCHEDULER_PORT = 8786
TMP_PREFIX = "dask-asyncopt-deploy-"


class DeploymentError(RuntimeError):
    """A deployment could not start (the message has the processes' last log lines)."""


def netdelay():
    """The ``netdelay`` module next to this file (imported once, by path)."""
    mod = sys.modules.get("netdelay")
    if mod is None or Path(getattr(mod, "__file__", "")).resolve() != NETDELAY:
        spec = importlib.util.spec_from_file_location("netdelay", NETDELAY)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["netdelay"] = mod
        spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- processes


@dataclasses.dataclass
class Proc:
    """One started command: its ``Popen`` (the process is its group's leader),
    log file, and for netns deployments its namespace and IP."""

    name: str
    popen: subprocess.Popen
    log: Path
    namespace: str | None = None
    ip: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n=20) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  [{self.name}] {line}" for line in lines[-n:])


def _dask_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "dask", *args]


def _spawn(name, argv, logdir, env, namespace=None, ip=None, kill_with_parent=True) -> Proc:
    cmd = list(argv)
    if namespace is not None:
        cmd = ["ip", "netns", "exec", namespace, *cmd]
    if kill_with_parent and shutil.which("setpriv"):
        cmd = ["setpriv", "--pdeathsig", "KILL", *cmd]
    log = Path(logdir) / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Proc(name, popen, log, namespace, ip)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate(procs, timeout=10.0) -> None:
    """Stop ``procs``' process groups: SIGTERM, then SIGKILL to whatever is left after
    ``timeout`` seconds (also group members whose leader has exited); reap the leaders."""
    procs = list(procs)
    for p in procs:
        if p.alive():
            _signal_group(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:
        while p.alive() or _group_members(p.pid):
            _signal_group(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(0.05)
            if time.monotonic() > deadline + 10:  # pragma: no cover - unkillable (D state)
                raise DeploymentError(f"could not kill process group {p.pid} ({p.name})")


# ---------------------------------------------------------------- the handle


class Deployment:
    """A running deployment (what :func:`cli_cluster` and :func:`netns_cluster` yield).

    Attributes
    ----------
    address : str
        The scheduler's address (``tcp://host:port``).
    scheduler : Proc
    workers : list of Proc
        One per ``dask worker`` command: the nanny process with ``nanny=True``
        (its worker process is its child, in its process group), else the worker.
    nanny : bool
    rtt_ms : float
        The round trip added between hosts (0 for :func:`cli_cluster`).
    namespaces, ips : dict
        ``{process name: namespace}`` and ``{process name: IP}`` (netns
        deployments; empty otherwise); also ``run_id``, ``bridge``, ``subnet``.
    tmpdir : Path
        Logs (``<name>.log``), scheduler file, workers' local directories.
    """

    def __init__(self, tmpdir, nanny, rtt_ms=0.0, timeout=60.0):
        self.tmpdir = Path(tmpdir)
        self.nanny = nanny
        self.rtt_ms = rtt_ms
        self.timeout = timeout
        self.address = None
        self.scheduler = None
        self.workers = []
        self.namespaces = {}
        self.ips = {}
        self.run_id = self.bridge = self.subnet = None
        self._client = None
        self._delay_client = False

    @property
    def processes(self) -> list[Proc]:
        return [*self.workers, *([self.scheduler] if self.scheduler else [])]

    @property
    def client(self):
        """This deployment's own ``distributed.Client`` (not the default client; use
        ``with deployment.client.as_current():``); closed on exit."""
        if self._client is None:
            from distributed import Client

            self._client = Client(self.address, set_as_default=False, direct_to_workers=True,
                                  timeout=f"{self.timeout}s")
        return self._client

    def check_alive(self) -> None:
        """Raise :class:`DeploymentError` (with the log tail) if a started process exited."""
        dead = [p for p in self.processes if not p.alive()]
        if dead:
            raise DeploymentError("exited: " + ", ".join(
                f"{p.name} (code {p.popen.returncode})" for p in dead) + "\n"
                + "\n".join(p.tail() for p in dead))

    def logs(self) -> str:
        """The last lines of every process's log."""
        return "\n".join(p.tail() for p in self.processes)

    def names(self) -> dict:
        """``{worker address: worker name}`` (names are ``w0``, ``w1``, ...)."""
        return self.client.run_on_scheduler(
            lambda dask_scheduler: {a: ws.name for a, ws in dask_scheduler.workers.items()})

    def nanny_addresses(self) -> dict:
        """``{worker address: its nanny's address}`` (empty without nannies)."""
        return {a: n for a, n in self.client.run_on_scheduler(
            lambda dask_scheduler: {a: ws.nanny for a, ws in dask_scheduler.workers.items()}
        ).items() if n}

    def worker_pids(self) -> dict:
        """``{worker address: pid of the worker process}``."""
        return self.client.run(os.getpid)

    def nanny_pids(self) -> dict:
        """``{worker address: pid of its nanny}`` (empty without nannies)."""
        if not self.nanny:
            return {}
        by_name = {p.name: p.pid for p in self.workers}
        return {a: by_name[n] for a, n in self.names().items() if n in by_name}

    def kill_worker(self, address, sig=signal.SIGKILL) -> list[int]:
        """Send ``sig`` to the worker at ``address`` and its nanny at once (their whole
        process group: the nanny cannot restart it); return the pids signalled."""
        name = self.names()[address]
        proc = next(p for p in self.workers if p.name == name)
        pids = _group_members(proc.pid)
        _signal_group(proc.pid, sig)
        return pids

    def set_rtt(self, rtt_ms) -> None:
        """Change the added round trip of a running netns deployment: the one-way delay
        becomes ``rtt_ms / 2`` in the scheduler, nannies, workers and this process
        (the in-process delay only if this deployment installed one).  Processes
        started later (a nanny restarting a worker) get the original ``rtt_ms``."""
        if not self.namespaces:
            raise DeploymentError("set_rtt needs a netns deployment")
        delay = rtt_ms / 2000.0

        def set_delay():
            import sys

            sys.modules["netdelay"].set_delay(delay)

        self.client.run_on_scheduler(set_delay)
        self.client.run(set_delay)
        if self.nanny:
            self.client.run(set_delay, nanny=True)
        if self._delay_client:
            netdelay().set_delay(delay)
        self.rtt_ms = rtt_ms

    def delay_stats(self) -> dict:
        """``netdelay.stats()`` of every process (``{"client": ..., "scheduler": ...,
        worker address: ..., "nanny " + worker address: ...}``): how late the delayed
        messages were handed to their sockets."""

        def stats():
            import sys

            mod = sys.modules.get("netdelay")
            return mod.stats() if mod is not None else None

        out = {"client": netdelay().stats(), "scheduler": self.client.run_on_scheduler(stats),
               **self.client.run(stats)}
        if self.nanny:
            out.update({f"nanny {a}": s for a, s in self.client.run(stats, nanny=True).items()})
        return out

    def wait_for_workers(self, n, timeout=None) -> None:
        """Wait until ``n`` workers are registered (exactly ``n``: also after a kill);
        raise :class:`DeploymentError` after ``timeout`` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            count = self.client.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.workers))
            if count == n:
                return
            if time.monotonic() > deadline:
                raise DeploymentError(f"{count} workers registered, expected {n}\n"
                                      + self.logs())
            time.sleep(0.1)

    def _await_scheduler(self, scheduler_file: Path) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError):
                self.address = json.loads(scheduler_file.read_text())["address"]
                return
            if time.monotonic() > deadline:
                raise DeploymentError("the scheduler wrote no scheduler file\n" + self.logs())
            time.sleep(0.05)

    def _await_workers(self, n) -> None:
        deadline = time.monotonic() + self.timeout
        self.client  # noqa: B018 - connect (bounded by timeout)
        while True:
            self.check_alive()
            count = self.client.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.workers))
            if count >= n:
                return
            if time.monotonic() > deadline:
                raise DeploymentError(f"{count} of {n} workers registered after "
                                      f"{self.timeout} s\n" + self.logs())
            time.sleep(0.1)

    def _close(self, term_timeout) -> None:
        try:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close(timeout=5)
                self._client = None
        finally:
            # workers first (no reconnection attempts), then the scheduler
            try:
                terminate(self.workers, term_timeout)
            finally:
                terminate([self.scheduler] if self.scheduler else [], term_timeout)


def _env(env, **extra) -> dict:
    out = dict(os.environ)
    out.update(env or {})
    out.update(extra)
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out


def _preload_args(preload, flag="--preload") -> list[str]:
    if preload is None:
        return []
    if isinstance(preload, str | os.PathLike):
        preload = [preload]
    return [a for p in preload for a in (flag, str(p))]


@contextlib.contextmanager
def _tempdir(log_dir):
    if log_dir is not None:
        path = Path(log_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        path = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- cli_cluster


@contextlib.contextmanager
def cli_cluster(n_workers=2, nthreads=1, nanny=True, preload=None, env=None, *,
                host="127.0.0.1", scheduler_args=(), worker_args=(), timeout=60.0,
                term_timeout=10.0, log_dir=None, kill_with_parent=True):
    """Start ``dask scheduler`` and ``n_workers`` x ``dask worker`` as CLI subprocesses.

    Parameters
    ----------
    n_workers, nthreads : int
        Worker commands and ``--nthreads`` of each.
    nanny : bool
        ``--nanny`` (default) or ``--no-nanny``.
    preload : str or list of str, optional
        ``--preload`` modules (names or ``.py`` paths) of scheduler and workers.
    env : dict, optional
        Added to this process's environment for the subprocesses.
    host : str
        The address everything listens on.
    scheduler_args, worker_args : sequence of str
        More CLI arguments.
    timeout : float
        Seconds to wait for the scheduler, the workers, and the client's connection.
    term_timeout : float
        Seconds between SIGTERM and SIGKILL on exit.
    log_dir : path, optional
        Keep logs (and the scheduler file) there instead of a removed temp dir.
    kill_with_parent : bool
        Start the commands under ``setpriv --pdeathsig KILL`` (if it exists).

    Yields
    ------
    Deployment
    """
    with _tempdir(log_dir) as tmp:
        dep = Deployment(tmp, nanny, timeout=timeout)
        try:
            env_ = _env(env)
            sched_file = tmp / "scheduler.json"
            dep.scheduler = _spawn("scheduler", _dask_cmd(
                "scheduler", "--host", host, "--port", "0", "--no-dashboard",
                "--scheduler-file", str(sched_file), *_preload_args(preload),
                *scheduler_args), tmp, env_, kill_with_parent=kill_with_parent)
            dep._await_scheduler(sched_file)
            for i in range(n_workers):
                dep.workers.append(_spawn(f"w{i}", _dask_cmd(
                    "worker", dep.address, "--host", host, "--nthreads", str(nthreads),
                    "--nanny" if nanny else "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                    "--local-directory", str(tmp / f"w{i}"), *_preload_args(preload),
                    *worker_args), tmp, env_, kill_with_parent=kill_with_parent))
            dep._await_workers(n_workers)
            yield dep
        finally:
            dep._close(term_timeout)


# ---------------------------------------------------------------- netns_cluster


def netns_unavailable() -> str | None:
    """Why :func:`netns_cluster` cannot run here (``None`` if it can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _ip(*args, check=True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise DeploymentError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _start_time(pid) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(state: dict) -> bool:
    return _start_time(state.get("pid")) == state.get("start")


def _run_ids_in_use():
    """``{run id: state or None}`` for every namespace, link and state file with our prefix."""
    ids = {}
    ns_re = re.compile(rf"^{PREFIX}-([0-9a-f]{{4}})-")
    link_re = re.compile(rf"^{PREFIX}([0-9a-f]{{4}})(br|s|w\d+)$")
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        m = ns_re.match(line.split()[0]) if line.strip() else None
        if m:
            ids.setdefault(m.group(1), None)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            m = link_re.match(parts[1].strip().split("@")[0])
            if m:
                ids.setdefault(m.group(1), None)
    if STATE_DIR.is_dir():
        for f in STATE_DIR.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                ids[f.stem] = json.loads(f.read_text())
    return ids


def _remove_run(rid) -> None:
    """Kill the processes in run ``rid``'s namespaces, delete its links, namespaces and
    state file (whatever of it exists)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if ns.startswith(f"{PREFIX}-{rid}-"):
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(f"{PREFIX}{rid}") and not name.endswith("br"):
                _ip("link", "del", name, check=False)
    _ip("link", "del", f"{PREFIX}{rid}br", check=False)
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if ns.startswith(f"{PREFIX}-{rid}-"):
            _ip("netns", "del", ns, check=False)
    state_file = STATE_DIR / f"{rid}.json"
    with contextlib.suppress(OSError, ValueError):
        tmp = Path(json.loads(state_file.read_text()).get("tmpdir") or "")
        if tmp.name.startswith(TMP_PREFIX):  # a temp dir of ours (not a user's log_dir)
            shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        state_file.unlink()


@contextlib.contextmanager
def _state_lock():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cleanup_stale() -> list[str]:
    """Remove the namespaces, links and state files of runs whose owning process is
    gone (names with this module's prefix only); return their run ids."""
    if netns_unavailable():
        return []
    removed = []
    with _state_lock():
        for rid, state in _run_ids_in_use().items():
            if state is None or not _owner_alive(state):
                _remove_run(rid)
                removed.append(rid)
    return removed


def _free_subnet(ids) -> ipaddress.IPv4Network:
    used = set()
    for line in _ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            used.add(ipaddress.ip_interface(m.group(1)).network)
    for line in _ip("-4", "route", "show", check=False).stdout.splitlines():
        with contextlib.suppress(ValueError):
            used.add(ipaddress.ip_network(line.split()[0], strict=False))
    for state in ids.values():
        if state and state.get("subnet"):
            used.add(ipaddress.ip_network(state["subnet"]))
    for net in SUPERNET.subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise DeploymentError(f"no free /24 in {SUPERNET}")


def _setup_network(n_workers, tmpdir=None):
    """Create the bridge, namespaces and veths of a new run (under the state lock);
    return ``(run id, bridge, subnet, {name: (namespace, ip)})``."""
    with _state_lock():
        for rid, state in _run_ids_in_use().items():  # a crashed run's leftovers
            if state is None or not _owner_alive(state):
                _remove_run(rid)
        ids = _run_ids_in_use()
        rid = secrets.token_hex(2)
        while rid in ids:
            rid = secrets.token_hex(2)
        subnet = _free_subnet(ids)
        hosts = list(subnet.hosts())
        (STATE_DIR / f"{rid}.json").write_text(json.dumps(
            {"pid": os.getpid(), "start": _start_time(os.getpid()), "subnet": str(subnet),
             "tmpdir": str(tmpdir) if tmpdir else None}))
        bridge = f"{PREFIX}{rid}br"
        nodes = {"scheduler": (f"{PREFIX}-{rid}-s", str(hosts[1]), f"{PREFIX}{rid}s")}
        for i in range(n_workers):
            nodes[f"w{i}"] = (f"{PREFIX}-{rid}-w{i}", str(hosts[9 + i]), f"{PREFIX}{rid}w{i}")
        try:
            _ip("link", "add", bridge, "type", "bridge")
            _ip("addr", "add", f"{hosts[0]}/{subnet.prefixlen}", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for ns, ip, veth in nodes.values():
                _ip("netns", "add", ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", bridge, "up")
                _ip("-n", ns, "addr", "add", f"{ip}/{subnet.prefixlen}", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            _remove_run(rid)
            raise
    return rid, bridge, subnet, {k: (ns, ip) for k, (ns, ip, _) in nodes.items()}


@contextlib.contextmanager
def netns_cluster(n_workers=2, rtt_ms=0.0, nthreads=1, nanny=True, preload=None, env=None, *,
                  scheduler_args=(), worker_args=(), delay_client=True, timeout=60.0,
                  term_timeout=10.0, log_dir=None, kill_with_parent=True):
    """Scheduler and workers each in their own network namespace, ``rtt_ms`` apart.

    Parameters
    ----------
    n_workers, nthreads, nanny, preload, env, scheduler_args, worker_args, timeout,
    term_timeout, log_dir, kill_with_parent
        As in :func:`cli_cluster`.
    rtt_ms : float
        Round trip (ms) added between any two hosts: every process -- scheduler,
        nannies, workers and, with ``delay_client``, this one -- delays what it sends
        to another IP by ``rtt_ms / 2`` (``netdelay.py``, preloaded everywhere).
        Measured round trips are the ``rtt_ms=0`` ones plus ``rtt_ms`` and a little
        more: the delayed messages reach their sockets on time (median), but each
        one-way hop also pays the receiver's wake-up from idle (measured on a shared
        2-core VM: 0.1-0.6 ms more per round trip at ``rtt_ms=1``, 0.4-1.3 ms at 5;
        ``python benchmarks/deploy.py --check``).
        :meth:`Deployment.set_rtt` changes it while running.
    delay_client : bool
        Install the delay in this process for the duration (its clients are on
        another host than the scheduler and workers).

    Yields
    ------
    Deployment
        With ``namespaces`` (``{"scheduler": ns, "w0": ns, ...}``), ``ips``,
        ``bridge``, ``subnet`` and ``run_id``.
    """
    reason = netns_unavailable()
    if reason:
        raise DeploymentError(reason)
    if not 0 <= n_workers <= 240:
        raise ValueError(f"n_workers must be in [0, 240] (one /24), got {n_workers}")
    if rtt_ms < 0:
        raise ValueError(f"rtt_ms must be >= 0, got {rtt_ms}")
    one_way_ms = rtt_ms / 2.0
    nd = netdelay()
    with _tempdir(log_dir) as tmp:
        os.chmod(tmp, 0o755)
        dep = Deployment(tmp, nanny, rtt_ms=rtt_ms, timeout=timeout)
        rid = None
        installed = False
        try:
            rid, bridge, subnet, nodes = _setup_network(n_workers,
                                                        None if log_dir else tmp)
            dep.run_id, dep.bridge, dep.subnet = rid, bridge, subnet
            dep.namespaces = {k: ns for k, (ns, _) in nodes.items()}
            dep.ips = {k: ip for k, (_, ip) in nodes.items()}
            env_ = _env(env, **{nd.ENV: repr(one_way_ms)})
            delay = ["--preload", str(NETDELAY)]
            ns, ip = nodes["scheduler"]
            sched_file = tmp / "scheduler.json"
            dep.scheduler = _spawn("scheduler", _dask_cmd(
                "scheduler", "--host", ip, "--port", str(SCHEDULER_PORT), "--no-dashboard",
                "--scheduler-file", str(sched_file), *delay, *_preload_args(preload),
                *scheduler_args), tmp, env_, ns, ip, kill_with_parent)
            dep._await_scheduler(sched_file)
            for i in range(n_workers):
                ns, ip = nodes[f"w{i}"]
                nanny_delay = ["--preload-nanny", str(NETDELAY)] if nanny else []
                dep.workers.append(_spawn(f"w{i}", _dask_cmd(
                    "worker", dep.address, "--host", ip, "--nthreads", str(nthreads),
                    "--nanny" if nanny else "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                    "--local-directory", str(tmp / f"w{i}"), *delay, *nanny_delay,
                    *_preload_args(preload), *worker_args), tmp, env_, ns, ip,
                    kill_with_parent))
            if delay_client:
                nd.install(one_way_ms / 1000.0)
                installed = dep._delay_client = True
            dep._await_workers(n_workers)
            _check_delays(dep, one_way_ms / 1000.0)
            yield dep
        finally:
            try:
                dep._close(term_timeout)
            finally:
                if installed:
                    nd.uninstall()
                if rid is not None:
                    with _state_lock():
                        _remove_run(rid)


def _check_delays(dep, expected) -> None:
    """Every process has the delay installed (a failing preload is only logged)."""

    def probe():
        from distributed.comm import tcp

        state = tcp.TCP.__dict__.get("_netdelay_state")
        return state["delays"][-1] if state and state["delays"] else None

    got = {"scheduler": dep.client.run_on_scheduler(probe), **dep.client.run(probe)}
    if dep.nanny:
        got.update({f"nanny {a}": d for a, d in dep.client.run(probe, nanny=True).items()})
    wrong = {k: v for k, v in got.items() if v is None or abs(v - expected) > 1e-12}
    if wrong:
        raise DeploymentError(f"netdelay not installed as {expected} s in {wrong}\n"
                              + dep.logs())


# ---------------------------------------------------------------- measurements


def measure_rtts(client, n=50) -> dict:
    """Median round trips (ms) over ``n`` calls each, after one warm-up call:

    - ``scheduler``: ``client.run_on_scheduler(lambda: 0)`` (client -> scheduler -> client)
    - ``worker_run``: ``client.run(lambda: 0, workers=[w])``: client -> scheduler ->
      worker and back, two round trips
    - ``task``: ``client.submit(...).result()`` of a no-op task on a worker (also two
      round trips, plus the scheduler's bookkeeping and mostly the batching of
      distributed's streams: client -> scheduler every 10 ms, scheduler -> worker
      5 ms, worker -> scheduler 2 ms; ~20 ms even on one host)
    - ``client_actor``: an actor method called from this client (direct to the worker)
    - ``worker_actor``: an actor method on the second worker called from a task on
      the first (one worker-to-worker round trip)
    - ``worker_channel``: the same call through a fit's exchange channel
      (``dask_asyncopt.solvers.channel``, what worker loops use between workers)
    """
    import uuid

    class Echo:
        def ping(self):
            return 0

    def time_calls(actor, n):
        import statistics
        import time

        actor.ping().result()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            actor.ping().result()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    def noop():
        return 0

    def median_ms(call):
        call()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            call()
            ts.append(time.perf_counter() - t)
        return 1e3 * statistics.median(ts)

    workers = sorted(client.run(os.getpid))
    a, b = workers[0], workers[-1]
    out = {
        "scheduler": median_ms(lambda: client.run_on_scheduler(noop)),
        "worker_run": median_ms(lambda: client.run(noop, workers=[a])),
        "task": median_ms(lambda: client.submit(
            noop, key=f"rtt-{uuid.uuid4().hex}", workers=[a]).result()),
    }
    with client.as_current():  # an actor proxy finds its client through it
        actor_future = client.submit(Echo, actor=True, workers=[b],
                                     key=f"rtt-echo-{uuid.uuid4().hex}")
        actor = actor_future.result()
        out["client_actor"] = median_ms(lambda: actor.ping().result())
        if a != b:
            probe = client.submit(time_calls, actor_future, n, workers=[a],
                                  key=f"rtt-w2w-{uuid.uuid4().hex}")
            out["worker_actor"] = 1e3 * probe.result()
            out["worker_channel"] = _channel_rtt(client, a, b, n)
    return out


def _channel_rtt(client, a, b, n):
    """Median round trip (ms) of a call from worker ``a`` to an object on worker ``b``
    through a fit's exchange channel, registered for the measurement only."""
    import uuid
    from types import SimpleNamespace

    from dask_asyncopt.solvers.channel import Exchange, plugin_name
    from dask_asyncopt.solvers.handles import StoreRef, bind

    class Echo:
        def ping(self):
            return 0

    token = f"rtt{uuid.uuid4().hex[:8]}"
    key = f"rtt-channel-{token}"

    def install(dask_worker):
        dask_worker.state.actors[key] = Echo()

    def uninstall(dask_worker):
        dask_worker.state.actors.pop(key, None)

    def probe():
        (h,) = bind([StoreRef(key, b, Echo)],
                    config=SimpleNamespace(channel=token, timeout=30))
        h.call("ping").result(30)
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            h.call("ping").result(30)
            ts.append(time.perf_counter() - t)
        return 1e3 * statistics.median(ts)

    client.register_plugin(Exchange(token), name=plugin_name(token))
    client.run(install, workers=[b])
    try:
        return client.submit(probe, workers=[a], key=f"rtt-{token}", pure=False).result()
    finally:
        client.run(uninstall, workers=[b])
        client.unregister_worker_plugin(plugin_name(token))


COLUMNS = [("scheduler", "scheduler"), ("worker_run", "client.run (2 hops)"),
           ("task", "task (2 hops)"), ("client_actor", "client->actor"),
           ("worker_actor", "worker->worker actor"),
           ("worker_channel", "worker->worker channel")]
HOPS = {"worker_run": 2, "task": 2}  # host-to-host round trips per call


def _table(rows) -> str:
    lines = ["| deployment | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for label, rtts in rows:
        lines.append(f"| {label} | " + " | ".join(
            f"{rtts[k]:.2f}" if k in rtts else "-" for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _added(rows, base) -> str:
    """Rows minus ``base``, with the expected addition (rtt_ms x hops) in brackets."""
    lines = ["| rtt_ms | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for rtt, rtts in rows:
        lines.append(f"| {rtt:g} | " + " | ".join(
            f"{rtts[k] - base[k]:+.2f} [{rtt * HOPS.get(k, 1):g}]" if k in rtts else "-"
            for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _lateness(dep) -> str:
    """Median lateness (ms; negative: early) of the delayed messages' hand-off to
    their sockets, per process."""
    names = dep.names()
    nannies = {v: k for k, v in dep.nanny_addresses().items()}
    parts = []
    for who, st in dep.delay_stats().items():
        if not (st and st["fired"]):
            continue
        if who.startswith("nanny "):
            addr = who.removeprefix("nanny ")
            label = f"nanny {names.get(nannies.get(addr), names.get(addr, addr))}"
        else:
            label = str(names.get(who, who))
        parts.append(f"{label} {1e3 * st['late_p50']:+.3f}")
    return ", ".join(parts)


def _check(args) -> int:
    rows, netns_rows = [], []

    def run(label, factory):
        t = time.perf_counter()
        with factory() as dep:
            started = time.perf_counter() - t
            rtts = measure_rtts(dep.client, n=args.n)
            late = _lateness(dep) if dep.namespaces and dep.rtt_ms else ""
            t2 = time.perf_counter()
        print(f"{label}: {dep.address}, started in {started:.1f} s, torn down in "
              f"{time.perf_counter() - t2:.1f} s" + (
                  f"; hand-off lateness p50 (ms): {late}" if late else ""), flush=True)
        rows.append((label, rtts))
        return rtts

    run("cli (127.0.0.1)", lambda: cli_cluster(n_workers=2))
    reason = netns_unavailable()
    if reason:
        print(f"netns deployments skipped: {reason}")
    else:
        stale = cleanup_stale()
        if stale:
            print(f"removed stale runs {stale}")
        for rtt in args.rtt:
            netns_rows.append((rtt, run(f"netns rtt_ms={rtt:g}",
                                        lambda rtt=rtt: netns_cluster(n_workers=2, rtt_ms=rtt))))
    print(f"\nmedian of {args.n} calls each, ms\n\n{_table(rows)}")
    base = dict(netns_rows).get(0.0)
    if base is not None:
        print("\nadded over netns rtt_ms=0 (expected rtt_ms x hops in brackets)\n\n"
              + _added([r for r in netns_rows if r[0]], base))
    if args.rounds and not reason:
        # one deployment, the delays switched round-robin: machine load drifts less
        # between the compared measurements than across separate deployments
        per = {rtt: [] for rtt in args.rtt}
        with netns_cluster(n_workers=2, rtt_ms=args.rtt[0]) as dep:
            for _ in range(args.rounds):
                for rtt in args.rtt:
                    dep.set_rtt(rtt)
                    per[rtt].append(measure_rtts(dep.client, n=args.n))
        med = {rtt: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for rtt, rs in per.items()}
        print(f"\none netns deployment, delays switched round-robin, {args.rounds} rounds "
              f"(median of the rounds' medians), ms\n\n"
              + _table([(f"rtt_ms={rtt:g}", m) for rtt, m in med.items()]))
        if 0.0 in med:
            print("\nadded over rtt_ms=0\n\n" + _added(
                [(rtt, m) for rtt, m in med.items() if rtt], med[0.0]))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="start each deployment, print measured round trips, tear down")
    parser.add_argument("--rtt", type=float, nargs="*", default=[0.0, 1.0, 5.0],
                        help="netns round trips to check (ms)")
    parser.add_argument("-n", type=int, default=50, help="calls per median")
    parser.add_argument("--rounds", type=int, default=0,
                        help="also measure all --rtt on one netns deployment, switching the "
                        "delay round-robin this many rounds")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove stale namespaces/links of crashed runs and exit")
    args = parser.parse_args(argv)
    if args.cleanup:
        print("removed:", cleanup_stale())
        return 0
    if args.check:
        return _check(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
