"""The driver: creates the parameter store, runs epochs, keeps the history.

An epoch is one pass of every worker loop over its own shard (each sample
once, so the stochastic gradients stay unbiased); within it the loops never
wait for each other under ``"asyb"``.  One task per loop runs all the
epochs of a fit; between two epochs the loops wait at block 0 while the
driver reads the blocks' statistics, evaluates the objective, applies early
stopping, records a history row and hands them its decision (stop, or the
next step size; see :mod:`~dask_asyncopt.handoff`).

Two gradient estimators share that structure:

* plain proximal SGD with a decaying step schedule; the objective reported is
  the progressive loss of the epoch (each row's loss before its step) plus the
  penalty at its end;
* proximal SVRG (``Problem.svrg``): after every epoch a *snapshot* pass over
  all shards stores each row's loss derivative and sums the full gradient in
  the blocks; the next epoch's steps subtract the stale part and add the full
  gradient, which removes the sampling noise that makes SGD stall short of
  the optimum under L1.  The snapshot pass also yields the exact objective of
  the current coefficients, which the history reports.

``optimizer="amsgrad"`` (``Problem.rule``) runs the epochs of
:mod:`.adaptive` on the same blocks (they apply pushed gradients with the
rule's state), and ``solver="adpsgd"`` hands the whole fit to
:mod:`.adpsgd` (replicas instead of blocks); both reuse the history rows,
early stopping and checkpoints of :class:`_Run`.

After every epoch the driver keeps a :class:`Checkpoint` of the model in this
process; when a worker is lost mid-fit, :func:`fit_blocks` releases
everything and raises :class:`WorkerLost` with it, and the estimator resumes
on the surviving workers.
"""

import copy
import logging
import math
import time
import uuid
from asyncio import CancelledError
from dataclasses import dataclass, field

import numpy as np
from distributed import wait

from .. import schedules
from ..kernels import P_ETA0
from ..penalties import penalty_value
from ..rule_store import RuleServer
from ..schedules import ADAPTIVE
from ..shards import block_sizes
from ..store import BlockServer
from .loop import (
    epoch_then_snapshot_body,
    local_servers,
    run_epochs,
    sgd_epoch_body,
    sweep_epoch,
)

logger = logging.getLogger("dask_asyncopt")

SOLVERS = {"asyb": "async", "sync": "sync", "adpsgd": "gossip"}


@dataclass
class Problem:
    """What is minimised, in the form the kernels take."""

    n_features: int
    n_outputs: int
    loss: int
    schedule: int
    params: np.ndarray  # float vector, see kernels.P_*
    alpha: float
    l1_ratio: float
    fit_intercept: bool
    # Variance reduction: None (plain SGD) or {"smoothness": L of the loss,
    # "step": a fixed step or None for 1 / (L * largest squared row norm)}.
    svrg: dict | None = None
    # Update rule applied by the blocks to pushed gradients (optimizer="amsgrad",
    # see .adaptive), or None for the worker-local sweeps; and its options
    # ({"batch": rows per gradient}).
    rule: object = None
    rule_options: dict | None = None

    def kernel_args(self):
        return {"loss": self.loss, "schedule": self.schedule, "params": self.params}


@dataclass
class Settings:
    """How it is minimised."""

    solver: str = "asyb"
    n_blocks: int = 1
    max_staleness: int | None = None
    max_iter: int = 20
    tol: float | None = 1e-3
    n_iter_no_change: int = 5
    timeout: float = 120.0
    callback: object = None
    # Keep a copy of the coefficients in the driver every this many epochs
    # (0: never), to restart from if a worker is lost.
    checkpoint_every: int = 1
    first_epoch: int = 1  # > 1 when a fit restarts from a checkpoint
    # Held-out score of the model after each epoch: callable(full coefficients) ->
    # float, higher is better (the history's "validation_score"); with
    # early_stopping, the stopping rule watches it instead of the objective.
    validation: object = None
    early_stopping: bool = False


@dataclass
class Checkpoint:
    """The model after ``epoch``, kept in the driver (a lost worker cannot take it)."""

    coef: np.ndarray  # (n_features + fit_intercept, n_outputs), intercept last
    samples: int
    epoch: int


class WorkerLost(RuntimeError):
    """A worker holding blocks, loops or data left the cluster mid-fit.

    Carries what the fit can resume from: the latest :class:`Checkpoint` (or
    ``None``) and the history rows recorded so far.
    """

    def __init__(self, lost, checkpoint, history):
        super().__init__(f"lost worker(s) {sorted(lost)} during the fit")
        self.lost = lost
        self.checkpoint = checkpoint
        self.history = history


