"""AD-PSGD: asynchronous decentralised training over model replicas.

Every worker loop owns a :class:`~dask_asyncopt.store.replicas.Replica` on its own
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
applies them (:meth:`~dask_asyncopt.store.replicas.Replica.apply_grads`).  Gossip
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
import math
import time
import uuid
from dataclasses import replace

import numpy as np
from distributed import secede

from ..kernels.sweeps import P_EPSILON
from ..objective.losses import curvature_sums
from ..objective.penalties import sparse_penalty_scale
from ..objective.schedules import ADAPTIVE
from ..objective.schedules import svrg_step as base_svrg_step
from ..store.replicas import Replica
from .config import GradOptions, LoopConfig, PassReport, SVRGStep, kernel_args
from .gradients import minibatch_gradients
from .handles import bind, remote_calls
from .loop import (
    NORMALISED_SQ_NORM,
    check_finite,
    column_stats,
    snapshot_chunk,
    sweep_packed,
    sweep_sgd,
)
from .run import (
    EpochResult,
    Run,
    drive,
    epochs_result,
    layout_key,
    on_cluster,
    stopping,
    store_columns,
)
from .steps import (
    HalvingSteps,
    ObjectiveTrail,
    RuleSteps,
    ScheduleSteps,
    certifies,
    duality_gap,
)

#: Seconds a loop of a barrier-free fit sleeps while it is an epoch ahead of the
#: driver's history (small data only: there a loop outruns the driver's reads).
GATE_WAIT = 0.001

#: In a fit without barriers a loop waits while it has made more than this many
#: passes over its rows per pass of the slowest loop (plus one): plain SGD
#: over-fits the rows it sees most, and without a bound a straggler's shard is
#: left behind: with one of two workers 4x slower, unbounded, the fast loop took
#: most of the samples and the fit ended percents above sync's objective; a bound
#: of 4 keeps it within about 1% and still several times faster than sync.
MAX_LEAD = 4.0

#: A loop takes at least this fraction of its own shard per epoch, even when the
#: others' progress already completes the epoch (on short epochs the loop that
#: starts first would otherwise take all of it).
MIN_SHARE = 0.25

#: The stopping rule reads the rate of the average's exact objective from its
#: decreases over this many epochs (:func:`~.steps.extrapolated_gap`): one
#: epoch's decrease is noisy under gossip and, read epoch by epoch, the rate
#: looked fast by chance and stopped fits on click-through data at twice ``tol``.
RATE_SPAN = 4

#: Seconds between the driver's reads of the replicas' progress in a fit
#: without barriers (a read costs each worker one small call).
POLL_INTERVAL = 0.01


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
    handles : list of Handle
        Every replica, by rank.
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
        self.me.absorb(reply.delta, reply.known)


def own_replica(handles, rank):
    """This loop's replica: it lives on the loop's own worker."""
    replica = handles[rank].obj
    if replica is None:
        raise RuntimeError(f"replica {rank} is not in this worker's process")
    return replica


def global_ids(chunk, n_blocks):
    """Global coordinates of a chunk's local weight vector (cached on the chunk).

    Shards number a chunk's coordinates by (block, index in block) with
    interleaved blocks: local run ``b`` holds global ``ids * n_blocks + b``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_asyncopt.data.shards import Chunk
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


def _sweep_svrg(chunk, rows, w, read, config, packed):
    """Variance-reduced steps on ``w`` (in place) from a replica's read carrying the
    drift, row counts and preconditioner (the blocks' normalised, preconditioned
    steps; a user's constant step is taken as given).  ``packed`` is the work
    array of the packed rows."""
    n_outputs = w.shape[1]
    pen_scale = getattr(chunk, "pen_scale", None)
    if pen_scale is None:  # row counts never change within a fit: once per chunk
        pen_scale = sparse_penalty_scale(config.svrg.n_samples, read.counts, chunk.intercept)
        chunk.pen_scale = pen_scale
    # weights | drift | penalty scale | precond, side by side (see sweep_csr_svrg)
    packed[:, :n_outputs] = w
    packed[:, n_outputs:2 * n_outputs] = read.drift
    packed[:, 2 * n_outputs] = pen_scale
    packed[:, 2 * n_outputs + 1] = read.precond if config.svrg.normalise else 1.0
    loss = sweep_packed(chunk, rows, packed, config, config.svrg.normalise)
    w[:] = packed[:, :n_outputs]
    return loss, 1.0, 0.0  # identity prox at the replica: already applied


