"""AD-PSGD: asynchronous decentralised training over model replicas.

Every worker loop owns a :class:`~dask_asyncopt.replica.Replica` on its own
worker.  Within an epoch a loop repeats: read the coordinates its chunk
touches from its replica, sweep the chunk (Numba, on a compact copy), apply
the difference to its replica, and - on *active* loops - average the whole
replica with one *passive* peer's (:meth:`Replica.exchange`).  No server,
no barrier within the epoch.

**Peer graph.**  Odd ranks are active, even ranks passive (with an odd
number of loops the last rank is passive; with one loop nothing is
exchanged).  Active rank ``a`` walks the passive ranks ``0, 2, 4, ...``
round-robin starting at position ``a // 2``: over time the bipartite graph
is complete between the two sets, hence connected, for any number of loops
>= 2.  Only active loops initiate and a passive replica never calls anyone,
so no cycle of waits can form (deadlock-free by construction).  An active
loop keeps at most one exchange in flight and checks for its reply after
each step; it waits for it only at the end of the epoch (the sum of the
replicas is then exactly what the loops' steps made it).

**Whole-replica averaging.**  As in the paper, an exchange averages every
coordinate.  Averaging only the coordinates the chunk touched would send
less (sparse chunks touch a fraction of a large model) but leave untouched
coordinates to diverge between replicas until the epoch boundary.

**Epochs.**  With plain proximal SGD (``variance_reduction=None``) there is
no barrier at all: one task per loop runs the whole fit and the driver
records each epoch's history row from the replicas as they are when the
loops' total crosses it (:func:`_sgd_epochs`), so a straggler costs only its
share of the samples.  The variance-reduced and adaptive fits need every
replica at one point for the snapshot pass, so there the loops' tasks end
with the epoch, the driver averages all replicas (the history reports the
*consensus distance* ``sqrt(mean_i |x_i - xbar|^2)`` measured just before),
writes the average back to every replica and evaluates the objective
there.  A loop's epoch ends when the samples all
loops processed this fit - as far as its replica knows from gossip - reach
``epoch x n_samples`` and it has taken at least :data:`MIN_SHARE` of its own
shard this epoch; a fast loop thus takes more than its share and does
not wait for a straggler's whole shard (plain SGD: the fast shard is
over-weighted within that epoch; SVRG: the fixed point stays the exact
optimum, see :func:`fit_replicas`).

**Variance reduction** (smooth losses, the default): after each epoch's
averaging a snapshot pass over all shards at the average stores each row's
loss derivative and adds each shard's gradient sum to every replica; the
next epoch's sweeps are the sparse proximal SVRG sweeps of the other
solvers on each replica.  Within the epoch everything stays decentralised;
the snapshot is a barrier pass over all data (its cost is one gradient
evaluation per row, as for ``asyb``/``sync``).

**Update rules** (``optimizer="amsgrad"``, :func:`_rule_epochs`).  Every
replica holds its own rule state (AMSGrad's ``m, v, vhat``); a loop computes
its chunk's minibatch gradients at the values it read (the kernels and
options of :mod:`dask_asyncopt.solvers.adaptive`, with the SVRG correction
at the epoch-end consensus when variance reduction applies) and its replica
applies them (:meth:`~dask_asyncopt.replica.Replica.apply_grads`).  Gossip
and the consensus average the values only; each replica keeps its moments.
Measured on the 5000 x 2000 test problem (2 loops, default settings, 4 fits
each): averaging the moments too, at the consensus or at every exchange,
reached the same final gaps (L2 ~1.2e-5, L1 ~9e-5) and took as many or more
epochs (L1 relative gap 1e-3 after 10 epochs with either, 8-9 with
per-replica moments; L2 3-4 epochs in all three).  The rule's step is not
scaled by the number of loops (unlike SVRG's): 0.06 instead of 0.03 took
7-8 epochs to 1e-3 on L2 instead of 3.
"""