@dataclass
class FitResult:
    coef: np.ndarray  # (n_features, n_outputs)
    intercept: np.ndarray  # (n_outputs,)
    history: list = field(default_factory=list)
    n_iter: int = 0
    t: int = 0  # samples processed


def _split_blocks(full, n_blocks):
    return [full[b::n_blocks] for b in range(n_blocks)]


def fit_blocks(client, shards, loop_workers, n_samples, problem, settings, init=None,
               t_start=0):
    """Minimise ``problem`` over the data in ``shards``.

    Parameters
    ----------
    client : distributed.Client
    shards : list of Future
        One :class:`~dask_asyncopt.shards.WorkerShard` per worker loop, held by
        the worker at the same position of ``loop_workers``.
    n_samples : int
        Rows in all shards together (one epoch).
    problem : Problem
    settings : Settings
    init : ndarray of shape (n_features + fit_intercept, n_outputs), optional
        Starting coefficients (intercept last).
    t_start : int
        Samples processed by earlier fits (warm start): the schedule goes on.

    Returns
    -------
    FitResult
    """
    if settings.solver == "adpsgd":  # replicas, no blocks: see solvers/adpsgd.py
        from .adpsgd import fit_replicas

        return fit_replicas(client, shards, loop_workers, n_samples, problem, settings,
                            init, t_start)
    mode = SOLVERS[settings.solver]
    n_coords = problem.n_features + int(problem.fit_intercept)
    n_blocks = min(settings.n_blocks, n_coords)
    workers = sorted(client.nthreads())  # asks the scheduler: no stale cache
    token = uuid.uuid4().hex[:8]
    icpt_block = problem.n_features % n_blocks
    inits = _split_blocks(init, n_blocks) if init is not None else [None] * n_blocks
    servers = []
    run = _Run(client, shards, loop_workers, settings, token)
    try:
        for b, size in enumerate(block_sizes(n_coords, n_blocks)):
            unpenalised = problem.n_features // n_blocks if (
                problem.fit_intercept and b == icpt_block) else -1
            cls, extra = BlockServer, {}
            if problem.rule is not None:
                cls, extra = RuleServer, {"rule": copy.deepcopy(problem.rule)}
            servers.append(client.submit(
                cls, b, n_blocks, size, problem.n_outputs, problem.alpha,
                problem.l1_ratio, unpenalised, mode, len(shards), settings.max_staleness,
                inits[b], t_start, problem.svrg is not None,
                precondition=problem.svrg is not None and problem.svrg["step"] is None,
                **extra, actor=True,
                workers=[workers[b % len(workers)]],
                key=f"asyncopt-block-{b}-{token}"))
        run.actors = client.gather(servers)
        run.n_blocks = n_blocks
        run.initial_penalty = 0.0 if init is None else penalty_value(
            init[:problem.n_features], problem.alpha, problem.l1_ratio)
        run.config = {"mode": mode, "problem": problem.kernel_args(), "n_loops": len(shards),
                      "timeout": settings.timeout, "svrg": None,
                      "zero_start": init is None,  # the coefficients start at 0
                      "block_sizes": block_sizes(n_coords, n_blocks),
                      "bounded": mode == "async" and settings.max_staleness is not None}
        epochs = _svrg_epochs if problem.svrg is not None else _sgd_epochs
        if problem.rule is not None:
            from .adaptive import rule_epochs as epochs
        total = epochs(run, n_samples, problem, t_start)
        coef, intercept = _split_coefficients(_gather_coefficients(run), problem)
        return FitResult(coef, intercept, run.history, len(run.history), total)
    except (Exception, CancelledError) as exc:  # Dask cancels the lost worker's futures
        lost = lost_workers(client, workers)
        if lost:
            raise WorkerLost(lost, run.checkpoint, run.history) from exc
        raise
    finally:
        _release(client, servers, run.loops)