def run_gossip_epoch(shard, actors, config, rank, target):
    """One loop's epoch of AD-PSGD: sweep own chunks, step own replica, gossip.

    Parameters
    ----------
    shard : WorkerShard
    actors : list of Actor
        Every loop's replica, by rank.
    config : LoopConfig
        ``svrg`` (``None`` for plain proximal SGD) and ``grad`` (an update rule).
    rank : int
    target : int
        Stop once all loops are known to have processed this many samples
        (cumulative over the fit) and this loop has taken at least
        :data:`MIN_SHARE` of its shard this epoch.

    Returns
    -------
    PassReport
    """
    secede()
    handles = bind(actors, loop=rank, config=config)
    me = own_replica(handles, rank)
    n_loops = config.n_loops
    gossip = Gossip(me, handles, rank, n_loops, config.timeout)
    rule = config.grad is not None  # an update rule: minibatch gradients (module docstring)
    snapshot = config.svrg is not None or rule  # counts, drift
    # A replica's step schedule runs on its own sample count (stride 1): the
    # average of n replicas moves by the mean of their steps, so each takes the
    # steps a single SGD would (n x the shared-model step of asyb's loops).
    sweep_config = replace(config, n_loops=1)
    t_start = config.t_start // n_loops
    loss_sum, n_samples, steps, kernel_time = 0.0, 0, 0, 0.0
    min_rows = MIN_SHARE * shard.n_rows
    started = time.perf_counter()
    gate = config.gate  # barrier-free fits: samples per epoch, see Replicas.epoch
    # values read and swept, and SVRG's packed rows, reused across chunks (see
    # kernels.lazy.step_replica)
    work = np.empty((2, 0, me.w.shape[1]))
    packed = np.empty((0, 2 * me.w.shape[1] + 2))
    while True:
        known = me.total_known()
        if me.halted or me.stopped or (known >= target and n_samples >= min_rows):
            break
        if gate is not None and (known >= (me.recorded + 1) * gate or _ahead(me, n_loops, gate)):
            gossip.tick()  # an active loop learns the others' progress from replies
            time.sleep(GATE_WAIT)
            continue
        if me.params is not None and me.params is not sweep_config.kernel.params:
            sweep_config = replace(sweep_config, kernel=sweep_config.kernel._replace(
                params=me.params))
        chunk, rows = shard.next_chunk()
        gids = global_ids(chunk, config.n_blocks)
        n_local = gids.shape[0]
        if work.shape[1] < n_local:
            work = np.empty((2, n_local, me.w.shape[1]))
            packed = np.empty((n_local, packed.shape[1]))
        w0, w = work[0, :n_local], work[1, :n_local]
        read = me.read(gids, snapshot, out=w0)._replace(values=w0, samples=known)
        tick = time.perf_counter()
        if rule:
            chunk_loss, ptr, idx, g, pen, out_rows = minibatch_gradients(
                chunk, rows, w0, read.drift, sparse_penalty_scale(config.grad.n_samples,
                                                                  read.counts), config)
            kernel_time += time.perf_counter() - tick
            check_finite(chunk_loss, g)
            me.apply_grads(gids[idx], ptr, g, pen, out_rows, read.version)
        else:
            w[:] = w0
            if snapshot:
                chunk_loss, prox_d, prox_s = _sweep_svrg(chunk, rows, w, read, sweep_config,
                                                         packed[:n_local])
            else:
                chunk_loss, prox_d, prox_s = sweep_sgd(chunk, rows, w, t_start + me.own(),
                                                       sweep_config)
            delta = np.subtract(w, w0, out=w)
            seconds = time.perf_counter() - tick
            kernel_time += seconds
            check_finite(chunk_loss, delta)
            me.step(gids, delta, prox_d, prox_s, chunk.n_rows, read.version, chunk_loss,
                    seconds)
        gossip.tick()
        loss_sum += chunk_loss
        n_samples += chunk.n_rows
        steps += 1
    gossip.finish()
    return PassReport(rank, loss_sum, n_samples, kernel_time, time.perf_counter() - started,
                      steps=steps, exchanges=gossip.n_sent, wait_time=gossip.wait_time,
                      remote_calls=remote_calls(handles))