import copy
import logging
import time
import uuid
from asyncio import CancelledError

import numpy as np
from distributed import secede

from ..kernels import P_ETA0
from ..penalties import penalty_value
from ..replica import Replica
from .adaptive import RuleSteps, _grads
from .driver import (
    FitResult,
    WorkerLost,
    _EarlyStopping,
    _release,
    _Run,
    adapt_after_stall,
    halve_if_rose,
    lost_workers,
    svrg_step,
)
from .loop import (
    _check_finite,
    _row_counts,
    _sweep_sgd,
    _sweep_svrg,
    bind_servers,
    snapshot_chunk,
)

logger = logging.getLogger("dask_asyncopt")

#: Seconds a loop of a barrier-free fit sleeps while it is an epoch ahead of the
#: driver's history (small data only: there a loop outruns the driver's reads).
GATE_WAIT = 0.001

#: In a fit without barriers a loop waits while it has made more than this many
#: passes over its rows per pass of the slowest loop (plus one): plain SGD
#: over-fits the rows it sees most, and without a bound a straggler's shard is
#: left behind (measured, 200k x 50k L1, one of 2 workers 4x slower, 8 epochs:
#: unbounded, the fast loop took 86-87% of the samples and ended 3.0-3.7% above
#: sync's objective; with 4, 80% and 0.8-1.3%, still 3.2-3.4x faster than sync).
MAX_LEAD = 4.0

#: A loop takes at least this fraction of its own shard per epoch, even when the
#: others' progress already completes the epoch (on short epochs the loop that
#: starts first would otherwise take all of it).
MIN_SHARE = 0.25


def passive_ranks(n_loops):
    """Ranks that only answer exchanges: the even ones.

    Examples
    --------
    >>> passive_ranks(5)
    [0, 2, 4]
    """
    return list(range(0, n_loops, 2))