def lost_workers(client, workers, patience=5.0):
    """Workers of ``workers`` the scheduler no longer lists (it may take a moment
    to notice a killed process after a call to it failed)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            lost = set(workers) - set(client.nthreads())
        except Exception:  # noqa: BLE001 - the scheduler itself is gone: not recoverable here
            return set()
        if lost or time.monotonic() > deadline:
            return lost
        time.sleep(0.2)


class _Run:
    """One fit's cluster handles: shards, block actors, running loop tasks."""

    def __init__(self, client, shards, loop_workers, settings, token):
        self.client = client
        self.shards = shards
        self.loop_workers = loop_workers
        self.settings = settings
        self.token = token
        self.actors = []
        self.config = None
        self.loops = []
        self.history = []
        self.checkpoint = None
        self.n_blocks = 1
        self.initial_penalty = 0.0  # penalty of the starting coefficients
        self._direct = None  # per block: its server when in this process (see local_blocks)
        self.epochs = (0, 0)  # last epoch reported, last epoch of the loops (start_epochs)
        self.started = time.perf_counter()

    def start_loops(self, func, name, epoch, *args):
        """Submit ``func(shard, actors, config, i, *args)`` next to every shard.

        Task keys read ``asyncopt-<name>-<loop>-epoch-<epoch>-<fit token>`` on
        the dashboard.  Returns the futures (also kept in ``loops`` until
        :meth:`gather_loops`, so that a failed fit stops them).
        """
        self.loops[:] = [
            self.client.submit(func, shard, self.actors, self.config, i, *args,
                               workers=[addr], allow_other_workers=False, pure=False,
                               key=f"asyncopt-{name}-{i}-epoch-{epoch}-{self.token}")
            for i, (shard, addr) in enumerate(zip(self.shards, self.loop_workers,
                                                  strict=True))]
        return list(self.loops)

    def gather_loops(self):
        """Wait for the running loops; return their reports."""
        reports = self.client.gather(self.loops)
        self.loops.clear()
        return reports

    def run_loops(self, func, name, epoch, *args):
        """:meth:`start_loops`, then :meth:`gather_loops`."""
        self.start_loops(func, name, epoch, *args)
        return self.gather_loops()

    def start_epochs(self, body, first, last, target, *args):
        """Start one task per loop running epochs ``first .. last``
        (:func:`~.loop.run_epochs` with ``body``; nothing when ``first > last``,
        a restart after the last epoch's checkpoint); after each epoch, take its
        reports with :meth:`epoch_reports`, then :meth:`proceed`, and at the end
        :meth:`finish_epochs`.  Keys read ``asyncopt-<solver>-loop-<loop>-epoch-
        <first>-<fit token>``."""
        self.epochs = (first - 1, last)  # (last epoch reported, last epoch)
        if first > last:
            return
        self.start_loops(run_epochs, f"{self.settings.solver}-loop", first, body, first, last,
                         target, *args)

    def epoch_reports(self, epoch, poll=0.5):
        """The loops' reports of ``epoch``, once all posted them.  Every ``poll``
        seconds, checks the loop tasks: a failed one raises its error here."""
        while True:
            reports = self._collect(epoch, poll)
            if reports is None:
                # a loop's task ends after posting its last epoch: only failures count
                failed = [f for f in self.loops if f.status in ("error", "cancelled")]
                if failed:
                    self.client.gather(failed)  # raises the loop's error
                if all(f.status == "finished" for f in self.loops):
                    reports = self._collect(epoch, 0.0)  # posted since the poll?
                    if reports is None:
                        raise RuntimeError(
                            f"worker loops ended before reporting epoch {epoch}")
            if reports is not None:
                self.epochs = (epoch, self.epochs[1])
                return reports

    def _collect(self, epoch, wait):
        handoff = self.local_blocks()[0]  # block 0 relays the hand-off
        if handoff is not None:
            return handoff.collect_epoch(epoch, len(self.loops), wait)
        return self.actors[0].collect_epoch_at(epoch, len(self.loops), wait).result(
            self.settings.timeout)

    def _decide(self, epoch, decision):
        handoff = self.local_blocks()[0]
        if handoff is not None:
            handoff.decide(epoch, decision)
        else:
            self.actors[0].decide(epoch, decision, separate_thread=False).result(
                self.settings.timeout)

    def proceed(self, epoch, target, **config):
        """Let the loops go on after ``epoch`` towards sample count ``target``
        with these ``config`` entries replaced (also in ``self.config``)."""
        self.config.update(config)
        self._decide(epoch, {"target": target, "config": config})

    def finish_epochs(self):
        """The fit ends: stop the loops unless the epoch reported last was their
        last anyway, and wait for them."""
        reported, last = self.epochs
        if self.loops and reported < last:
            self._decide(reported, None)
        self.gather_loops()

    def call_blocks(self, method, *args):
        """Call ``method(*args)`` on every block at once, then collect the replies.

        Blocks in this process (thread workers) are called directly: through
        their actors, the statistics and checkpoint reads between two epochs
        took ~3 ms of a thread cluster's event loop (measured, 2 blocks)."""
        direct = self.local_blocks()
        calls = [getattr(a, method)(*args) for a, obj in zip(self.actors, direct, strict=True)
                 if obj is None]
        replies = iter([c.result(self.settings.timeout) for c in calls])
        return [next(replies) if obj is None else getattr(obj, method)(*args)
                for obj in direct]

    def local_blocks(self):
        """Per block, its server object when it lives in this process (thread
        workers: called directly), else ``None`` (called through its actor)."""
        if self._direct is None:
            here = local_servers()
            self._direct = [here.get(a.key) for a in self.actors]
        return self._direct

    def record(self, epoch, reports, stats, loss, objective, step, extra=None):
        """Append the epoch's history row (plus ``extra`` columns), log it, pass it
        to the callback and keep a checkpoint when one is due.

        Returns the value the early-stopping rule watches (lower is better): the
        objective, or minus the validation score with ``early_stopping``.
        """
        pushes = sum(s["pushes"] for s in stats)
        wall = sum(r["wall_time"] for r in reports)
        row = {
            "epoch": epoch,
            "time": time.perf_counter() - self.started,
            "samples": max(s["samples"] for s in stats),
            "updates": pushes,
            "loss": loss,
            "objective": objective,
            "eta0": step,
            "staleness_mean": sum(s["staleness_sum"] for s in stats) / max(pushes, 1),
            "staleness_max": max(s["staleness_max"] for s in stats),
            "compute_fraction": sum(r["kernel_time"] for r in reports) / max(wall, 1e-12),
        }
        row.update(extra or {})
        model = None
        if self.settings.validation is not None:
            model = _gather_coefficients(self)
            row["validation_score"] = float(self.settings.validation(model))
        self.history.append(row)
        logger.info("epoch %d: objective %.6g, %.3g s, staleness %.2f/%d, compute %.0f%%",
                    epoch, objective, row["time"], row["staleness_mean"],
                    row["staleness_max"], 100 * row["compute_fraction"])
        if self.settings.callback is not None:
            self.settings.callback(row)
        if not math.isfinite(objective):
            raise FloatingPointError(
                f"the objective became {objective} at epoch {epoch}: the step size is too "
                "large; lower eta0 (or raise alpha with learning_rate='optimal')")
        every = self.settings.checkpoint_every
        if every and epoch % every == 0:
            model = _gather_coefficients(self) if model is None else model
            self.checkpoint = Checkpoint(model, row["samples"], epoch)
        return -row["validation_score"] if self.settings.early_stopping else objective