def run_gossip_snapshot(shard, actors, config, rank, first):
    """Snapshot pass of one loop at its replica (the average, set by the driver).

    Keeps each chunk's row derivatives for the next epoch and adds the
    shard's gradient sum (and, when ``first``, its row counts) to every
    replica.  Returns a :class:`~.config.PassReport` whose loss sum is the
    loss at the snapshot.
    """
    secede()
    handles = bind(actors, loop=rank, config=config)
    me = own_replica(handles, rank)
    full = me.read(None).values
    grad = np.zeros_like(full)
    counts = np.zeros(full.shape[0], dtype=np.int64) if first else None
    energy = np.zeros(full.shape[0]) if first else None
    loss_sum, n_rows, max_sq_norm, kernel_time = 0.0, 0, 0.0, 0.0
    curvature = np.zeros(full.shape[1])  # the stopping rule's (see Replicas.epoch)
    loss_code, _, params = config.kernel
    started = time.perf_counter()
    for chunk in shard.chunks:
        gids = global_ids(chunk, config.n_blocks)
        tick = time.perf_counter()
        wg = np.empty((gids.shape[0], 2 * full.shape[1]))
        wg[:, :full.shape[1]] = full[gids]
        g, chunk_loss, sq_norm = snapshot_chunk(chunk, wg, config)
        curvature += curvature_sums(loss_code, chunk.dsnap, chunk.W, params[P_EPSILON])
        kernel_time += time.perf_counter() - tick
        grad[gids] += g
        if first:
            chunk_counts, chunk_energy = column_stats(chunk)
            counts[gids] += chunk_counts
            energy[gids] += chunk_energy
        loss_sum += chunk_loss
        n_rows += chunk.n_rows
        max_sq_norm = max(max_sq_norm, sq_norm)
    calls = [h.call("add_snapshot", grad, None if counts is None else (counts, energy))
             for h in handles]
    for c in calls:
        c.result(config.timeout)
    return PassReport(rank, loss_sum, n_rows, kernel_time, time.perf_counter() - started,
                      max_sq_norm=max_sq_norm, remote_calls=remote_calls(handles),
                      curvature=curvature)


