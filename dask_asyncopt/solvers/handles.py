"""The one way to call a store object: directly when it lives in this process,
through the fit's channel or its Dask actor otherwise.

Every caller of the store -- worker loops of every topology, and the driver
between epochs -- binds the fit's actors once (:func:`bind`) and calls them
through a :class:`Handle`:

* **in this process** (a block on the loop's own worker; every block on the
  embedded thread cluster, driver included) the call is a plain method call
  on the object: no round trip through the event loop that all in-process
  workers share, which would otherwise serialise every exchange of every
  loop.  The object's lock keeps calls atomic either way.
* **elsewhere**, when the fit registered a channel (:mod:`.channel`; every
  fit does once a store object or a loop lives in another process), through
  its links: one ordered connection from the caller's process (a worker, or
  the driver's :class:`~.channel.Driver`) to the object's worker, requests
  served on a thread of their own over there (a waiting method blocks only
  its link), and :meth:`Handle.send` for requests that need no reply.
* **without a channel**, through the actor: short methods on the actor
  worker's event loop (``separate_thread=False``), methods that may wait in
  the store on their ``<method>_async`` twin, which waits without holding a
  thread of that worker (see :mod:`~dask_asyncopt.store.waits`).

All return something with ``result(timeout)`` and ``done()``.  A loop with a
shard also names each chunk's coordinates once per fit to every remote block
(:class:`~dask_asyncopt.store.blocks.IdSet`).
"""

from typing import NamedTuple

from distributed import Actor, Worker, get_worker
from distributed.core import Status

from ..store.blocks import IdSet
from . import channel


