"""Stratified asynchronous SGD for matrix factorisation (DSGD / NOMAD style).

Layout (built by :func:`stratify`):

* users are split into one **user block per worker loop** (balanced by
  ratings); the loop owns all ratings of its users, so its user block is
  touched by it alone and lives in an actor on the loop's own worker (read
  directly, never shipped);
* items are split into ``n_blocks`` **item blocks** (actors spread over the
  workers); a loop's ratings are grouped into strata, one per item block.

An epoch: every loop visits each item block once.  A visit checks the item
block out (exclusive), runs the Numba per-rating SGD kernel over the stratum
(user block x item block) on local copies, and checks it back in.  Two loops
never hold the same item block, and never share users, so every rating is
applied to current values: SGD stays serialisable (no stale reads; the store
measures staleness and reports it, 0 by construction).

* ``"asyb"``: a loop takes any free item block it has not visited this epoch
  (NOMAD-like token passing, no barrier): a slow loop only holds up the block
  it holds.  Each loop still makes exactly one pass over its ratings per
  epoch, so no shard is over-weighted.
* ``"sync"``: DSGD's fixed schedule: at sub-epoch ``s`` loop ``w`` takes
  block ``(w + s) mod n_blocks``, in ticket order per block, which makes the
  fit deterministic for an int ``random_state``.
* ``"adpsgd"``: no item blocks to check out; every loop keeps a replica of
  all item rows and gossips it (:mod:`.mf_adpsgd`).  The epochs below drive
  either item side through the same small interface (:class:`CheckedOutItems`,
  :class:`~.mf_adpsgd.GossipItems`).
"""

import logging
import math
import time
import uuid
from asyncio import CancelledError
from dataclasses import dataclass, field

import numpy as np
from distributed import Worker, get_worker, secede
from distributed.core import Status

from ..mf_kernels import (
    RULE_ADAGRAD,
    RULE_SGD,
    n_factors_of,
    predict_pairs,
    row_width,
    sgd_ratings,
)
from ..mf_store import FactorBlock, initial_rows
from ..replica import Replica
from .driver import WorkerLost, _release, lost_workers

logger = logging.getLogger("dask_asyncopt")

MF_SOLVERS = ("asyb", "sync", "adpsgd")


# --------------------------------------------------------------------- layout
def balanced_blocks(counts, n_blocks, rng):
    """Assign ids to ``n_blocks`` blocks with near-equal rating totals.

    Ids are taken in a random order and cut where the running total of
    ratings crosses each ``1/n_blocks`` share (a random order keeps popular
    ids spread; cutting by ratings rather than ids balances the work of
    power-law data).  Returns ``(block of each id, row of each id within its
    block, size of each block)``.
    """
    n = counts.shape[0]
    order = rng.permutation(n)
    total = np.cumsum(counts[order], dtype=np.float64)
    share = total[-1] / n_blocks if n and total[-1] > 0 else 1.0
    # (total - counts/2) places each id by its midpoint: a very popular id
    # does not drag a whole share with it
    block_in_order = np.minimum(((total - counts[order] / 2.0) // share).astype(np.int64),
                                n_blocks - 1)
    block = np.empty(n, dtype=np.int64)
    block[order] = block_in_order
    sizes = np.bincount(block, minlength=n_blocks)
    row = np.empty(n, dtype=np.int64)
    for b in range(n_blocks):  # rows within a block in id order
        members = np.flatnonzero(block == b)
        row[members] = np.arange(members.shape[0])
    return block, row, sizes


@dataclass
class Layout:
    """Which block and row every user and item lives in."""

    user_block: np.ndarray
    user_row: np.ndarray
    user_sizes: np.ndarray
    item_block: np.ndarray
    item_row: np.ndarray
    item_sizes: np.ndarray

    def gather(self, user_blocks, item_blocks):
        """Full ``(U, V)`` packed arrays in id order from per-block rows."""
        U = np.concatenate(user_blocks)[_flat_index(self.user_block, self.user_row,
                                                    self.user_sizes)]
        V = np.concatenate(item_blocks)[_flat_index(self.item_block, self.item_row,
                                                    self.item_sizes)]
        return U, V

    def split(self, U, V):
        """Per-block rows from full ``(U, V)`` arrays (warm start)."""
        return _split(U, self.user_block, self.user_row, self.user_sizes), _split(
            V, self.item_block, self.item_row, self.item_sizes)


def _flat_index(block, row, sizes):
    return np.concatenate([[0], np.cumsum(sizes)])[block] + row


def _split(W, block, row, sizes):
    out = [np.empty((s, W.shape[1])) for s in sizes]
    for b in range(len(sizes)):
        mask = block == b
        out[b][row[mask]] = W[mask]
    return out


def stratify(users, items, ratings, n_users, n_items, n_loops, n_blocks, rng):
    """Build the layout and each loop's strata.

    Returns ``(layout, parts)`` with ``parts[w][b] = (user rows, item rows,
    ratings)`` of loop ``w``'s ratings in item block ``b``, rows local to the
    blocks.
    """
    user_block, user_row, user_sizes = balanced_blocks(
        np.bincount(users, minlength=n_users), n_loops, rng)
    item_block, item_row, item_sizes = balanced_blocks(
        np.bincount(items, minlength=n_items), n_blocks, rng)
    layout = Layout(user_block, user_row, user_sizes, item_block, item_row, item_sizes)
    ub = user_block[users]
    ib = item_block[items]
    key = ub * n_blocks + ib
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(n_loops * n_blocks + 1))
    parts = []
    for w in range(n_loops):
        strata = []
        for b in range(n_blocks):
            sel = order[bounds[w * n_blocks + b]:bounds[w * n_blocks + b + 1]]
            strata.append((user_row[users[sel]].astype(np.int32),
                           item_row[items[sel]].astype(np.int32),
                           np.ascontiguousarray(ratings[sel], dtype=np.float64)))
        parts.append(strata)
    return layout, parts