class _EarlyStopping:
    """scikit-learn's rule: stop after ``n_iter_no_change`` epochs without an
    improvement of at least ``tol`` on the best objective."""

    def __init__(self, tol, n_iter_no_change):
        self.tol = tol
        self.patience = n_iter_no_change
        self.best = math.inf
        self.no_improve = 0

    def stalled(self, objective):
        if self.tol is None:
            return False
        self.no_improve = self.no_improve + 1 if objective > self.best - self.tol else 0
        self.best = min(self.best, objective)
        return self.no_improve >= self.patience


def _sgd_epochs(run, n_samples, problem, total):
    settings = run.settings
    stopping = _EarlyStopping(settings.tol, settings.n_iter_no_change)
    params = problem.params
    first, last = settings.first_epoch, settings.max_iter
    run.start_epochs(sgd_epoch_body, first, last, total + n_samples)
    for epoch in range(first, last + 1):
        reports = run.epoch_reports(epoch)
        stats = run.call_blocks("stats")
        total = max(s["samples"] for s in stats)
        loss = sum(r["loss_sum"] for r in reports) / max(sum(r["samples"] for r in reports), 1)
        objective = loss + sum(s["penalty"] for s in stats)
        watched = run.record(epoch, reports, stats, loss, objective, float(params[P_ETA0]))
        changes = {}
        if stopping.stalled(watched):
            params = adapt_after_stall(run, problem, params, stopping)
            if params is None:
                break
            changes["problem"] = run.config["problem"]  # with the smaller eta0
        if epoch < last:
            run.proceed(epoch, total + n_samples, **changes)
    run.finish_epochs()
    return total


def adapt_after_stall(run, problem, params, stopping):
    """``learning_rate="adaptive"``: on a stall divide ``eta0`` by 5 and go on (the
    new parameters), until it is tiny; other schedules stop (``None``)."""
    if problem.schedule != ADAPTIVE or params[P_ETA0] <= 1e-6:
        return None
    params = params.copy()
    params[P_ETA0] /= 5.0
    run.config = dict(run.config, problem=dict(run.config["problem"], params=params))
    stopping.no_improve = 0
    return params


def svrg_step(problem, reports):
    """SVRG's step (:func:`~dask_asyncopt.schedules.svrg_step`) after a snapshot pass."""
    return schedules.svrg_step(
        problem.svrg["smoothness"], problem.svrg["step"],
        max(r["max_sq_norm"] for r in reports) + int(problem.fit_intercept))