def run_gossip_rounds(actors, rank, n_rounds, seed, scale=1.0, timeout=30.0):
    """Many short gossip rounds with random local steps (tests, measurements).

    Each round applies a random step (normal, times ``scale``) to a random
    tenth of this loop's replica, then :meth:`Gossip.tick`, or, on an active
    loop, waits for the exchange in flight first (every round averages once);
    the loop ends with :meth:`Gossip.finish`.

    Returns
    -------
    dict with the sum of the deltas applied, exchanges started and the time.
    """
    secede()
    handles = bind(actors)
    me = own_replica(handles, rank)
    gossip = Gossip(me, handles, rank, len(actors), timeout)
    rng = np.random.default_rng(seed)
    n_coords, n_outputs = me.w.shape
    applied = np.zeros((n_coords, n_outputs))
    started = time.perf_counter()
    for _ in range(n_rounds):
        ids = np.unique(rng.integers(0, n_coords, size=max(1, n_coords // 10)))
        delta = scale * rng.normal(size=(ids.shape[0], n_outputs))
        version = me.read(ids).version
        me.step(ids, delta, 1.0, 0.0, 1, version)
        applied[ids] += delta
        gossip.finish()
        gossip.tick()
    gossip.finish()
    return {"applied": applied, "exchanges": gossip.n_sent,
            "time": time.perf_counter() - started}


def consensus(values):
    """The replicas' mean and ``sqrt(mean_i |x_i - mean|^2)``."""
    mean = np.mean(values, axis=0)
    return mean, float(np.sqrt(np.mean([np.sum((v - mean) ** 2) for v in values])))


def _ahead(me, n_loops, n_samples):
    """Whether this loop is more than :data:`MAX_LEAD` times (plus one pass) as
    far through its rows as the slowest loop it knows of (shards taken as
    equal: ``n_samples / n_loops`` rows each)."""
    passes = me.known * (n_loops / n_samples)
    return passes[me.rank] > MAX_LEAD * passes.min() + 1.0


def fit(client, shards, loop_workers, n_samples, problem, settings, init=None, t_start=0,
        kept=None, moments=None):
    """Minimise ``problem`` with AD-PSGD (same arguments as :func:`.blocks.fit`;
    kept replicas serve the next fit with as many loops on the same workers,
    each continuing from its own values).

    Under variance reduction the loops' sampling is not uniform when their
    speeds differ (a fast loop re-visits its shard), but the variance-reduced
    direction ``grad f_r(x) - grad f_r(x~) + grad F(x~)`` equals ``grad F(x*)``
    at ``x = x~ = x*`` whatever the row distribution, so the fixed point is
    still the exact optimum; only the rate changes.  Plain SGD has no such
    anchor: there the skew shifts its iterates within an epoch.
    """
    n_loops = len(shards)
    token = uuid.uuid4().hex[:8]
    intercept = problem.n_features if problem.fit_intercept else -1
    run = Run(client, shards, loop_workers, settings, token)
    futures = []
    key = ("replicas", settings.n_blocks, layout_key(problem), tuple(loop_workers),
           tuple(sorted(client.nthreads())))
    reuse = kept.take(client, key, init) if kept is not None else None

    def body():
        if reuse is not None:
            run.actors, run.channel = reuse
            run.call_blocks("begin")
        for i, addr in enumerate(loop_workers if reuse is None else ()):
            futures.append(client.submit(
                Replica, i, n_loops, problem.n_coords, problem.n_outputs, intercept, init,
                copy.deepcopy(problem.rule), problem.penalty, moments,
                actor=True, workers=[addr], key=f"asyncopt-replica-{i}-{token}"))
        if reuse is None:
            run.actors = run.connect(futures)
            if kept is not None:
                kept.keep(client, key, futures, run.actors, run.channel)
        run.config = LoopConfig(mode="gossip", kernel=kernel_args(problem),
                                penalty=problem.penalty, n_loops=n_loops,
                                timeout=settings.timeout, n_blocks=settings.n_blocks,
                                t_start=t_start, channel=run.channel)
        topology = Replicas(run, problem, n_samples, t_start)
        drive(run, topology)
        result = epochs_result(run, topology.mean, t_start + topology.total)
        if problem.rule is not None:
            # each replica keeps its own moments (module docstring): the next fit
            # starts every replica from their mean (vhat >= v holds for it too)
            per_replica = run.call_blocks("moments")
            result.moments = tuple(np.mean([r[k] for r in per_replica], axis=0)
                                   for k in range(len(per_replica[0])))
        if kept is not None:
            kept.model = result.model
        return result

    return on_cluster(client, run, futures, body, kept)


class Replicas:
    """The driver's side of an AD-PSGD fit (see :func:`~.run.drive`).

    Plain proximal SGD runs one task per loop for the whole fit, without
    barriers: nothing needs the replicas at one point between epochs, so a
    straggler costs only its share of samples, never a wait at every epoch's
    end.  The driver polls the replicas' exact sample counts and, each time
    their total crosses another epoch's worth, records that epoch's row from
    the replicas as they are: their mean (what a checkpoint keeps), the
    consensus distance, the progressive loss of the samples since the previous
    row.  Then it moves every replica to that mean by a shift
    (:meth:`Replica.shift`, sum-preserving, the loops' steps since the read
    are kept): with a straggling active loop few exchanges happen, and without
    this global average the replicas drift apart (the objective ends percents
    above sync's).  Weighting each loop's steps by its share of the rows over
    its share of the samples did worse: a straggler's few steps, scaled up,
    land on a stale replica.

    Variance-reduced and rule fits need every replica at one point for the
    snapshot pass: there each epoch is a task per loop, then the driver
    averages all replicas, writes the mean back and runs a snapshot pass at it
    (the exact objective).  That average is what the fit returns, so the
    stopping rule measures its gap to the optimum as the blocks' fits do
    (:func:`~.steps.certifies`): the duality gap from a replica's full gradient
    and the extrapolated decrease of the average's exact objectives.
    """

    def __init__(self, run, problem, n_samples, t_start):
        self.run = run
        self.problem = problem
        self.n_samples = n_samples
        self.total = 0  # samples of this fit, all loops
        self.mean = None
        self.kind = ("rule" if problem.rule is not None else
                     "svrg" if problem.svrg is not None else "sgd")
        self.step = None
        self.before = None
        self.trail = ObjectiveTrail(RATE_SPAN)

    def certifies(self):
        """Whether the stopping rule measures the gap to the optimum
        (:func:`~.steps.certifies`)."""
        return certifies(self.run.settings, self.kind == "svrg", self.problem.penalty.alpha)

    def policy(self):
        stop = stopping(self.run.settings, self.certifies())
        if self.kind == "sgd":
            return ScheduleSteps(self.problem.schedule.eta0,
                                 self.problem.schedule.kind == ADAPTIVE, stop)
        if self.kind == "svrg":
            return HalvingSteps(stop, self.step, self.before)
        return RuleSteps(self.problem.rule.lr, self.problem.svrg is not None, stop, self.before)

    # ------------------------------------------------------------------ start
    def start(self, first, last):
        run, n = self.run, self.n_samples
        if self.kind == "sgd":
            self.step = self.problem.schedule.eta0
            # A loop that knows the samples of an epoch beyond the last recorded one
            # are done waits for the driver (only with small data does the driver
            # fall behind): every row's window then holds about an epoch of samples.
            run.config = replace(run.config, gate=n)
            run.start_loops(run_gossip_epoch, "adpsgd-loop", first, (last - first + 1) * n)
            self._progress = _Progress(run.handles())
            self._counted = np.zeros(len(run.shards), dtype=np.int64)
            self._last_row = time.perf_counter()
            return
        reports = run.run_loops(run_gossip_snapshot, "adpsgd-snapshot", 0, True)
        self.mean = run.call_blocks("values")[0]
        self.before = self._objective(reports, self.mean)[1]
        if self.kind == "svrg":
            # the blocks' preconditioned steps, normalised per row (a user's constant
            # step as given)
            step = base_svrg_step(self.problem.svrg.smoothness, self.problem.svrg.step,
                                  NORMALISED_SQ_NORM)
            # The average of n replicas moves by the mean of their steps: each replica
            # steps n times as far as a loop of the shared-model solvers (measured, 3
            # loops, L1: gap 1.3e-3 after 13 epochs with the shared-model step, 5e-5
            # after 10).
            self.step = step * len(run.shards)
        else:
            self.step = self.problem.rule.lr
            run.call_blocks("scale_steps")
            run.config = replace(run.config, grad=GradOptions(
                self.problem.svrg is not None, run.settings.gradient_rows, n))

    # ------------------------------------------------------------------ epochs
    def epoch(self, epoch):
        if self.kind == "sgd":
            return self._epoch_without_barrier(epoch)
        run, n = self.run, self.n_samples
        self.kept = self.mean  # the iterate this epoch starts from (see rollback)
        if self.kind == "svrg":
            run.config = replace(run.config, svrg=SVRGStep(
                n, self.problem.svrg.smoothness, self.problem.svrg.step,
                self.problem.svrg.step is None, self.problem.fit_intercept, eta=self.step))
        reports = run.run_loops(run_gossip_epoch, "adpsgd-loop", epoch,
                                (epoch - run.settings.first_epoch + 1) * n)
        mean, distance, stats = self._average()
        run.call_blocks("reset_snapshot")
        snapshot = run.run_loops(run_gossip_snapshot, "adpsgd-snapshot", epoch, False)
        loss, objective = self._objective(snapshot, mean)
        result = self._result(epoch, reports, reports + snapshot, stats, loss, objective,
                              distance)
        if self.certifies():
            # every replica holds the average and the full gradient: ask the first
            terms = run.handles()[0].call("gap_terms", n).result(run.settings.timeout)
            result.gap_bound = duality_gap(self.problem.penalty, [terms], loss,
                                           objective - loss,
                                           sum(r.curvature for r in snapshot) / n)
            result.gap_estimate = self.trail.add(objective)
            result.row["gap_bound"] = result.gap_bound
            result.row["gap_estimate"] = (math.nan if result.gap_estimate is None
                                          else result.gap_estimate)
        return result

    def _epoch_without_barrier(self, epoch):
        run = self.run
        settings = run.settings
        self._wait_for_samples((epoch - settings.first_epoch + 1) * self.n_samples)
        if epoch == settings.max_iter:
            run.call_blocks("halt")
            run.gather_loops()
        stats, values = zip(*run.call_blocks("report"), strict=True)
        mean, distance = consensus(values)
        if run.loops:  # to the mean, and let loops waiting for this row go on
            calls = [h.call("shift", mean - v, epoch - settings.first_epoch + 1)
                     for h, v in zip(run.handles(), values, strict=True)]
            for c in calls:
                c.result(settings.timeout)
        self.mean = mean
        now = time.perf_counter()
        done = np.array([s.samples for s in stats], dtype=np.int64)
        reports = [PassReport(s.block, s.loss_sum, int(d), s.kernel_time, now - self._last_row,
                              exchanges=s.sent, remote_calls=s.sent)
                   for s, d in zip(stats, done - self._counted, strict=True)]
        self._counted, self._last_row = done, now
        self.total = int(done.sum())
        stats = [replace(s, samples=run.config.t_start + self.total) for s in stats]
        loss = sum(r.loss_sum for r in reports) / max(sum(r.samples for r in reports), 1)
        return self._result(epoch, reports, reports, stats, loss,
                            loss + self.problem.penalty.value(mean[:self.problem.n_features]),
                            distance)

    def _result(self, epoch, loops, passes, stats, loss, objective, distance):
        taken = sum(r.samples for r in loops)
        columns = store_columns(stats, passes, sum(r.remote_calls for r in passes)
                                + self.run.driver_calls())
        row = {"samples": max(s.samples for s in stats), "updates": columns.pop("updates"),
               "loss": loss, "objective": objective, "eta0": self.step, **columns,
               "consensus_distance": distance, "exchanges": sum(r.exchanges for r in loops),
               "loop_shares": tuple(r.samples / max(taken, 1) for r in loops)}
        return EpochResult(
            row, objective, row["samples"], self.step, None,
            log=(f"objective {objective:.6g}, {time.perf_counter() - self.run.started:.3g} s, "
                 f"consensus distance {distance:.3g}, "
                 f"compute {100 * row['compute_fraction']:.0f}%"),
            diverged=(f"the objective became {objective} at epoch {epoch}: the step size is "
                      "too large; lower eta0 (or raise alpha with learning_rate='optimal'), "
                      "or scale features, targets or sample weights far from 1"))

    def _wait_for_samples(self, target):
        """Block until the loops have processed ``target`` samples in all, or ended
        (a loop's error is raised here)."""
        run = self.run
        while True:
            loops = run.loops
            if any(f.status == "error" for f in loops) or all(f.done() for f in loops):
                run.gather_loops()  # raises a loop's error
                return
            if self._progress.total() >= target:
                return
            time.sleep(POLL_INTERVAL)

    def _average(self):
        """Average all replicas and write the mean back (with every loop's exact
        progress); return the mean, the consensus distance before, and the
        replicas' statistics (``samples``: all loops, all fits)."""
        run = self.run
        values = run.call_blocks("values")
        mean, distance = consensus(values)
        stats = run.call_blocks("stats")
        known = np.array([s.samples for s in stats], dtype=np.int64)
        run.call_blocks("assign", mean, known)
        self.mean = mean
        self.total = int(known.sum())
        stats = [replace(s, samples=run.config.t_start + self.total) for s in stats]
        return mean, distance, stats

    def _objective(self, reports, mean):
        loss = sum(r.loss_sum for r in reports) / self.n_samples
        return loss, loss + self.problem.penalty.value(mean[:self.problem.n_features])

    # ------------------------------------------------------------ between
    def rollback(self, epoch, final):
        """Undo ``epoch``: every replica back at the consensus the epoch started
        from; unless the fit ends here, the snapshot is taken there again."""
        run = self.run
        run.call_blocks("assign", self.kept)
        self.mean = self.kept
        if not final:
            run.call_blocks("reset_snapshot")
            run.run_loops(run_gossip_snapshot, "adpsgd-resnapshot", epoch, False)

    def next(self, epoch, step):
        changed = step != self.step
        self.step = step
        if not changed:
            return
        if self.kind == "sgd":
            self.run.call_blocks("set_params", kernel_args(self.problem, eta0=step).params)
        elif self.kind == "rule":
            self.run.call_blocks("set_lr", step)

    def finish(self):
        run = self.run
        if self.kind != "sgd":
            return
        try:
            if run.loops:  # stopped early: let the loops finish their chunk
                run.call_blocks("halt")
                run.gather_loops()
            stats, values = zip(*run.call_blocks("report"), strict=True)
            self.total = int(sum(s.samples for s in stats))
            self.mean = consensus(values)[0]
        finally:
            self._progress.close(min(run.settings.timeout, 10.0))

    def model(self):
        """The consensus: what a checkpoint keeps and the fit returns."""
        return self.mean


class _Progress:
    """The replicas' sample counts, read without waiting: a replica that has not
    answered yet (say its process is stopped) counts with its last answer, so
    a straggler delays neither the driver nor, through it, the others."""

    def __init__(self, handles):
        self.handles = handles
        self.counts = [0] * len(handles)
        self.pending = [h.call("progress") for h in handles]

    def total(self):
        for i, call in enumerate(self.pending):
            if call.done():
                self.counts[i] = call.result()
                self.pending[i] = self.handles[i].call("progress")
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
