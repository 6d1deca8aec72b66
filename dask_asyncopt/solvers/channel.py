"""A fit's worker-to-worker exchange channel, on Dask's own comm layer.

A worker loop calls blocks on other workers many times per epoch.  Through a
Dask actor every call is a full RPC (a hop to the event loop, a pooled
connection, the actor machinery, a hop back), and a loop waits for every
reply.  This channel keeps Dask as the engine -- its comms, serialisation,
security settings and worker handlers -- and strips the rest:

* :class:`Exchange` is a ``WorkerPlugin`` registered for one fit on every
  worker (:func:`channel`) and removed when the fit ends; its ``setup`` adds
  one comm handler to the worker, its ``teardown`` removes it and closes
  every connection it opened or accepted: nothing of the fit outlives it.
* A loop reaches the store objects of one other worker through one
  :class:`Link`: a single connection, opened on first use, carrying requests
  ``(id, actor key, method, args, kwargs)`` in the order the loop issues them.
  The receiving worker runs each link's requests one after another on a
  thread of that link (a request may wait inside the store -- a sync round,
  admission under ``max_staleness`` -- without holding the event loop or
  other links) and writes the replies back on the same connection.
* A request without a reply (``reply=False``: a push) costs no round trip and
  travels with the next request that has one (a read); since a link is
  ordered, that read sees the push applied.  A failed request without a
  reply fails the link: the loop's next call on it raises that error.
* numpy arrays travel as zero-copy frames; anything msgpack cannot encode
  (named replies, id sets, exceptions) is pickled out of band.  A request's
  arrays must not change until the request is written: callers pass arrays
  they do not reuse (a loop copies its delta before pushing it).
"""

import asyncio
import collections
import concurrent.futures
import itertools
import threading

from distributed import WorkerPlugin, get_worker
from distributed.comm import connect
from distributed.core import Status
from distributed.protocol import to_serialize

_PLAIN = (int, float, str, bool, type(None))


class ChannelError(RuntimeError):
    """A link of a fit's channel failed or was closed."""


def _wrap(x):
    """``x`` ready for a message: plain values as they are, containers element by
    element, everything else (arrays, named tuples) as out-of-band frames."""
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


def plugin_name(token):
    return f"asyncopt-exchange-{token}"


class Exchange(WorkerPlugin):
    """One fit's channel on one worker (see the module docstring)."""

    idempotent = False

    def __init__(self, token):
        self.token = token
        self.name = plugin_name(token)
        self.op = f"asyncopt_exchange_{token}"

    def setup(self, worker):
        self.worker = worker
        self.loop = worker.loop.asyncio_loop
        self.links = {}
        self.lock = threading.Lock()
        self.incoming = set()
        self.tasks = set()
        self.closed = False
        worker.handlers[self.op] = self._serve

    async def teardown(self, worker):
        self.closed = True
        worker.handlers.pop(self.op, None)
        with self.lock:
            links, self.links = list(self.links.values()), {}
        for link in links:
            link.fail(ChannelError(f"the fit's channel {self.token} was closed"))
        for comm in list(self.incoming):
            comm.abort()
        for task in list(self.tasks):
            task.cancel()

    # ------------------------------------------------------------ callers
    def link(self, address, timeout):
        """The link from this worker to the worker at ``address``, safe from any
        thread.  It connects in the background: requests wait in its outbox,
        and a peer that cannot be reached within ``timeout`` (at most
        :data:`CONNECT_TIMEOUT`) fails them, instead of a loop blocking on a
        lost worker's address."""
        with self.lock:
            link = self.links.get(address)
            if link is None or link.error is not None:
                if self.closed:
                    raise ChannelError(f"the fit's channel {self.token} was closed")
                link = Link(self, address)
                self.loop.call_soon_threadsafe(
                    self._spawn, link.open(min(timeout, CONNECT_TIMEOUT)))
                self.links[address] = link
            return link

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ serving
    async def _serve(self, comm, **_):
        """Serve one incoming link until it closes: its requests in order, on a
        thread of its own -- or right here on the event loop when every request
        of a batch is one its object declares quick (see :meth:`_quick`): no
        thread hop, which on a busy machine costs a context switch each way."""
        self.incoming.add(comm)
        runner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asyncopt-link")
        try:
            while not self.closed:
                batch = await comm.read()
                if self._quick(batch):
                    replies = self._run(batch)
                else:
                    replies = await self.loop.run_in_executor(runner, self._run, batch)
                if replies:
                    await comm.write(replies)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.incoming.discard(comm)
            comm.abort()
            runner.shutdown(wait=False)
        return Status.dont_reply

    def _quick(self, batch):
        """Whether every request of ``batch`` is to a method that never waits for
        another caller, as its object says (``quick(method)``; objects without
        it are served on the link's thread).  A waiting method on the event
        loop would stall every link of this worker, the pushes that end its
        wait included."""
        actors = self.worker.state.actors
        for _, key, method, _, _ in batch:
            if key is not None:
                quick = getattr(actors.get(key), "quick", None)
                if quick is None or not quick(method):
                    return False
        return True

    def _run(self, batch):
        actors = self.worker.state.actors
        replies = []
        for rid, key, method, args, kwargs in batch:
            try:
                result = None if key is None else getattr(actors[key], method)(*args, **kwargs)
                if rid is not None:
                    replies.append([rid, True, _wrap(result)])
            except Exception as exc:  # noqa: BLE001 - sent back to the caller
                replies.append([rid, False, to_serialize(exc)])
        return replies