def peer_schedule(rank, n_loops):
    """Passive peers an active ``rank`` averages with, in order (then repeats).

    Examples
    --------
    >>> peer_schedule(1, 5), peer_schedule(3, 5)
    ([0, 2, 4], [2, 4, 0])
    """
    passives = passive_ranks(n_loops)
    if rank % 2 == 0 or not passives:
        return []
    start = (rank // 2) % len(passives)
    return passives[start:] + passives[:start]


class Gossip:
    """The active side of a loop's exchanges: peers in turn, one call in flight.

    Parameters
    ----------
    me : Replica
        This loop's replica (in this process).
    handles : list
        Call handles of every replica (``bind_servers``).
    rank, n_loops : int
    timeout : float
        Longest an exchange may stay unanswered.
    """

    def __init__(self, me, handles, rank, n_loops, timeout):
        self.me = me
        self.handles = handles
        self.peers = peer_schedule(rank, n_loops)
        self.turn = 0
        self.timeout = timeout
        self.pending = None
        self.sent_at = 0.0
        self.n_sent = 0
        self.wait_time = 0.0

    def tick(self):
        """Apply an arrived reply; start the next exchange if none is in flight."""
        if not self.peers:
            return
        if self.pending is not None:
            if not self.pending.done():
                if time.perf_counter() - self.sent_at > self.timeout:
                    raise TimeoutError(f"an exchange was not answered within "
                                       f"{self.timeout} s (a peer is lost or stalled)")
                return
            self._absorb(self.pending.result(self.timeout))
        peer = self.peers[self.turn % len(self.peers)]
        self.turn += 1
        values, known = self.me.outgoing()
        self.sent_at = time.perf_counter()
        self.pending = self.handles[peer].call("exchange", values, known)
        self.n_sent += 1
        if self.pending.done():  # a replica in this process answers at once
            self._absorb(self.pending.result())

    def finish(self):
        """Wait for the exchange in flight, if any, and apply its reply."""
        if self.pending is not None:
            tick = time.perf_counter()
            reply = self.pending.result(self.timeout)
            self.wait_time += time.perf_counter() - tick
            self._absorb(reply)

    def _absorb(self, reply):
        self.pending = None
        d, known = reply
        self.me.absorb(d, known)


def _own(handles, rank):
    replica = getattr(handles[rank], "server", None)
    if replica is None:
        raise RuntimeError(f"replica {rank} is not in this worker's process")
    return replica


def _handles(actors):
    handles = bind_servers(actors, False)
    for h in handles:  # direct calls complete at once; give them done()
        if hasattr(h, "server"):
            h.call = _direct_call(h.server)
    return handles


def _direct_call(server):
    def call(method, *args, **kwargs):
        return _DoneFuture(getattr(server, method)(*args, **kwargs))
    return call


class _DoneFuture:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def done(self):
        return True

    def result(self, timeout=None):
        return self.value


def global_ids(chunk, n_blocks):
    """Global coordinates of a chunk's local weight vector (cached on the chunk).

    Shards number a chunk's coordinates by (block, index in block) with
    interleaved blocks: local run ``b`` holds global ``ids * n_blocks + b``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_asyncopt.shards import Chunk
    >>> chunk = Chunk(None, np.zeros((1, 1)), [np.array([0, 2]), None],
    ...               np.array([0, 2, 4]), -1)
    >>> global_ids(chunk, 2)
    array([0, 4, 1, 3])
    """
    gids = getattr(chunk, "gids", None)
    if gids is None:
        runs = []
        for b, ids in enumerate(chunk.block_ids):
            if ids is None:
                ids = np.arange(chunk.bounds[b + 1] - chunk.bounds[b])
            runs.append(np.asarray(ids, dtype=np.int64) * n_blocks + b)
        gids = np.concatenate(runs)
        chunk.gids = gids
    return gids


def run_gossip_epoch(shard, actors, config, rank, target):
    """One loop's epoch of AD-PSGD: sweep own chunks, step own replica, gossip.

    Parameters
    ----------
    shard : WorkerShard
    actors : list of Actor
        Every loop's replica, by rank.
    config : dict
        ``problem``, ``n_loops``, ``n_blocks``, ``timeout`` and ``svrg``
        (``None`` for plain proximal SGD).
    rank : int
    target : int
        Stop once all loops are known to have processed this many samples
        (cumulative over the fit) and this loop has taken at least
        :data:`MIN_SHARE` of its shard this epoch.

    Returns
    -------
    dict with the loss sum and count of this loop's samples, steps,
    exchanges started, time in kernels, waiting for replies and in total.
    """
    secede()
    handles = _handles(actors)
    me = _own(handles, rank)
    n_loops = config["n_loops"]
    gossip = Gossip(me, handles, rank, n_loops, config["timeout"])
    grad = config.get("grad")  # an update rule: minibatch gradients (module docstring)
    svrg = config.get("svrg") is not None or grad is not None  # counts, drift
    sweep = _sweep_svrg if svrg else _sweep_sgd
    # A replica's step schedule runs on its own sample count (stride 1): the
    # average of n replicas moves by the mean of their steps, so each takes the
    # steps a single SGD would (n x the shared-model step of asyb's loops).
    sweep_config = dict(config, n_loops=1)
    t_start = config.get("t_start", 0) // n_loops
    loss_sum, n_samples, steps, kernel_time = 0.0, 0, 0, 0.0
    min_rows = MIN_SHARE * shard.n_rows
    started = time.perf_counter()
    gate = config.get("gate")  # barrier-free fits: samples per epoch, see _sgd_epochs
    # values read and swept, and SVRG's packed rows, reused across chunks (see
    # kernels.step_replica)
    scratch = np.empty((2, 0, me.w.shape[1]))
    packed = np.empty((0, 2 * me.w.shape[1] + 2))
    while True:
        known = me.total_known()
        if me.halted or me.stopped or (known >= target and n_samples >= min_rows):
            break
        if gate is not None and (known >= (me.recorded + 1) * gate or _ahead(me, n_loops, gate)):
            gossip.tick()  # an active loop learns the others' progress from replies
            time.sleep(GATE_WAIT)
            continue
        if me.params is not None and me.params is not sweep_config["problem"]["params"]:
            sweep_config["problem"] = dict(sweep_config["problem"], params=me.params)
        chunk, rows = shard.next_chunk()
        gids = global_ids(chunk, config["n_blocks"])
        n_local = gids.shape[0]
        if scratch.shape[1] < n_local:
            scratch = np.empty((2, n_local, me.w.shape[1]))
            packed = np.empty((n_local, packed.shape[1]))
        w0, w = scratch[0, :n_local], scratch[1, :n_local]
        read = me.read(gids, svrg, out=w0)
        # _sweep_* take one reply per block: (values, version, samples, drift, counts)
        reply = (w0, read[1], known) + tuple(read[2:])
        tick = time.perf_counter()
        if grad is not None:
            chunk_loss, ptr, idx, g, pen, out_rows = _grads(chunk, rows, w0, [reply], config)
            kernel_time += time.perf_counter() - tick
            _check_finite(chunk_loss, g)
            me.apply_grads(gids[idx], ptr, g, pen, out_rows, read[1])
        else:
            w[:] = w0
            chunk_loss, prox_d, prox_s = sweep(chunk, rows, w, [reply], t_start + me.own(),
                                               dict(sweep_config, packed=packed[:n_local]))
            delta = np.subtract(w, w0, out=w)
            seconds = time.perf_counter() - tick
            kernel_time += seconds
            _check_finite(chunk_loss, delta)
            me.step(gids, delta, prox_d, prox_s, chunk.n_rows, read[1], chunk_loss, seconds)
        gossip.tick()
        loss_sum += chunk_loss
        n_samples += chunk.n_rows
        steps += 1
    gossip.finish()
    return {"worker": rank, "loss_sum": loss_sum, "samples": n_samples, "steps": steps,
            "exchanges": gossip.n_sent, "wait_time": gossip.wait_time,
            "kernel_time": kernel_time, "wall_time": time.perf_counter() - started}


def run_gossip_snapshot(shard, actors, config, rank, first):
    """Snapshot pass of one loop at its replica (the average, set by the driver).

    Keeps each chunk's row derivatives for the next epoch and adds the
    shard's gradient sum (and, when ``first``, its row counts) to every
    replica.

    Parameters
    ----------
    shard : WorkerShard
    actors : list of Actor
    config : dict
    rank : int
    first : bool

    Returns
    -------
    dict with the loss sum at the snapshot, rows, largest squared row norm,
    kernel and wall time.
    """
    secede()
    handles = _handles(actors)
    me = _own(handles, rank)
    prob = config["problem"]
    full = me.read(None)[0]
    grad = np.zeros_like(full)
    counts = np.zeros(full.shape[0], dtype=np.int64) if first else None
    loss_sum, n_rows, max_sq_norm, kernel_time = 0.0, 0, 0.0, 0.0
    started = time.perf_counter()
    for chunk in shard.chunks:
        gids = global_ids(chunk, config["n_blocks"])
        tick = time.perf_counter()
        wg = np.empty((gids.shape[0], 2 * full.shape[1]))
        wg[:, :full.shape[1]] = full[gids]
        g, chunk_loss, sq_norm = snapshot_chunk(chunk, wg, prob)
        kernel_time += time.perf_counter() - tick
        grad[gids] += g
        if first:
            counts[gids] += _row_counts(chunk)
        loss_sum += chunk_loss
        n_rows += chunk.n_rows
        max_sq_norm = max(max_sq_norm, sq_norm)
    calls = [h.call("add_snapshot", grad, counts) for h in handles]
    for c in calls:
        c.result(config["timeout"])
    return {"worker": rank, "loss_sum": loss_sum, "samples": n_rows,
            "max_sq_norm": max_sq_norm, "kernel_time": kernel_time,
            "wall_time": time.perf_counter() - started}


def run_gossip_rounds(actors, rank, n_rounds, seed, scale=1.0, timeout=30.0):
    """Many short gossip rounds with random local steps (tests, measurements).

    Each round applies a random step (normal, times ``scale``) to a random
    tenth of this loop's replica, then :meth:`Gossip.tick`, or, on an active
    loop, waits for the exchange in flight first (every round averages once);
    the loop ends with :meth:`Gossip.finish`.

    Parameters
    ----------
    actors : list of Actor
    rank, n_rounds, seed : int
    scale : float
    timeout : float

    Returns
    -------
    dict with the sum of the deltas applied, exchanges started and the time.
    """
    secede()
    handles = _handles(actors)
    me = _own(handles, rank)
    gossip = Gossip(me, handles, rank, len(actors), timeout)
    rng = np.random.default_rng(seed)
    n_coords, n_outputs = me.w.shape
    applied = np.zeros((n_coords, n_outputs))
    started = time.perf_counter()
    for _ in range(n_rounds):
        ids = np.unique(rng.integers(0, n_coords, size=max(1, n_coords // 10)))
        delta = scale * rng.normal(size=(ids.shape[0], n_outputs))
        version = me.read(ids)[1]
        me.step(ids, delta, 1.0, 0.0, 1, version)
        applied[ids] += delta
        gossip.finish()
        gossip.tick()
    gossip.finish()
    return {"applied": applied, "exchanges": gossip.n_sent,
            "time": time.perf_counter() - started}


def _consensus(values):
    """The replicas' mean and ``sqrt(mean_i |x_i - mean|^2)``."""
    mean = np.mean(values, axis=0)
    return mean, float(np.sqrt(np.mean([np.sum((v - mean) ** 2) for v in values])))


class _ReplicaRun(_Run):
    """A fit's handles when the actors are replicas."""

    mean = None  # the last consensus: what checkpoints keep

    def call_blocks(self, method, *args):
        if method == "coefficients":  # the driver's checkpoints: the consensus model
            return [self.mean]
        return super().call_blocks(method, *args)

    def call_all(self, method, *args):
        calls = [getattr(a, method)(*args) for a in self.actors]
        return [c.result(self.settings.timeout) for c in calls]

    def average(self):
        """Average all replicas and write the mean back (with every loop's exact
        progress); return the mean, the consensus distance before, the
        replicas' statistics and the samples processed this fit."""
        values = self.call_all("values")
        mean, distance = _consensus(values)
        stats = self.call_all("stats")
        known = np.array([s["samples"] for s in stats], dtype=np.int64)
        self.call_all("assign", mean, known)
        self.mean = mean
        total = int(known.sum())
        for s in stats:  # the history's "samples" column: all loops, all fits
            s["samples"] = self.config["t_start"] + total
        return mean, distance, stats, total


def fit_replicas(client, shards, loop_workers, n_samples, problem, settings, init=None,
                 t_start=0):
    """Minimise ``problem`` with AD-PSGD (same arguments as ``fit_blocks``).

    Under variance reduction the loops' sampling is not uniform when their
    speeds differ (a fast loop re-visits its shard), but the variance-reduced
    direction ``grad f_r(x) - grad f_r(x~) + grad F(x~)`` equals ``grad F(x*)``
    at ``x = x~ = x*`` whatever the row distribution, so the fixed point is
    still the exact optimum; only the rate changes.  Plain SGD has no such
    anchor: there the skew shifts its iterates within an epoch.

    Returns
    -------
    FitResult
    """
    n_loops = len(shards)
    n_coords = problem.n_features + int(problem.fit_intercept)
    token = uuid.uuid4().hex[:8]
    intercept = problem.n_features if problem.fit_intercept else -1
    workers = sorted(client.nthreads())
    replicas = []
    run = _ReplicaRun(client, shards, loop_workers, settings, token)
    try:
        for i, addr in enumerate(loop_workers):
            replicas.append(client.submit(
                Replica, i, n_loops, n_coords, problem.n_outputs, intercept, init,
                copy.deepcopy(problem.rule), problem.alpha, problem.l1_ratio,
                actor=True, workers=[addr], key=f"asyncopt-replica-{i}-{token}"))
        run.actors = client.gather(replicas)
        run.config = {"problem": problem.kernel_args(), "n_loops": n_loops,
                      "n_blocks": settings.n_blocks, "timeout": settings.timeout,
                      "svrg": None, "t_start": t_start}
        epochs = _svrg_epochs if problem.svrg is not None else _sgd_epochs
        if problem.rule is not None:
            epochs = _rule_epochs
        total, mean = epochs(run, n_samples, problem)
        if not np.isfinite(mean).all():
            raise FloatingPointError("the coefficients became non-finite: lower eta0")
        coef = mean[:problem.n_features]
        icpt = mean[problem.n_features] if problem.fit_intercept else np.zeros(
            problem.n_outputs)
        return FitResult(coef, icpt, run.history, len(run.history), t_start + total)
    except (Exception, CancelledError) as exc:  # Dask cancels the lost worker's futures
        lost = lost_workers(client, workers)
        if lost:
            raise WorkerLost(lost, run.checkpoint, run.history) from exc
        raise
    finally:
        _release(client, replicas, run.loops)


def _extra(distance, reports):
    loops = [r for r in reports if "exchanges" in r]  # not the snapshot reports
    taken = sum(r["samples"] for r in loops)
    return {"consensus_distance": distance,
            "exchanges": sum(r["exchanges"] for r in loops),
            "loop_shares": tuple(r["samples"] / max(taken, 1) for r in loops)}


def _sgd_epochs(run, n_samples, problem):
    """Plain proximal SGD: one task per loop for the whole fit, no barrier.

    Without a snapshot pass nothing needs the replicas at one point between
    epochs, so the loops run all epochs in one go (a straggler then costs only
    its share of samples, never a wait at every epoch's end).  The driver
    polls the replicas' exact sample counts and, each time their total
    crosses another epoch's worth, records that epoch's row from the replicas
    as they are: their mean (what a checkpoint keeps), the consensus
    distance, the progressive loss of the samples since the previous row.
    Then it moves every replica to that mean by a shift (:meth:`Replica.shift`,
    sum-preserving, the loops' steps since the read are kept): with a
    straggling active loop few exchanges happen, and without this global
    average the replicas drift apart (measured, 200k x 50k L1, one of 2
    workers 4x slower, 8 epochs: +2.8% objective vs sync without it, +0.5%
    with it).  Weighting each loop's steps by its share of the rows over its
    share of the samples did worse (+2.7% to +3.8%): a straggler's few
    steps, scaled up ~3x, land on a stale replica.

    Early stopping halts the loops; ``learning_rate="adaptive"`` sends the
    divided step to every replica.  The last row waits for the loops to end,
    so it describes the returned model.
    """
    settings = run.settings
    first = settings.first_epoch
    # A loop that knows the samples of an epoch beyond the last recorded one are
    # done waits for the driver (only with small data does the driver fall behind):
    # every row's window then holds about an epoch of samples.
    run.config = dict(run.config, gate=n_samples)
    loops = run.start_loops(run_gossip_epoch, "adpsgd-loop", first,
                            (settings.max_iter - first + 1) * n_samples)
    progress = _Progress(run.actors)
    try:
        return _record_while_running(run, n_samples, problem, loops, progress)
    finally:
        progress.close(min(settings.timeout, 10.0))


def _record_while_running(run, n_samples, problem, loops, progress):
    """The driver's side of :func:`_sgd_epochs`: rows, shifts, early stopping."""
    settings = run.settings
    stopping = _EarlyStopping(settings.tol, settings.n_iter_no_change)
    params = problem.params
    first = settings.first_epoch
    before = np.zeros(len(loops), dtype=np.int64)  # each loop's samples at the last row
    last_row = time.perf_counter()
    for epoch in range(first, settings.max_iter + 1):
        _wait_for_samples(run, loops, progress, (epoch - first + 1) * n_samples)
        if epoch == settings.max_iter:
            run.call_all("halt")
            run.gather_loops()
        stats, values = zip(*run.call_all("report"), strict=True)
        mean, distance = _consensus(values)
        if run.loops:  # to the mean, and let loops waiting for this row go on
            calls = [a.shift(mean - v, epoch - first + 1)
                     for a, v in zip(run.actors, values, strict=True)]
            for c in calls:
                c.result(settings.timeout)
        run.mean = mean
        now = time.perf_counter()
        done = np.array([s["samples"] for s in stats], dtype=np.int64)
        reports = [{"wall_time": now - last_row, "kernel_time": s["kernel_time"],
                    "exchanges": s["sent"], "samples": int(d), "loss_sum": s["loss_sum"]}
                   for s, d in zip(stats, done - before, strict=True)]
        before, last_row = done, now
        for s in stats:  # the history's "samples" column: all loops, all fits
            s["samples"] = run.config["t_start"] + int(done.sum())
        loss = sum(r["loss_sum"] for r in reports) / max(sum(r["samples"] for r in reports), 1)
        watched = run.record(epoch, reports, stats, loss, loss + _penalty(mean, problem),
                             float(params[P_ETA0]), extra=_extra(distance, reports))
        if stopping.stalled(watched):
            params = adapt_after_stall(run, problem, params, stopping)
            if params is None:
                break
            run.call_all("set_params", params)
    if run.loops:  # stopped early: let the loops finish their chunk
        run.call_all("halt")
        run.gather_loops()
    stats, values = zip(*run.call_all("report"), strict=True)
    return int(sum(s["samples"] for s in stats)), _consensus(values)[0]


#: Seconds between the driver's reads of the replicas' progress in a fit
#: without barriers (a read costs each worker one small actor call).
POLL_INTERVAL = 0.01


def _ahead(me, n_loops, n_samples):
    """Whether this loop is more than :data:`MAX_LEAD` times (plus one pass) as
    far through its rows as the slowest loop it knows of (shards taken as
    equal: ``n_samples / n_loops`` rows each)."""
    passes = me.known * (n_loops / n_samples)
    return passes[me.rank] > MAX_LEAD * passes.min() + 1.0


class _Progress:
    """The replicas' sample counts, read without waiting: a replica that has not
    answered yet (say its process is stopped) counts with its last answer, so
    a straggler delays neither the driver nor, through it, the others."""

    def __init__(self, actors):
        self.actors = actors
        self.counts = [0] * len(actors)
        self.pending = [a.progress() for a in actors]

    def total(self):
        for i, call in enumerate(self.pending):
            if call.done():
                self.counts[i] = call.result()
                self.pending[i] = self.actors[i].progress()
        return sum(self.counts)

    def close(self, timeout):
        """Collect the calls still in flight: no actor future outlives the fit
        (one left pending until garbage collection was the suspect of a hang)."""
        for call in self.pending:
            try:
                call.result(timeout)
            except Exception:  # noqa: BLE001 - a lost replica: the fit already failed
                pass
        self.pending = []


def _wait_for_samples(run, loops, progress, target):
    """Block until the loops have processed ``target`` samples in all, or ended
    (a loop's error is raised here)."""
    while True:
        if any(f.status == "error" for f in loops) or all(f.done() for f in loops):
            run.gather_loops()  # raises a loop's error
            return
        if progress.total() >= target:
            return
        time.sleep(POLL_INTERVAL)


def _svrg_epochs(run, n_samples, problem):
    settings = run.settings
    stopping = _EarlyStopping(settings.tol, settings.n_iter_no_change)
    reports = run.run_loops(run_gossip_snapshot, "adpsgd-snapshot", 0, True)
    mean = run.call_all("values")[0]
    previous = _objective(reports, n_samples, mean, problem)[1]
    step = svrg_step(problem, reports)
    # The average of n replicas moves by the mean of their steps: each replica
    # steps n times as far as a loop of the shared-model solvers (measured, 3 loops,
    # L1: gap 1.3e-3 after 13 epochs with the shared-model step, 5e-5 after 10).
    step *= run.config["n_loops"]
    total = 0
    for epoch in range(settings.first_epoch, settings.max_iter + 1):
        run.config["svrg"] = {"eta": step, "alpha": problem.alpha,
                              "l1_ratio": problem.l1_ratio, "n_samples": n_samples,
                              "normalise": False}
        mean, total, objective, watched = _gossip_epoch_then_snapshot(
            run, epoch, n_samples, problem, step)
        if stopping.stalled(watched):
            break
        step, previous = halve_if_rose(step, previous, objective), objective
    return total, mean


def _gossip_epoch_then_snapshot(run, epoch, n_samples, problem, step):
    """One epoch with a snapshot: the gossip loops, the consensus average, a
    snapshot pass at it (exact objective) and the history row.  Returns the
    mean, the samples so far, the objective and what early stopping watches."""
    reports = run.run_loops(run_gossip_epoch, "adpsgd-loop", epoch,
                            (epoch - run.settings.first_epoch + 1) * n_samples)
    mean, distance, stats, total = run.average()
    run.call_all("reset_snapshot")
    snapshot = run.run_loops(run_gossip_snapshot, "adpsgd-snapshot", epoch, False)
    loss, objective = _objective(snapshot, n_samples, mean, problem)
    watched = run.record(epoch, reports + snapshot, stats, loss, objective, step,
                         extra=_extra(distance, reports))
    return mean, total, objective, watched


def _rule_epochs(run, n_samples, problem):
    """Epochs of an update rule on every replica (``optimizer="amsgrad"``).

    As :func:`~dask_asyncopt.solvers.adaptive.rule_epochs`: a snapshot pass
    first (row counts for the penalty weights; with variance reduction the
    SVRG snapshot), then per epoch the gossip loops sending minibatch
    gradients to their own replica, the consensus average and a snapshot pass
    at it, which also gives the exact objective; the step follows
    :class:`~dask_asyncopt.solvers.adaptive.RuleSteps`.
    """
    settings = run.settings
    vr = problem.svrg is not None
    reports = run.run_loops(run_gossip_snapshot, "adpsgd-snapshot", 0, True)
    mean = run.call_all("values")[0]
    steps = RuleSteps(problem.rule.lr, vr, _EarlyStopping(settings.tol, settings.n_iter_no_change),
                      _objective(reports, n_samples, mean, problem)[1])
    run.config["grad"] = {"vr": vr, "batch": problem.rule_options["batch"],
                          "n_samples": n_samples}
    total = 0
    for epoch in range(settings.first_epoch, settings.max_iter + 1):
        lr = steps.lr
        mean, total, objective, watched = _gossip_epoch_then_snapshot(
            run, epoch, n_samples, problem, lr)
        new_lr = steps.next(epoch, objective, watched)
        if new_lr is None:
            break
        if new_lr != lr:
            run.call_all("set_lr", new_lr)
    return total, mean


def _penalty(mean, problem):
    return penalty_value(mean[:problem.n_features], problem.alpha, problem.l1_ratio)


def _objective(reports, n_samples, mean, problem):
    loss = sum(r["loss_sum"] for r in reports) / n_samples
    return loss, loss + _penalty(mean, problem)
