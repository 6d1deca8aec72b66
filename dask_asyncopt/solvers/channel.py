"""A fit's worker-to-worker exchange channel, on Dask's own comm layer.

A worker loop calls blocks on other workers many times per epoch.  Through a
Dask actor every call is a full RPC (a hop to the event loop, a pooled
connection, the actor machinery, a hop back), and a loop waits for every
reply.  Even a bare ``comm.write``/``comm.read`` pair costs each worker's
event loop about a millisecond of CPU per round trip (framing, msgpack,
tornado, thread wake-ups) -- on process workers that CPU is taken from the
sweeps.  This channel keeps Dask as the engine for what it is for -- finding
and connecting workers (``connect``, its connection arguments and comm
backends), worker handlers, serialisation (``distributed.protocol.pickle``) --
and keeps the event loops out of the hot path:

* :class:`Exchange` is a ``WorkerPlugin`` registered for one fit on every
  worker (:func:`channel`) and removed when the fit ends; its ``setup`` adds
  one comm handler to the worker, its ``teardown`` removes it and closes
  every connection it opened or accepted: nothing of the fit outlives it.
  The driver's calls between epochs take links of their own
  (:class:`Driver`, on the client's event loop), closed when the fit ends.
* A loop reaches the store objects of one other worker through one
  :class:`Link` of its own (loops sharing a worker process do not share
  links: see :meth:`_Caller.link`): a single connection, opened by Dask on
  first use, carrying requests ``(id, actor key, method, args, kwargs)`` in
  the order the loop issues them.  The caller's thread writes them itself; a thread of the link
  reads the replies.  The receiving worker serves each link on a thread of
  its own: requests one after another (a request may wait inside the store --
  a sync round, admission under ``max_staleness`` -- without holding the
  event loop or other links), replies written back on the same connection.
* On a plain TCP connection (:class:`SocketTransport`) both ends then stop
  the event loop from watching the socket and use it with blocking calls: a
  message is one ``sendmsg`` of a length header, a pickle and the pickle's
  out-of-band buffers (numpy arrays, never copied) and a few ``recv_into``.
  Any other comm (TLS, in-process, UCX, websockets) keeps Dask's own
  ``read``/``write`` (:class:`CommTransport`) under the same threads.
* A request without a reply (``reply=False``: a push) costs no round trip and
  travels with the next request that has one (a read); since a link is
  ordered, that read sees the push applied.  A failed request without a
  reply fails the link: the loop's next call on it raises that error.
  A request's arrays must not change until it is written: callers pass
  arrays they do not reuse (a loop copies its delta before pushing it).
"""

import asyncio
import concurrent.futures
import itertools
import socket
import struct
import threading
import time

import numpy as np
from distributed import WorkerPlugin, get_worker
from distributed.comm import connect
from distributed.core import Status
from distributed.protocol import pickle as dask_pickle
from distributed.protocol import to_serialize

from ..kernels.wire import count_significant_words, pack_words, unpack_words

_PLAIN = (int, float, str, bool, type(None))


class ChannelError(RuntimeError):
    """A link of a fit's channel failed or was closed."""


def _wrap(x):
    """``x`` ready for a Dask message: plain values as they are, containers element
    by element, everything else (arrays, named tuples) as out-of-band frames."""
    t = type(x)
    if t in _PLAIN:
        return x
    if t is tuple or t is list:
        return [_wrap(v) for v in x]
    if t is dict and all(type(k) is str for k in x):
        return {k: _wrap(v) for k, v in x.items()}
    return to_serialize(x)


#: longest wait for a link's connection (a lost worker's address refuses until then)
CONNECT_TIMEOUT = 10.0

#: the first message of every link, from the serving end: the caller writes
#: nothing before it, so no request can reach a socket the event loop still watches
READY = "asyncopt-ready"


def plugin_name(token):
    return f"asyncopt-exchange-{token}"