class RatingShard:
    """One loop's strata, kept in its worker's memory across epochs."""

    def __init__(self, strata, seed):
        self.strata = strata
        self.rng = np.random.default_rng(seed)
        self.n_ratings = sum(s[2].shape[0] for s in strata)


def make_rating_shard(strata, seed):
    return RatingShard(strata, seed)


# ----------------------------------------------------------------- the loop
class _Direct:
    """A factor block in this process: plain calls, no round trip."""

    def __init__(self, block):
        self.block = block

    def acquire(self, worker, ticket, wait, timeout):
        return self.block.acquire(worker, ticket, wait)

    def release(self, worker, rows, n, timeout):
        return self.block.release(worker, rows, n)

    def give_back(self, worker):
        self.block.give_back(worker)


class _Handle:
    """A factor block on another worker, through its actor handle."""

    def __init__(self, actor):
        self.actor = actor

    def acquire(self, worker, ticket, wait, timeout):
        return self.actor.acquire_at(worker, ticket, wait).result(timeout)

    def release(self, worker, rows, n, timeout):
        return self.actor.release(worker, rows, n, separate_thread=False).result(timeout)

    def give_back(self, worker):
        self.actor.give_back(worker, separate_thread=False).result(10)


def _bind(actors):
    """Direct objects for blocks in this process, actor handles for the rest.

    Same reasoning as :func:`dask_asyncopt.solvers.loop.bind_servers` (thread
    workers share one event loop, which would serialise every exchange), for
    the check-out protocol of factor blocks.
    """
    here = {}
    for worker in list(Worker._instances):
        if worker.status in (Status.running, Status.paused):
            here.update(worker.state.actors)
    here.update(get_worker().state.actors)
    return [_Direct(here[a.key]) if a.key in here else _Handle(a) for a in actors]


def sync_ticket(epoch, worker, block, n_loops, n_blocks):
    """Version at which ``worker`` may take ``block`` in ``epoch`` under DSGD.

    At sub-epoch ``s`` loop ``w`` visits block ``(w + s) % n_blocks``; a
    block is visited by every loop once per epoch, in increasing ``s``.
    """
    s = (block - worker) % n_blocks
    before = sum(1 for w in range(n_loops) if (block - w) % n_blocks < s)
    return epoch * n_loops + before


