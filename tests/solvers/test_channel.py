"""The fit's exchange channel (``solvers/channel.py``) between real worker processes and
from the driver: requests in order, pushes that travel with the next read, posts written
at once, and nothing left on the workers once the channel is removed."""

from types import SimpleNamespace

import numpy as np
import pytest
from distributed import Client, Event, LocalCluster

from dask_asyncopt.solvers.channel import ChannelError, Driver, Exchange, plugin_name
from dask_asyncopt.solvers.handles import StoreRef, bind
from dask_asyncopt.store.factors import CheckoutTable

from ..conftest import cluster_is_clean

TIMEOUT = 60  # a bound on a stalled exchange, never reached when the channel works


def _channel(client, token):
    client.register_plugin(Exchange(token), name=plugin_name(token))


def _unregister(client, token):
    client.unregister_worker_plugin(plugin_name(token))


def _check_out_and_post(table, token):
    """On one worker: hold block 0 of ``table`` (on another worker), say so, check
    it in with ``post``, then make no further call on the link until the driver
    says it got the block."""
    config = SimpleNamespace(channel=token, timeout=TIMEOUT)
    (h,) = bind([table], config=config)
    assert h.link is not None, "the table is on another worker: reached through a link"
    assert h.wait("acquire_any", 0, [0], TIMEOUT).result(TIMEOUT) == 0
    Event(f"{token}-held").set()
    h.post("release", 0)
    Event(f"{token}-done").wait(TIMEOUT)
    return h.link.n_calls


def test_a_posted_check_in_reaches_the_waiting_holder_without_a_later_call(process_client):
    """A check-in that another loop waits for is written at once: held back until
    the poster's next call on the link, it would wait behind the poster's own wait
    for a block the waiting loop holds (the MF ``asyb`` deadlock this prevents)."""
    client = process_client
    first, second = sorted(client.nthreads())
    token = f"test{np.random.default_rng().integers(1 << 30)}"
    _channel(client, token)
    table = client.submit(CheckoutTable, 1, workers=[second], actor=True, pure=False)
    held = Event(f"{token}-held", client=client)
    done = Event(f"{token}-done", client=client)
    task = None
    try:
        task = client.submit(_check_out_and_post, StoreRef.of(table.result()), token,
                             workers=[first], pure=False)
        assert held.wait(TIMEOUT)
        # the driver waits for block 0 through the actor: it is free only once the
        # poster's check-in has crossed the link (which the poster no longer uses)
        assert table.result().acquire_any(1, [0], TIMEOUT).result(TIMEOUT) == 0
        done.set()
        assert task.result(TIMEOUT) == 2  # the check-out and the check-in, nothing after
    finally:
        done.set()
        _unregister(client, token)
        client.cancel([table] + ([task] if task is not None else []), force=True)
    assert cluster_is_clean(client)


def _pushes_then_read(actor_ref, token, n):
    """Pushes without replies, then one read: the read sees every push applied.
    Also returns the link's transport and an array's round trip."""
    config = SimpleNamespace(channel=token, timeout=TIMEOUT)
    (h,) = bind([actor_ref], config=config)
    for b in range(n):
        h.wait("acquire_any", 0, [b], TIMEOUT).result(TIMEOUT)
        h.send("release", b)  # held in the outbox ...
    # ... and carried by this request, ahead of it: every block is free again
    got = [h.wait("acquire_any", 0, [b], TIMEOUT).result(TIMEOUT) for b in range(n)]
    try:
        h.call("no_such_method").result(TIMEOUT)
    except AttributeError as exc:  # the store's error, raised at the caller
        error = str(exc)
    return got, type(h.link.transport).__name__, error


def _in_order(client):
    first, second = sorted(client.nthreads())
    token = f"test{np.random.default_rng().integers(1 << 30)}"
    _channel(client, token)
    table = client.submit(CheckoutTable, 4, workers=[second], actor=True, pure=False)
    task = client.submit(_pushes_then_read, StoreRef.of(table.result()), token, 4,
                         workers=[first], pure=False)
    driver = Driver(client, token, TIMEOUT)
    try:
        got, transport, error = task.result(TIMEOUT)
        # the driver's end: the same requests from the client's process
        (h,) = bind([StoreRef.of(table.result())], driver=driver)
        assert h.link is not None and not h.local
        h.send("release", 1)  # the loop kept every block: this frees one ...
        assert h.wait("acquire_any", 0, [1], TIMEOUT).result(TIMEOUT) == 1  # ... first
        driver_transport = type(h.link.transport).__name__
        driver.close()
        with pytest.raises(ChannelError):
            h.call("release", 1)
    finally:
        driver.close()
        _unregister(client, token)
        client.cancel([table, task], force=True)
    assert got == [0, 1, 2, 3]
    assert "no_such_method" in error
    assert driver_transport == transport  # the driver's link like a loop's
    assert cluster_is_clean(client)
    return transport