# ------------------------------------------------------------------ transports
_HEAD = struct.Struct("<QQ")  # pickle bytes, out-of-band buffers


#: in a message's header: a buffer sent as it is (else the count of its packed words)
PLAIN = 2**64 - 1

#: buffers smaller than this go as they are: packing them saves too little to pay
SQUEEZE_MIN_BYTES = 32 * 1024


def squeeze(view):
    """``(bitmap, signs, words)`` packing the byte view ``view`` by zero suppression
    (:mod:`~dask_asyncopt.kernels.wire`), or ``None`` to send it as it is: too
    small, not whole 8-byte words, or packing would not halve it.

    An L1-regularised fit's pulls and pushes are mostly exact zeros after its
    first epoch; bytes cost on any link (a network's bandwidth, a loopback's
    copies), a pass over the words costs less."""
    if view.nbytes < SQUEEZE_MIN_BYTES or view.nbytes % 8:
        return None
    words = np.frombuffer(view, np.uint64)
    n_packed = count_significant_words(words)
    n_map = (words.shape[0] + 7) // 8
    if 8 * n_packed + 2 * n_map > view.nbytes // 2:
        return None
    bitmap, signs = np.zeros(n_map, np.uint8), np.zeros(n_map, np.uint8)
    packed = np.empty(n_packed, np.uint64)
    pack_words(words, bitmap, signs, packed)
    return bitmap, signs, packed


def unsqueeze(bitmap, signs, packed, n_words):
    """The buffer :func:`squeeze` packed, as a new array of bytes."""
    words = np.empty(n_words, np.uint64)
    unpack_words(bitmap, signs, packed, words)
    return words.view(np.uint8)


