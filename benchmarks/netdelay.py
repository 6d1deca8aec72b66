"""User-space network latency for Dask's TCP comms (no ``netem`` needed).

Every message a process *sends* over a ``distributed`` TCP comm to **another
host** reaches the socket ``delay`` seconds after ``write()`` was called: the
frames are serialised at once, queued per comm in order, and written to the
stream when their deadline has come (a timer thread hands them to the comm's
event loop: asyncio's own timers have a 1 ms granularity).  ``write()``
returns immediately (as a real socket write into the kernel buffer does), so
messages are pipelined: the delay is pure latency, throughput and message
order are unchanged.  Opening a connection to another host additionally waits
``2 * delay`` (the TCP handshake's round trip).

With the same one-way ``delay`` in every process, a request/response between
two hosts gains ``2 * delay`` of round trip (one ``delay`` each way): to add a
round trip of ``rtt_ms``, use ``delay = rtt_ms / 2`` milliseconds everywhere
(``benchmarks/deploy.py`` does).  "Another host" means that the local and the
peer IP of the comm differ, so traffic between a worker and its own nanny, or
between processes that share an IP, is not delayed.

Use it as a preload of scheduler, nannies and workers, with the one-way delay
in milliseconds in ``$ASYNCOPT_NETDELAY_MS``::

    export ASYNCOPT_NETDELAY_MS=0.5
    dask scheduler --preload benchmarks/netdelay.py
    dask worker ADDR --preload benchmarks/netdelay.py --preload-nanny benchmarks/netdelay.py

and in the client's process with :func:`install` / :func:`uninstall`.

It patches ``distributed.comm.tcp.TCP`` (``write``, ``close``, ``abort``),
``TCPConnector.connect`` and, when dask_asyncopt is importable, the ``send`` of
its exchange channel's ``SocketTransport`` (a fit's links write their messages
on the TCP socket Dask opened, with blocking calls from their own threads, not
through ``TCP.write``: they are delayed the same way, by a sender thread per
connection that writes each message at its deadline); ``write`` mirrors
``TCP.write`` of distributed 2026.8 (``to_frames`` then ``_add_frames_header``)
and checks at install time that those helpers exist.  One delay per process:
:func:`install` pushes a delay, :func:`uninstall` pops it and restores the
original methods when none is left.  Only TCP comms are delayed (TLS comms' messages too, not their
connection set-up), not ``inproc://``.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import os
import threading
import time

ENV = "ASYNCOPT_NETDELAY_MS"

_lock = threading.Lock()


def _tcp():
    from distributed.comm import tcp

    for name in ("TCP", "TCPConnector", "to_frames", "_add_frames_header",
                 "ensure_memoryview", "CommClosedError"):
        if not hasattr(tcp, name):  # pragma: no cover - a distributed upgrade
            raise RuntimeError(f"netdelay: distributed.comm.tcp has no {name!r}; "
                               "update benchmarks/netdelay.py for this distributed version")
    return tcp


def current() -> float:
    """The one-way delay (seconds) installed in this process (0.0 if none)."""
    state = _tcp().TCP.__dict__.get("_netdelay_state")
    return state["delays"][-1] if state and state["delays"] else 0.0


def stats() -> dict:
    """How precisely this process's delays were met: see ``_Timer.stats``."""
    return _TIMER.stats()


def install(delay: float) -> None:
    """Delay every message this process sends to another host by ``delay`` seconds.

    Nested calls stack: the last installed delay applies until it is uninstalled.
    """
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    tcp = _tcp()
    TCP = tcp.TCP
    with _lock:
        state = TCP.__dict__.get("_netdelay_state")
        if state is None:
            state = {"delays": [], "orig": {
                "write": TCP.__dict__["write"], "close": TCP.__dict__["close"],
                "abort": TCP.__dict__["abort"],
                "connect": tcp.TCPConnector.connect}}
            transport = _channel_transport()
            if transport is not None:
                state["orig"]["transport_send"] = transport.__dict__["send"]
            TCP._netdelay_state = state
            _patch(tcp, state["orig"])
        state["delays"].append(float(delay))


def set_delay(delay: float) -> None:
    """Change the current one-way delay (installs it if none is installed)."""
    TCP = _tcp().TCP
    with _lock:
        state = TCP.__dict__.get("_netdelay_state")
        if state is not None and state["delays"]:
            if delay < 0:
                raise ValueError(f"delay must be >= 0, got {delay}")
            state["delays"][-1] = float(delay)
            return
    install(delay)