class Ready:
    """An already-completed call, shaped like an ``ActorFuture``."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def done(self):
        return True

    def result(self, timeout=None):
        return self.value


class StoreRef(NamedTuple):
    """Where a store object is: its actor's key and its worker's address.

    Worker loops get these, not ``Actor`` objects: an ``Actor`` in a task's
    arguments is a dependency of the task (its worker fetches a copy of the
    actor's key) and binds a client on the worker, and a copy of a lost
    worker's actor stays on the survivors.
    """

    key: str
    address: str
    cls: type = None

    @classmethod
    def of(cls, actor):
        return actor if isinstance(actor, cls) else cls(actor.key, actor._address, actor._cls)


class Handle:
    """One store object of a fit, as a caller reaches it.

    ``obj`` is the object when it lives in this process, else ``None``;
    ``link`` the channel's link to the object's worker, when the fit has a
    channel; otherwise calls go through the object's ``actor``.  ``sent``
    (kept on the caller's shard) records which chunks' ids this caller has
    sent to the object; ``loop`` makes their names unique across loops.
    """

    __slots__ = ("ref", "obj", "sent", "loop", "link", "actor", "n_calls")

    def __init__(self, ref, obj=None, sent=None, loop=0, link=None):
        self.ref = StoreRef.of(ref)
        self.obj = obj
        self.sent = sent
        self.loop = loop
        self.link = link
        self.n_calls = 0  # calls to another process (the history's remote_calls)
        self.actor = ref if isinstance(ref, Actor) else None
        if obj is None and link is None and self.actor is None:
            # made here, in the binding thread: an Actor binds the thread's client
            self.actor = Actor(self.ref.cls, self.ref.address, self.ref.key)

    @property
    def local(self):
        return self.obj is not None

    def call(self, method, *args, **kwargs):
        """``method(*args, **kwargs)`` on the object; it must not wait for others."""
        if self.obj is not None:
            return Ready(getattr(self.obj, method)(*args, **kwargs))
        self.n_calls += 1
        if self.link is not None:
            return self.link.call(self.ref.key, method, args, kwargs)
        return getattr(self.actor, method)(*args, separate_thread=False, **kwargs)

    def wait(self, method, *args, **kwargs):
        """A call that may wait inside the store for other callers."""
        if self.obj is not None:
            return Ready(getattr(self.obj, method)(*args, **kwargs))
        self.n_calls += 1
        if self.link is not None:  # served on the link's own thread over there
            return self.link.call(self.ref.key, method, args, kwargs)
        return getattr(self.actor, method + "_async")(*args, **kwargs)

    def send(self, method, *args, **kwargs):
        """A call whose reply nobody needs (a push): through a link it costs no round
        trip and travels with the caller's next call on the link, which sees it
        applied; a failure fails that next call.  Elsewhere it is a call waited
        for (through the method's async twin if it has one, see :meth:`wait`;
        check-ins have none: they never wait in the store).  Only for calls
        nobody else waits for: see :meth:`post`."""
        self._send(method, args, kwargs, False)

    def post(self, method, *args, **kwargs):
        """:meth:`send` written at once: for a call that *other* callers wait for
        (a check-in of a block the next holder waits to acquire).  Held back
        until this caller's next call on the link, it could wait behind this
        caller's own wait for a holder that waits for it."""
        self._send(method, args, kwargs, True)

    def _send(self, method, args, kwargs, now):
        if self.obj is not None:
            getattr(self.obj, method)(*args, **kwargs)
        elif self.link is not None:
            self.n_calls += 1
            self.link.call(self.ref.key, method, args, kwargs, reply=False, now=now)
        elif hasattr(self.ref.cls, method + "_async"):
            self.wait(method, *args, **kwargs).result(kwargs.get("timeout"))
        else:
            self.call(method, *args, **kwargs).result(kwargs.get("timeout"))

    def flush(self):
        """Something to wait on until every call sent before was applied."""
        if self.link is not None:
            self.n_calls += 1
            return self.link.flush()
        return Ready(None)

    def ids(self, ids):
        """How this caller names coordinates ``ids`` of a chunk to the object: the
        array itself the first time, its key afterwards (remote objects only;
        a chunk's id arrays live as long as the shard)."""
        if ids is None or self.sent is None or self.obj is not None:
            return ids
        key = (self.loop, id(ids))
        if key in self.sent:
            return IdSet(key)
        self.sent.add(key)
        return IdSet(key, ids)


def objects_here():
    """Actor key -> object of every actor held by a running worker of this process
    (thread workers: the embedded default), and of the worker running this task."""
    here = {}
    for worker in list(Worker._instances):
        if worker.status in (Status.running, Status.paused):
            here.update(worker.state.actors)
    try:
        here.update(get_worker().state.actors)
    except ValueError:  # not in a task: the driver
        pass
    return here


def remote_calls(handles):
    """Calls these handles made to other processes so far."""
    return sum(h.n_calls for h in handles)


def bind(refs, shard=None, loop=0, config=None, driver=None):
    """Handles of the store objects ``refs`` (:class:`StoreRef` or ``Actor``): the
    objects themselves where they live in this process.

    With ``shard`` (of worker loop ``loop``), handles to remote objects send
    each chunk's ids once per fit.  With a ``config`` naming the fit's channel
    (on a worker) or the driver's end of it (``driver``, a
    :class:`~.channel.Driver`), remote objects are reached through its links,
    on a worker those of loop ``loop`` (see :meth:`~.channel.Exchange.link`).
    """
    here = objects_here()
    if shard is not None and not hasattr(shard, "sent_ids"):
        shard.sent_ids = {}  # actor key -> names of the ids sent to it
    exchange = driver or channel.here(getattr(config, "channel", None))
    timeout = channel.CONNECT_TIMEOUT if config is None else config.timeout
    handles = []
    for ref in refs:
        obj = here.get(ref.key)
        link = None
        if obj is None and exchange is not None:
            link = exchange.link(StoreRef.of(ref).address, timeout,
                                 None if driver is not None else loop)
        sent = None if shard is None else shard.sent_ids.setdefault(ref.key, set())
        handles.append(Handle(ref, obj, sent, loop, link))
    return handles