def test_sends_travel_in_order_with_the_next_request(process_client):
    # plain TCP: the link's threads use the socket Dask opened
    assert _in_order(process_client) == "SocketTransport"


@pytest.mark.slow  # a cluster of its own
def test_a_tls_cluster_keeps_dasks_comm(tmp_path):
    """Comms other than plain TCP (here TLS) carry the same requests through Dask's
    own ``read``/``write``."""
    pytest.importorskip("cryptography")
    from distributed.security import Security

    security = Security.temporary()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      protocol="tls://", security=security, dashboard_address=None,
                      local_directory=str(tmp_path)) as cluster, Client(
            cluster, security=security, set_as_default=False) as client:
        assert _in_order(client) == "CommTransport"


def test_a_limited_write_to_a_peer_that_reads_nothing_fails():
    """The driver's sockets: a write the peer never drains raises instead of blocking
    the fit for good; an infinite timeout sets no limit."""
    import socket

    from dask_asyncopt.solvers.channel import SocketTransport

    ours, theirs = socket.socketpair()
    try:
        transport = SocketTransport.__new__(SocketTransport)  # the socket part alone
        transport.sock = ours
        transport.limit_writes(float("inf"))
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16) == bytes(16)
        transport.limit_writes(0.2)
        with pytest.raises(OSError):
            transport.write([memoryview(np.zeros(2**26, np.uint8))])
    finally:
        ours.close()
        theirs.close()


def test_messages_cross_a_socket_bit_for_bit_and_mostly_zero_arrays_packed():
    """A message of arrays -- mostly exact zeros (an L1 fit's pulls and pushes after its
    first epoch; ``-0.0``, NaN and inf among the rest), dense, small, of odd byte
    counts, not contiguous -- arrives bit for bit, and the mostly zero ones take
    far fewer bytes on the wire than in memory."""
    import socket
    import threading

    from dask_asyncopt.solvers.channel import SocketTransport

    rng = np.random.default_rng(3)
    sparse = rng.standard_normal(50_000) * (rng.random(50_000) < 0.05)
    sparse[:4] = [-0.0, np.nan, np.inf, -np.inf]
    message = [7, "pull", {
        "sparse": sparse.reshape(-1, 2), "dense": rng.standard_normal(40_000),
        "zeros": np.zeros((9_000, 3)), "small": np.zeros(10),
        "odd": np.zeros(40_001, np.float32), "ids": np.arange(0, 200_000, 3),
        "strided": np.zeros((20_000, 4))[:, 1]}]
    raw = sum(a.nbytes for a in message[2].values())
    wire = sum(p.nbytes for p in SocketTransport.frames(message))
    # the zeros and the sparse array shrink ~15x and ~6x, the rest goes as it is
    assert wire < raw - 0.75 * (sparse.nbytes + 9_000 * 3 * 8)

    ours, theirs = socket.socketpair()
    ends = []
    for sock in (ours, theirs):
        end = SocketTransport.__new__(SocketTransport)  # the socket part alone
        end.sock = sock
        ends.append(end)
    try:
        writer = threading.Thread(target=ends[0].send, args=(message,))
        writer.start()
        got = ends[1].recv()
        writer.join()
    finally:
        ours.close()
        theirs.close()
    assert got[:2] == message[:2]
    for name, sent in message[2].items():
        received = got[2][name]
        assert received.dtype == sent.dtype and received.shape == sent.shape, name
        assert received.tobytes() == sent.tobytes(), name


@pytest.mark.parametrize("timeout", [0.3, 30.0])
def test_a_link_that_cannot_connect_names_the_fits_timeout_only_when_it_ran_out(
        client, monkeypatch, timeout):
    """Nothing listens at the peer's address.  A connection that ran out of the
    fit's timeout fails the call with a TimeoutError (the fit then names
    timeout=); one given up after CONNECT_TIMEOUT, below the fit's timeout, is a
    lost peer, a ChannelError: a larger timeout= would not help."""
    import socket

    from dask_asyncopt.solvers import channel

    monkeypatch.setattr(channel, "CONNECT_TIMEOUT", 0.3)
    with socket.socket() as s:  # a port nothing listens on (closed before the call)
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    driver = Driver(client, "no-peer", timeout)
    try:  # the call fails when the link does, or at once if it failed already
        driver.link(address, timeout).call("key", "method", (), {}).result(TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the failure is what is tested
        failure = exc
    finally:
        driver.close()
    assert isinstance(failure, TimeoutError) == (timeout < 1), repr(failure)