# A rise smaller than this share of the objective is the rounding of sums taken
# in another order, not a step too long: at the optimum, halving on it took the
# step down 20 times in an 80-epoch fit (measured, tf-idf-like data).
ROUNDING = 1e-12


def halve_if_rose(step, previous, objective):
    """The step keeps every row stable for the loss's curvature bound; delays
    between loops and unlucky data can still make it too long: halve it when an
    epoch raised the objective, as a line search would."""
    if objective <= previous + ROUNDING * abs(previous):
        return step
    logger.info("objective rose from %.6g to %.6g: step halved to %.3g", previous, objective,
                step / 2.0)
    return step / 2.0


def _svrg_epochs(run, n_samples, problem, total):
    settings = run.settings
    stopping = _EarlyStopping(settings.tol, settings.n_iter_no_change)
    run.config["svrg"] = {"eta": None, "alpha": problem.alpha, "l1_ratio": problem.l1_ratio,
                          "n_samples": n_samples, "smoothness": problem.svrg["smoothness"],
                          "step": problem.svrg["step"],
                          # a user's constant step is taken as given
                          "normalise": problem.svrg["step"] is None,
                          "fit_intercept": problem.fit_intercept}
    first, last = settings.first_epoch, settings.max_iter
    # The first epoch also takes the fit's first snapshot and sets the step.
    run.start_epochs(epoch_then_snapshot_body, first, last, total + n_samples, sweep_epoch,
                     n_samples)
    step, previous = None, None
    for epoch in range(first, last + 1):
        reports = run.epoch_reports(epoch)
        stats, total, loss, objective = _epoch_end(run, reports, n_samples)
        if step is None:
            step = reports[0]["eta"]
            starts = [r["start"] for r in reports]
            previous = sum(r["loss_sum"] for r in starts) / n_samples + run.initial_penalty
        watched = run.record(epoch, _pass_reports(reports), stats, loss, objective, step)
        if stopping.stalled(watched):
            break
        step, previous = halve_if_rose(step, previous, objective), objective
        if epoch < last:
            run.proceed(epoch, total + n_samples, svrg=dict(run.config["svrg"], eta=step))
    run.finish_epochs()
    return total


def _epoch_end(run, reports, n_samples):
    """The blocks' statistics, the samples processed so far, and the exact mean
    loss and objective at the end of an epoch whose loops' ``reports`` (of
    :func:`~.loop.epoch_then_snapshot_body`) end with a snapshot or loss pass."""
    stats = run.call_blocks("stats")
    total = max(s["samples"] for s in stats)
    loss = sum(r["after"]["loss_sum"] for r in reports) / n_samples
    return stats, total, loss, loss + sum(s["penalty"] for s in stats)


def _pass_reports(reports):
    """Every pass report of :func:`~.loop.epoch_then_snapshot_body`, for the history."""
    return [r[k] for r in reports for k in ("start", "epoch", "after") if k in r]


def _snapshot_objective(run, reports, n_samples):
    """Complete a snapshot; return the exact mean loss and objective there."""
    run.call_blocks("finish_snapshot", n_samples)
    stats = run.call_blocks("stats")
    loss = sum(r["loss_sum"] for r in reports) / n_samples
    return loss, loss + sum(s["penalty"] for s in stats)


def _gather_coefficients(run):
    """All blocks' coefficients as one (n_coords, n_outputs) array, intercept last."""
    blocks = run.call_blocks("coefficients")
    full = np.empty((sum(len(b) for b in blocks), blocks[0].shape[1]))
    for b, values in enumerate(blocks):
        full[b::run.n_blocks] = values
    return full


def _split_coefficients(full, problem):
    if not np.isfinite(full).all():
        raise FloatingPointError("the coefficients became non-finite: lower eta0")
    coef = full[:problem.n_features]
    intercept = full[problem.n_features] if problem.fit_intercept else np.zeros(
        problem.n_outputs)
    return coef, intercept


def _release(client, servers, loops):
    """Stop running loops, then free the actors: nothing is left on the cluster."""
    if loops:
        for server in servers:
            if server.status == "finished":
                try:
                    server.result().stop().result(10)
                except Exception:  # noqa: BLE001 - best effort on the failure path
                    pass
        # Loops notice the stop at their next exchange; wait so none outlives the fit.
        try:
            wait(loops, timeout=30)
        except TimeoutError:
            logger.warning("worker loops still running 30 s after the fit stopped")
        except (Exception, CancelledError):  # noqa: BLE001 - loops failed or were lost
            pass
    client.cancel(list(loops) + list(servers), force=True)