def uninstall() -> None:
    """Undo the last :func:`install`; the original methods come back after the last one."""
    tcp = _tcp()
    TCP = tcp.TCP
    with _lock:
        state = TCP.__dict__.get("_netdelay_state")
        if state is None:
            return
        state["delays"].pop()
        if not state["delays"]:
            # comms still holding queued frames keep them: they are flushed by
            # their timers, which only use the stream
            orig = state["orig"]
            TCP.write, TCP.close, TCP.abort = orig["write"], orig["close"], orig["abort"]
            # BaseTCPConnector.connect is inherited: drop the override
            if "connect" in tcp.TCPConnector.__dict__:
                del tcp.TCPConnector.connect
            if tcp.TCPConnector.connect is not orig["connect"]:  # pragma: no cover
                tcp.TCPConnector.connect = orig["connect"]
            if "transport_send" in orig:
                _channel_transport().send = orig["transport_send"]
            del TCP._netdelay_state


def _host(address: str) -> str:
    hostport = address.split("://", 1)[-1]
    return hostport.rsplit(":", 1)[0].strip("[]")


def _remote(comm) -> bool:
    """Whether ``comm`` goes to another host (its local and peer IPs differ); cached."""
    remote = comm.__dict__.get("_netdelay_remote")
    if remote is None:
        try:
            remote = _host(comm.local_address) != _host(comm.peer_address)
        except Exception:
            remote = True
        comm._netdelay_remote = remote
    return remote


def _patch(tcp, orig):
    TCP = tcp.TCP
    write0, close0, abort0, connect0 = (orig["write"], orig["close"], orig["abort"],
                                        orig["connect"])

    async def write(self, msg, serializers=None, on_error="message"):
        delay = current()
        if delay <= 0 or not _remote(self):
            if self.__dict__.get("_netdelay_queue"):
                _flush(self, everything=True)  # keep the order when the delay drops to 0
            return await write0(self, msg, serializers=serializers, on_error=on_error)
        if self.stream is None:
            raise tcp.CommClosedError()
        frames = await tcp.to_frames(
            msg,
            allow_offload=self.allow_offload,
            serializers=serializers,
            on_error=on_error,
            context={
                "sender": self.local_info,
                "recipient": self.remote_info,
                **self.handshake_options,
            },
            frame_split_size=self.max_shard_size,
        )
        frames, frames_nbytes, total = tcp._add_frames_header(frames)
        frames = [tcp.ensure_memoryview(f) for f, n in zip(frames, frames_nbytes, strict=True)
                  if n]
        queue = self.__dict__.get("_netdelay_queue")
        if queue is None:
            queue = self._netdelay_queue = collections.deque()
        deadline = time.monotonic() + delay
        if queue:
            deadline = max(deadline, queue[-1][0])
        queue.append((deadline, frames))
        if not self.__dict__.get("_netdelay_armed"):
            self._netdelay_armed = True
            _TIMER.call_at(deadline, asyncio.get_running_loop(), _on_timer, self)
        return total

    def close(self):
        # a real close flushes the kernel's buffer: deliver what is queued now
        if self.__dict__.get("_netdelay_queue"):
            _flush(self, everything=True)
        return close0(self)

    def abort(self):
        queue = self.__dict__.get("_netdelay_queue")
        if queue:
            queue.clear()
        return abort0(self)

    async def connect(self, address, deserialize=True, **connection_args):
        comm = await connect0(self, address, deserialize=deserialize, **connection_args)
        delay = current()
        if delay > 0 and _remote(comm):
            await _sleep(2 * delay)  # SYN / SYN-ACK
        return comm

    TCP.write, TCP.close, TCP.abort = write, close, abort
    tcp.TCPConnector.connect = connect
    if "transport_send" in orig:
        _channel_transport().send = _delayed_send(orig["transport_send"])


def _channel_transport():
    """dask_asyncopt's channel transport class, if the package is importable."""
    try:
        from dask_asyncopt.solvers import channel
    except ImportError:
        return None
    return getattr(channel, "SocketTransport", None)


def _delayed_send(send0):
    def send(self, obj):
        sender = self.__dict__.get("_netdelay_sender")
        delay = current()
        if sender is None and (delay <= 0 or not _socket_remote(self.sock)):
            return send0(self, obj)
        if sender is None:
            sender = self._netdelay_sender = _Sender(self)
        # a copy, made now: the caller may reuse its arrays once send() returned
        data = memoryview(b"".join(self.frames(obj)))
        remote = _socket_remote(self.sock)
        sender.put(time.monotonic() + (delay if remote else 0.0), data)

    return send


def _socket_remote(sock) -> bool:
    try:
        return sock.getsockname()[0] != sock.getpeername()[0]
    except OSError:
        return True