class SocketTransport:
    """Messages on a plain TCP connection that Dask opened, by blocking socket calls.

    Built on the event loop right after the connection's first message, before
    the loop runs anything else: from then on tornado neither reads nor writes
    the socket (its handler is removed), so every byte that follows is this
    transport's.  ``send`` is called by one thread at a time (the link's lock,
    the serving thread); ``recv`` by one thread (the link's reader, the serving
    thread).  ``close`` shuts the socket down, which wakes a thread blocked in
    it, and lets Dask close the comm on its event loop.
    """

    def __init__(self, comm, loop):
        stream = comm.stream
        self.comm, self.loop, self.sock = comm, loop, stream.socket
        stream.io_loop.remove_handler(self.sock)
        if getattr(stream, "_read_buffer_size", 0):
            raise ChannelError("the connection had unread bytes when the link started")
        self.sock.setblocking(True)

    def send(self, obj):
        self.write(self.frames(obj))

    def limit_writes(self, seconds):
        """A write blocked ``seconds`` (the peer reads nothing) raises ``OSError``
        instead of waiting on; reads keep blocking (replies may take long).  No
        limit for an infinite (or practically infinite) ``seconds``."""
        if not seconds < 1e9:
            return
        whole = int(seconds)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack(
            "ll", whole, int((seconds - whole) * 1e6)))

    @staticmethod
    def frames(obj):
        """``obj`` as one message: a length header, the pickle, its out-of-band
        buffers (views of the arrays, not copies; a buffer of mostly zero
        words as :func:`squeeze` packs it)."""
        buffers = []
        payload = dask_pickle.dumps(obj, buffer_callback=buffers.append)
        sizes, parts = [], []
        for b in buffers:
            view = b.raw()
            packed = squeeze(view)
            if packed is None:
                sizes += (view.nbytes, PLAIN)
                parts.append(view)
            else:
                sizes += (view.nbytes, packed[2].shape[0])
                parts += [memoryview(a) for a in packed]
        head = _HEAD.pack(len(payload), len(buffers)) + struct.pack(
            f"<{len(sizes)}Q", *sizes)
        return [memoryview(head), memoryview(payload), *parts]

    def write(self, parts):
        """Write the byte views ``parts`` whole (``sendmsg`` may take part of them)."""
        parts = [p for p in parts if p.nbytes]
        while parts:
            sent = self.sock.sendmsg(parts[:64])
            while sent:
                n = parts[0].nbytes
                if sent < n:
                    parts[0], sent = parts[0][sent:], 0
                else:
                    sent -= n
                    parts.pop(0)

    def _exact(self, n):
        buf = np.empty(n, np.uint8)  # aligned, writeable: arrays unpickled onto it
        view, got = memoryview(buf), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise ChannelError("the connection was closed")
            got += k
        return buf

    def recv(self):
        n_payload, n_buffers = _HEAD.unpack(self._exact(_HEAD.size))
        sizes = struct.unpack(f"<{2 * n_buffers}Q", self._exact(16 * n_buffers)) if (
            n_buffers) else ()
        payload = self._exact(n_payload)
        buffers = []
        for nbytes, packed in zip(sizes[::2], sizes[1::2], strict=True):
            if packed == PLAIN:
                buffers.append(self._exact(nbytes))
            else:
                n_words = nbytes // 8
                bitmap, signs = (self._exact((n_words + 7) // 8) for _ in range(2))
                words = self._exact(8 * packed).view(np.uint64)
                buffers.append(unsqueeze(bitmap, signs, words, n_words))
        return dask_pickle.loads(payload, buffers=buffers)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        _abort(self.comm, self.loop)


class CommTransport:
    """Messages through Dask's own ``comm.write``/``comm.read`` on the event loop of
    the link's process (a worker's, or the client's), for comms other than plain
    TCP; the same threads drive it."""

    def __init__(self, comm, loop):
        self.comm, self.loop = comm, loop

    def _on_loop(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def send(self, obj):
        self._on_loop(self.comm.write(_wrap(obj)))

    def recv(self):
        return self._on_loop(self.comm.read())

    def close(self):
        _abort(self.comm, self.loop)


def _abort(comm, loop):
    """Close ``comm`` on its event loop: at once when called there (Dask's handler
    loop then sees it closed), else as the loop's next callback."""
    try:
        if asyncio.get_running_loop() is loop:
            comm.abort()
            return
    except RuntimeError:  # no running loop in this thread
        pass
    try:
        loop.call_soon_threadsafe(comm.abort)
    except RuntimeError:  # the loop is closed, and the worker with it
        pass


def transport(comm, loop):
    """The transport of a link's connection (called on the event loop, before it
    yields: see :class:`SocketTransport`)."""
    if type(comm).__name__ == "TCP" and getattr(comm, "stream", None) is not None:
        return SocketTransport(comm, loop)
    return CommTransport(comm, loop)


def _thread(target, *args, name):
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ the ends
class _Caller:
    """What opens links to workers: the loop their connections are opened on, the
    connection arguments, the worker handler they call, the links opened."""

    def _start(self, token, loop, connection_args):
        self.token = token
        self.op = f"asyncopt_exchange_{token}"
        self.loop = loop
        self.connection_args = connection_args
        self.links = {}
        self.lock = threading.Lock()
        self.tasks = set()
        self.closed = False
        self.send_timeout = None  # seconds a write may block (None: no limit)

    def link(self, address, timeout, lane=None):
        """The link of ``lane`` from this process to the worker at ``address``,
        safe from any thread.  It connects in the background: requests wait in
        its outbox, and a peer that cannot be reached within ``timeout`` (at
        most :data:`CONNECT_TIMEOUT`) fails them, instead of a loop blocking on
        a lost worker's address.

        Worker loops sharing a process (one per worker thread) each take their
        own lane, their loop's index: a request that waits in the store (a
        barrier, a block check-out) holds its link's serving thread until
        others arrive, and another loop's request queued behind it on a shared
        link could be the one it waits for.  A lane's link serves its loop's
        tasks one after another for the whole fit (and a kept store's later
        fits), so their number stays that of the loops.
        """
        key = (address, lane)
        with self.lock:
            link = self.links.get(key)
            if link is None or link.error is not None:
                if self.closed:
                    raise ChannelError(f"the fit's channel {self.token} was closed")
                link = Link(self, address)
                self.loop.call_soon_threadsafe(
                    self._spawn, link.open(timeout))
                self.links[key] = link
            return link

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _close_links(self):
        """Fail every link (closing its connection) and stop those still connecting."""
        self.closed = True
        with self.lock:
            links, self.links = list(self.links.values()), {}
        for link in links:
            link.fail(ChannelError(f"the fit's channel {self.token} was closed"))
        for task in list(self.tasks):
            try:
                self.loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop is closed: nothing runs there any more
                pass


class Driver(_Caller):
    """The driver's end of a fit's channel: its calls between epochs (the epoch's
    reports, statistics, checkpoints, the decision) to store objects on
    worker processes, through links like a loop's rather than actor RPCs.
    Opened on the client's event loop with the client's connection
    arguments; :meth:`close` ends them (the fit's end).

    A driver's request may carry a model-sized array; a worker that hangs
    without dying stops reading, and a write into a full socket would block
    the driver for good: its writes give up after ``timeout`` seconds (the
    link then fails, and so does the fit)."""

    def __init__(self, client, token, timeout):
        self._start(token, client.loop.asyncio_loop, client.connection_args)
        self.send_timeout = timeout

    def close(self):
        self._close_links()


class Exchange(_Caller, WorkerPlugin):
    """One fit's channel on one worker (see the module docstring)."""

    idempotent = False

    def __init__(self, token):
        self.token = token
        self.name = plugin_name(token)

    def setup(self, worker):
        self._start(self.token, worker.loop.asyncio_loop, worker.connection_args)
        self.worker = worker
        self.incoming = set()
        worker.handlers[self.op] = self._serve

    async def teardown(self, worker):
        worker.handlers.pop(self.op, None)
        self._close_links()
        for served in list(self.incoming):
            served.close()

    # ------------------------------------------------------------ serving
    async def _serve(self, comm, **_):
        """Serve one incoming link until it closes, on a thread of its own."""
        served = transport(comm, self.loop)  # first: nothing may run before it
        self.incoming.add(served)
        done = self.loop.create_future()

        def finished():
            if not done.done():
                done.set_result(None)

        def serve():
            try:
                self._serve_link(served)
            finally:
                self.loop.call_soon_threadsafe(finished)

        try:
            _thread(serve, name=f"asyncopt-serve-{comm.peer_address}")
            await done
        except asyncio.CancelledError:
            pass
        finally:
            self.incoming.discard(served)
            served.close()
        return Status.dont_reply

    def _serve_link(self, served):
        try:
            served.send(READY)
            while not self.closed:
                replies = self._run(served.recv())
                if not replies:
                    continue
                try:
                    served.send(replies)
                except OSError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a reply pickle cannot carry
                    served.send([[rid, False, ChannelError(
                        f"a reply could not be sent: {exc!r}")] for rid, _, _ in replies])
        except Exception:  # noqa: BLE001 - the link closed or its peer is gone
            pass

    def _run(self, batch):
        actors = self.worker.state.actors
        replies = []
        for rid, key, method, args, kwargs in batch:
            try:
                result = None if key is None else getattr(actors[key], method)(*args, **kwargs)
                if rid is not None:
                    replies.append([rid, True, result])
            except Exception as exc:  # noqa: BLE001 - sent back to the caller
                replies.append([rid, False, exc])
        return replies


class Link:
    """Requests from this process (a worker, or the driver) to the store objects of
    one worker, in order."""

    def __init__(self, exchange, address):
        self.exchange = exchange
        self.address = address
        self.transport = None  # set once the peer said READY
        self.lock = threading.Lock()  # the outbox and writing, in the callers' order
        self.outbox = []
        self.urgent = False  # the outbox holds a request that must go now
        self.pending = {}
        self.ids = itertools.count()
        self.error = None
        self.n_calls = 0

    async def open(self, timeout):
        """Connect within the fit's ``timeout``, at most :data:`CONNECT_TIMEOUT`.
        Running out of the fit's ``timeout`` fails the link with a
        ``TimeoutError`` (the fit names ``timeout=``, its remedy); giving up
        after :data:`CONNECT_TIMEOUT` below it is a lost peer, which a larger
        ``timeout`` would not reach."""
        started = time.monotonic()
        try:
            comm = await connect(self.address, timeout=min(timeout, CONNECT_TIMEOUT),
                                 **self.exchange.connection_args)
            await comm.write({"op": self.exchange.op, "reply": False})
            opened = transport(comm, self.exchange.loop)
        except Exception as exc:  # noqa: BLE001 - a lost peer: fail what waits for it
            # Dask says OSError when connecting timed out; a TimeoutError lets the
            # fit name its setting
            timed_out = time.monotonic() - started >= timeout
            self.fail(TimeoutError(f"connecting to {self.address}") if timed_out else exc)
            return
        if self.exchange.send_timeout is not None and isinstance(opened, SocketTransport):
            opened.limit_writes(self.exchange.send_timeout)
        _thread(self._reader, opened, name=f"asyncopt-link-{self.address}")

    def call(self, key, method, args, kwargs, reply=True, now=False):
        """Send ``method(*args, **kwargs)`` to the actor ``key``; a
        ``concurrent.futures.Future`` of its result.

        Without ``reply`` (``None`` is returned) the request waits in the outbox
        for the next one with a reply (or :meth:`flush`) and travels with it: a
        loop's push and its next read are one message, one wake-up of the
        serving thread.  ``now``: written at once all the same (others wait
        for it).  The caller's thread writes the message itself.
        """
        if self.error is not None:
            raise self.error
        rid = future = None
        if reply:
            rid = next(self.ids)
            future = concurrent.futures.Future()
            self.pending[rid] = future
        self.n_calls += 1
        with self.lock:
            self.outbox.append((rid, key, method, args, kwargs))
            self.urgent = self.urgent or reply or now
            self._write()
        if future is not None and self.error is not None and not future.done():
            future.set_exception(ChannelError(  # failed meanwhile
                f"the link to {self.address} failed: {self.error!r}"))
        return future

    def _write(self):
        """Write the outbox if it holds an urgent request and the link is open
        (the caller holds ``lock``)."""
        if not (self.urgent and self.transport is not None and self.error is None):
            return
        batch, self.outbox, self.urgent = self.outbox, [], False
        try:
            self.transport.send(batch)
        except Exception as exc:  # noqa: BLE001 - the link is dead
            self.fail(exc)

    def flush(self):
        """A future that completes once every request sent before it was served."""
        return self.call(None, None, (), {})

    def _reader(self, opened):
        try:
            if opened.recv() != READY:
                raise ChannelError(f"{self.address} did not open the link")
            with self.lock:
                self.transport = opened
                self._write()  # what callers queued while it connected
            if self.error is not None:
                opened.close()
                return
            while True:
                for rid, ok, value in opened.recv():
                    if rid is None:  # a request without reply failed there
                        self.fail(value)
                        return
                    future = self.pending.pop(rid)
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        except Exception as exc:  # noqa: BLE001 - the link is dead
            self.fail(exc)
            opened.close()

    def fail(self, exc):
        """Fail every pending request and every later call with ``exc``."""
        if self.error is None:
            self.error = exc if isinstance(exc, BaseException) else ChannelError(str(exc))
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self.error if isinstance(self.error, TimeoutError) else
                                     ChannelError(f"the link to {self.address} failed: "
                                                  f"{self.error!r}"))
        if self.transport is not None:
            self.transport.close()


def here(token):
    """This worker's :class:`Exchange` of the fit ``token``, or ``None``."""
    if token is None:
        return None
    try:
        return get_worker().plugins.get(plugin_name(token))
    except ValueError:  # not on a worker: the driver
        return None