class Link:
    """Requests from this worker to the store objects of one other worker, in order."""

    def __init__(self, exchange, address):
        self.exchange = exchange
        self.address = address
        self.loop = exchange.loop
        self.comm = None
        self.outbox = collections.deque()
        self.wake = asyncio.Event()  # set from loop threads with call_soon_threadsafe
        self.pending = {}
        self.ids = itertools.count()
        self.error = None
        self.n_calls = 0

    async def open(self, timeout):
        try:
            self.comm = await connect(self.address, timeout=timeout,
                                      **self.exchange.worker.connection_args)
            self.comm.allow_offload = False  # a thread hop per large message: latency
            await self.comm.write({"op": self.exchange.op, "reply": False})
        except Exception as exc:  # noqa: BLE001 - a lost peer: fail what waits for it
            self.fail(exc)
            return
        self.exchange._spawn(self._writer())
        self.exchange._spawn(self._reader())

    def call(self, key, method, args, kwargs, reply=True, now=False):
        """Send ``method(*args, **kwargs)`` to the actor ``key``; a
        ``concurrent.futures.Future`` of its result.

        Without ``reply`` (``None`` is returned) the request waits in the outbox
        for the next one with a reply (or :meth:`flush`) and travels with it: a
        loop's push and its next read are one message, one wake-up of each
        event loop.  ``now``: written at once all the same (others wait for it).
        """
        if self.error is not None:
            raise self.error
        rid = future = None
        if reply:
            rid = next(self.ids)
            future = concurrent.futures.Future()
            self.pending[rid] = future
        self.n_calls += 1
        self.outbox.append([rid, key, method, _wrap(args), _wrap(kwargs)])
        if reply or now:
            self.loop.call_soon_threadsafe(self.wake.set)
            if self.error is not None and not future.done():  # failed meanwhile
                future.set_exception(ChannelError(
                    f"the link to {self.address} failed: {self.error!r}"))
        return future

    def flush(self):
        """A future that completes once every request sent before it was served."""
        return self.call(None, None, (), {})

    async def _writer(self):
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                batch = []
                while self.outbox:  # appended by loop threads, in their order
                    batch.append(self.outbox.popleft())
                if batch:
                    await self.comm.write(batch)
        except Exception as exc:  # noqa: BLE001 - the link is dead
            self.fail(exc)

    async def _reader(self):
        try:
            while True:
                for rid, ok, value in await self.comm.read():
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

    def fail(self, exc):
        """Fail every pending request and every later call with ``exc``."""
        if self.error is None:
            self.error = exc if isinstance(exc, BaseException) else ChannelError(str(exc))
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ChannelError(
                    f"the link to {self.address} failed: {self.error!r}"))
        if self.comm is not None and not self.comm.closed():
            self.comm.abort()


def here(token):
    """This worker's :class:`Exchange` of the fit ``token``, or ``None``."""
    if token is None:
        return None
    try:
        return get_worker().plugins.get(plugin_name(token))
    except ValueError:  # not on a worker: the driver
        return None