def run_mf_epoch(shard, user_actor, item_actors, config, worker, epoch):
    """One pass of loop ``worker`` over its strata; returns its statistics."""
    secede()  # a long-running task: free the worker's slot
    started = time.perf_counter()
    timeout = config["timeout"]
    sync = config["solver"] == "sync"
    user_block = _bind([user_actor])[0]
    blocks = _bind(item_actors)
    n_blocks = len(blocks)
    n_loops = config["n_loops"]
    got = user_block.acquire(worker, None, timeout, timeout)
    if got is None:
        raise TimeoutError(f"user block {worker} not free within {timeout} s")
    U = got[0]
    sse, n_seen, kernel_time, wait_time, visits = 0.0, 0, 0.0, 0.0, 0
    if sync:
        todo = [(worker + s) % n_blocks for s in range(n_blocks)]
    else:
        todo = list(shard.rng.permutation(n_blocks))
    try:
        while todo:
            tick = time.perf_counter()
            if sync:
                b = todo.pop(0)
                reply = blocks[b].acquire(
                    worker, sync_ticket(epoch - config["first_epoch"], worker, b, n_loops,
                                        n_blocks), timeout, timeout)
            else:
                b, reply = None, None
                for cand in todo:  # any free block, first come first served
                    reply = blocks[cand].acquire(worker, None, 0.0, timeout)
                    if reply is not None:
                        b = cand
                        break
                if reply is None:  # all busy: wait a little on one of them
                    b = todo[0]
                    reply = blocks[b].acquire(worker, None, 0.005, timeout)
                    if reply is None:
                        wait_time += time.perf_counter() - tick
                        continue
                todo.remove(b)
            if reply is None:
                raise TimeoutError(
                    f"item block {b} not handed to loop {worker} within {timeout} s "
                    "(a worker loop is lost or stalled)")
            V = reply[0]
            wait_time += time.perf_counter() - tick
            users, items, ratings = shard.strata[b]
            tick = time.perf_counter()
            try:
                order = shard.rng.permutation(ratings.shape[0])
                part = sgd_ratings(users, items, ratings, order, U, V, config["mu"],
                                   config["eta"], config["reg_factors"],
                                   config["reg_biases"], config["rule"], *config["adam"])
                if not (math.isfinite(part) and np.isfinite(V).all()):
                    raise FloatingPointError(
                        "the factors became non-finite: the step size is too large for "
                        "this data; lower eta0 (or use learning_rate='adagrad')")
            except BaseException:
                blocks[b].give_back(worker)
                raise
            kernel_time += time.perf_counter() - tick
            blocks[b].release(worker, V, ratings.shape[0], timeout)
            sse += part
            n_seen += ratings.shape[0]
            visits += 1
    except BaseException:
        user_block.give_back(worker)
        raise
    user_block.release(worker, U, n_seen, timeout)
    return {"worker": worker, "sse": sse, "ratings": n_seen, "visits": visits,
            "kernel_time": kernel_time, "wait_time": wait_time,
            "wall_time": time.perf_counter() - started}


# --------------------------------------------------------------- the driver
@dataclass
class MFSettings:
    n_factors: int
    reg_factors: float
    reg_biases: float
    eta0: float
    rule: int
    init_scale: float
    solver: str
    max_iter: int
    tol: float | None
    n_iter_no_change: int
    timeout: float
    seed: int
    callback: object = None
    checkpoint_every: int = 1  # epochs between copies of the model kept in the driver
    adam: tuple = (0.9, 0.999, 1e-8)  # beta1, beta2, eps of RULE_AMSGRAD
    first_epoch: int = 0  # > 0 when a fit resumes from a checkpoint
    resume: object = None  # the checkpoint resumed from (early-stopping state)


@dataclass
class MFCheckpoint:
    """The model after ``epoch`` and the early-stopping state, kept in the driver."""

    model: tuple  # packed (U, V) in id order, step state (G, AMSGrad moments) included
    epoch: int
    best: tuple  # (best score, its epoch, its model, epochs without improvement)


@dataclass
class MFResult:
    U: np.ndarray
    V: np.ndarray
    history: list = field(default_factory=list)
    n_iter: int = 0
    best_epoch: int = 0