class _Sender:
    """Writes one transport's messages in order, each at its deadline, from a thread
    of its own (the caller returns at once, as from a write into a kernel buffer)."""

    def __init__(self, transport):
        self.transport = transport
        self.queue = collections.deque()
        self.cv = threading.Condition()
        threading.Thread(target=self._run, name="netdelay-sender", daemon=True).start()

    def put(self, deadline, data):
        with self.cv:
            if self.queue:
                deadline = max(deadline, self.queue[-1][0])
            self.queue.append((deadline, data))
            self.cv.notify()

    def _run(self):
        while True:
            with self.cv:
                while not self.queue:
                    self.cv.wait()
                deadline, data = self.queue[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self.cv.wait(wait)
                    continue
                self.queue.popleft()
            try:
                self.transport.write([data])
            except OSError:  # the link is gone: like bytes in a reset socket
                return


def _on_timer(comm):
    comm._netdelay_armed = False
    _flush(comm)


def _flush(comm, everything=False):
    """Write the queued frames whose deadline has come (all with ``everything``) and
    arm the timer for the next one (at most one armed timer per comm)."""
    queue = comm.__dict__.get("_netdelay_queue")
    if not queue:
        return
    stream = comm.stream
    if stream is None or stream.closed():
        queue.clear()  # the comm is gone: like bytes in a reset socket
        return
    now = float("inf") if everything else time.monotonic()
    try:
        while queue and queue[0][0] <= now:
            _, frames = queue.popleft()
            for frame in frames:
                stream.write(frame)
    except Exception:  # StreamClosedError, BufferError: the reader sees the closed comm
        queue.clear()
        comm.abort()
        return
    if queue and not comm.__dict__.get("_netdelay_armed"):
        comm._netdelay_armed = True
        _TIMER.call_at(queue[0][0], asyncio.get_running_loop(), _on_timer, comm)


async def _sleep(delay):
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    _TIMER.call_at(time.monotonic() + delay, loop,
                   lambda: future.done() or future.set_result(None))
    await future


class _Timer:
    """Sub-millisecond timers for event loops.

    asyncio's own timers wake up through ``epoll_wait``, whose timeout has a
    granularity of 1 ms (rounded up): a 0.5 ms ``call_later`` fires after 1 ms
    or more.  This thread sleeps on a condition variable (microsecond timeouts)
    and hands each due callback to its loop with ``call_soon_threadsafe``.  The
    hand-off itself is late by the two threads' wake-up latency (0.1 ms to
    several ms on a loaded machine); the thread wakes up ``advance`` seconds
    early, where ``advance`` tracks the *median* lateness of the callbacks (up
    or down by ``STEP`` after each, between 0 and ``MAX_ADVANCE``), so that half
    of them run before their deadline and half after.
    """

    STEP = 10e-6
    MAX_ADVANCE = 1e-3

    def __init__(self):
        self._heap = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread = None
        self.advance = 0.0
        self.fired = 0
        self.recent = collections.deque(maxlen=1000)

    def call_at(self, deadline, loop, callback, *args):
        """Run ``callback(*args)`` in ``loop`` at ``time.monotonic()`` ``deadline``."""
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._seq), loop, callback, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="netdelay-timer",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def _fire(self, deadline, callback, args):
        late = time.monotonic() - deadline
        step = self.STEP if late > 0 else -self.STEP
        self.advance = min(max(self.advance + step, 0.0), self.MAX_ADVANCE)
        self.fired += 1
        self.recent.append(late)
        callback(*args)

    def stats(self) -> dict:
        """Timers fired, the median and 90th percentile of the last 1000's lateness
        (s; negative: early) and the current ``advance``."""
        late = sorted(self.recent) or [0.0]
        return {"fired": self.fired, "late_p50": late[len(late) // 2],
                "late_p90": late[int(0.9 * (len(late) - 1))], "advance": self.advance}

    def _run(self):
        with self._cv:
            while True:
                if not self._heap:
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - self.advance - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                deadline, _, loop, callback, args = heapq.heappop(self._heap)
                try:
                    loop.call_soon_threadsafe(self._fire, deadline, callback, args)
                except RuntimeError:  # the loop was closed meanwhile
                    pass


_TIMER = _Timer()


def dask_setup(server):
    """Preload entry point (scheduler, nanny or worker): install the one-way delay
    given in milliseconds by ``$ASYNCOPT_NETDELAY_MS`` (unset or 0: no delay).

    A plain function, not a click command, so that it combines with any other
    preload (``dask`` accepts one click-configurable preload per process).
    """
    install(float(os.environ.get(ENV) or 0) / 1000.0)


def dask_teardown(server):
    """Preload exit point: nothing to undo (the process ends)."""