def fit_mf(client, shards, loop_workers, layout, mu, settings, validation=None,
           init=None):
    """Train the factor blocks over the loops' shards.

    Parameters
    ----------
    client : distributed.Client
    shards : list of Future
        One :class:`RatingShard` per loop, on the worker at the same position
        of ``loop_workers``.
    layout : Layout
    mu : float
        Global mean.
    settings : MFSettings
    validation : tuple (users, items, ratings), optional
        Held-out ratings (global ids): validation RMSE per epoch, early stopping
        and the best epoch's model.
    init : tuple (U, V), optional
        Starting packed rows in id order (warm start).

    Returns
    -------
    MFResult
    """
    n_loops = len(shards)
    n_blocks = len(layout.item_sizes)
    workers = sorted(client.nthreads())
    token = uuid.uuid4().hex[:8]
    inits_u, inits_v = layout.split(*init) if init is not None else (
        [None] * n_loops, [None] * n_blocks)
    width = row_width(settings.n_factors, settings.rule)
    futures = []
    loops = []
    state = {"history": [], "checkpoint": None}
    try:
        for w in range(n_loops):
            futures.append(client.submit(
                FactorBlock, w, int(layout.user_sizes[w]), settings.n_factors,
                settings.init_scale, [settings.seed, 0, w], inits_u[w], width, actor=True,
                workers=[loop_workers[w]], key=f"asyncopt-mf-users-{w}-{token}"))
        if settings.solver == "adpsgd":  # one replica of all item rows per loop
            from .mf_adpsgd import GossipItems

            items = np.concatenate([
                initial_rows(int(size), settings.n_factors, settings.init_scale,
                             [settings.seed, 1, b], width) if inits_v[b] is None else inits_v[b]
                for b, size in enumerate(layout.item_sizes)])
            for w in range(n_loops):
                futures.append(client.submit(
                    Replica, w, n_loops, items.shape[0], width, -1, items, actor=True,
                    workers=[loop_workers[w]], key=f"asyncopt-mf-items-{w}-{token}"))
        else:
            for b in range(n_blocks):
                futures.append(client.submit(
                    FactorBlock, b, int(layout.item_sizes[b]), settings.n_factors,
                    settings.init_scale, [settings.seed, 1, b], inits_v[b], width,
                    actor=True, workers=[workers[b % len(workers)]],
                    key=f"asyncopt-mf-items-{b}-{token}"))
        actors = client.gather(futures)
        side = (GossipItems if settings.solver == "adpsgd" else CheckedOutItems)(
            actors[n_loops:], layout, settings.timeout)
        return _run_epochs(client, shards, loop_workers, actors[:n_loops], side, layout, mu,
                           settings, validation, token, loops, state)
    except (Exception, CancelledError) as exc:  # Dask cancels the lost worker's futures
        lost = lost_workers(client, workers)
        if lost:
            raise WorkerLost(lost, state["checkpoint"], state["history"]) from exc
        raise
    finally:
        _release(client, futures, loops)


class CheckedOutItems:
    """How the epochs reach the item rows under asyb/sync: item block actors."""

    loop = staticmethod(run_mf_epoch)

    def __init__(self, actors, layout, timeout):
        self.actors = actors
        self.timeout = timeout

    def loop_config(self, config, n_values):
        return config

    def loop_args(self):
        return (self.actors,)

    def after_epoch(self, reports):
        """The blocks' statistics since the last epoch; no extra history columns."""
        calls = [a.stats() for a in self.actors]
        return [c.result(self.timeout) for c in calls], {}

    def item_blocks(self):
        calls = [a.rows() for a in self.actors]
        return [c.result(self.timeout) for c in calls]


def _read_model(actors_u, items, layout, timeout):
    calls = [a.rows() for a in actors_u]
    return layout.gather([c.result(timeout) for c in calls], items.item_blocks())


def _run_epochs(client, shards, loop_workers, actors_u, items, layout, mu, settings,
                validation, token, loops, state):
    history = state["history"]
    started = time.perf_counter()
    config = {"solver": settings.solver, "n_loops": len(shards), "mu": mu,
              "eta": settings.eta0, "reg_factors": settings.reg_factors,
              "reg_biases": settings.reg_biases, "rule": settings.rule,
              "adam": tuple(settings.adam), "timeout": settings.timeout,
              # blocks restarted from a checkpoint start at version 0: sync tickets
              # count epochs from the restart
              "first_epoch": settings.first_epoch}
    config = items.loop_config(config, settings.n_factors + 1)
    best, best_epoch, best_model, no_improve = (
        settings.resume.best if settings.resume is not None else (math.inf, 0, None, 0))
    model = None
    for epoch in range(settings.first_epoch, settings.max_iter):
        if settings.rule == RULE_SGD:
            # plain SGD: 1/sqrt(epoch) decay (adagrad and amsgrad adapt per row;
            # amsgrad with this decay was measured worse, docs/status.md)
            config = dict(config, eta=settings.eta0 / math.sqrt(1.0 + epoch))
        futures = [
            client.submit(items.loop, shard, actors_u[i], *items.loop_args(), config, i,
                          epoch, workers=[addr], allow_other_workers=False, pure=False,
                          key=f"asyncopt-mf-{settings.solver}-loop-{i}-epoch-{epoch}-{token}")
            for i, (shard, addr) in enumerate(zip(shards, loop_workers, strict=True))]
        loops[:] = futures
        reports = client.gather(futures)
        loops.clear()
        stats, extra = items.after_epoch(reports)
        n = sum(r["ratings"] for r in reports)
        pushes = sum(s["pushes"] for s in stats)
        wall = sum(r["wall_time"] for r in reports)
        row = {
            "epoch": epoch + 1,
            "time": time.perf_counter() - started,
            "ratings": n,
            "train_rmse": math.sqrt(sum(r["sse"] for r in reports) / max(n, 1)),
            "updates": pushes,
            "eta0": config["eta"],
            "staleness_mean": sum(s["staleness_sum"] for s in stats) / max(pushes, 1),
            "staleness_max": max((s["staleness_max"] for s in stats), default=0),
            "compute_fraction": sum(r["kernel_time"] for r in reports) / max(wall, 1e-12),
            "wait_fraction": sum(r["wait_time"] for r in reports) / max(wall, 1e-12),
            **extra,
        }
        if not math.isfinite(row["train_rmse"]):
            raise FloatingPointError(
                f"the training error became {row['train_rmse']} at epoch {epoch + 1}: "
                "lower eta0")
        if validation is not None:
            model = _read_model(actors_u, items, layout, settings.timeout)
            row["valid_rmse"] = rmse_of(model, mu, *validation, rule=settings.rule)
            score = row["valid_rmse"]
            if score < best - (settings.tol or 0.0):
                no_improve = 0
            else:
                no_improve += 1
            if score < best:
                best, best_epoch, best_model = score, epoch + 1, model
            row["time"] = time.perf_counter() - started
        history.append(row)
        logger.info("epoch %d: train RMSE %.5g%s, %.3g s, compute %.0f%%, wait %.0f%%",
                    epoch + 1, row["train_rmse"],
                    f", valid RMSE {row['valid_rmse']:.5g}" if validation else "",
                    row["time"], 100 * row["compute_fraction"], 100 * row["wait_fraction"])
        if settings.callback is not None:
            settings.callback(row)
        if settings.checkpoint_every and (epoch + 1) % settings.checkpoint_every == 0:
            state["checkpoint"] = MFCheckpoint(
                model if validation is not None else _read_model(
                    actors_u, items, layout, settings.timeout),
                epoch + 1, (best, best_epoch, best_model, no_improve))
        if (validation is not None and settings.tol is not None
                and no_improve >= settings.n_iter_no_change):
            break
    if best_model is not None:
        U, V = best_model
    else:
        U, V = _read_model(actors_u, items, layout, settings.timeout)
        best_epoch = settings.first_epoch + len(history)
    if not (np.isfinite(U).all() and np.isfinite(V).all()):
        raise FloatingPointError("the factors became non-finite: lower eta0")
    return MFResult(U, V, history, settings.first_epoch + len(history), best_epoch)


def rmse_of(model, mu, users, items, ratings, rule=RULE_ADAGRAD):
    """RMSE of packed ``(U, V)`` on ratings given as rows of ``U``/``V``."""
    k = n_factors_of(model[0].shape[1], rule)
    U, V = (np.ascontiguousarray(W[:, :k + 2]) for W in model)
    out = np.empty(users.shape[0])
    predict_pairs(users, items, U, V, mu, out)
    return float(np.sqrt(np.mean((ratings - out) ** 2))) if users.shape[0] else math.nan
