"""The driver: creates the parameter store, runs epochs, keeps the history.

An epoch is one pass of every worker loop over its own shard (each sample
once, so the stochastic gradients stay unbiased); within it the loops never
wait for each other under ``"asyb"``.  Between epochs the driver reads
the blocks' statistics, evaluates the objective (progressive loss of the
epoch + penalty at its end), applies early stopping, and records a history row.
"""

import logging
import math
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from distributed import wait

from ..kernels import P_ETA0
from ..schedules import ADAPTIVE
from ..store import BlockServer
from .loop import run_epoch

logger = logging.getLogger("dask_asyncopt")

SOLVERS = {"asyb": "async", "sync": "sync"}


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
    mode = SOLVERS[settings.solver]
    n_loops = len(shards)
    n_coords = problem.n_features + int(problem.fit_intercept)
    n_blocks = min(settings.n_blocks, n_coords)
    workers = sorted(client.nthreads())  # asks the scheduler: no stale cache
    token = uuid.uuid4().hex[:8]
    icpt_block = problem.n_features % n_blocks
    inits = _split_blocks(init, n_blocks) if init is not None else [None] * n_blocks
    servers = []
    loops = []
    try:
        for b in range(n_blocks):
            size = len(range(b, n_coords, n_blocks))
            unpenalised = problem.n_features // n_blocks if (
                problem.fit_intercept and b == icpt_block) else -1
            servers.append(client.submit(
                BlockServer, b, n_blocks, size, problem.n_outputs, problem.alpha,
                problem.l1_ratio, unpenalised, mode, n_loops, settings.max_staleness,
                inits[b], t_start, actor=True, workers=[workers[b % len(workers)]],
                key=f"asyncopt-block-{b}-{token}"))
        actors = client.gather(servers)
        config = {"mode": mode, "problem": problem.kernel_args(), "n_loops": n_loops,
                  "timeout": settings.timeout,
                  "bounded": mode == "async" and settings.max_staleness is not None}
        return _run_epochs(client, shards, loop_workers, actors, config, n_samples,
                           problem, settings, n_blocks, token, loops, t_start)
    finally:
        _release(client, servers, loops)


def _run_epochs(client, shards, loop_workers, actors, config, n_samples, problem,
                settings, n_blocks, token, loops, total):
    history = []
    best, no_improve = math.inf, 0
    started = time.perf_counter()
    params = problem.params
    for epoch in range(1, settings.max_iter + 1):
        target = total + n_samples
        futures = [
            client.submit(run_epoch, shard, actors, config, i, target,
                          workers=[addr], allow_other_workers=False, pure=False,
                          key=f"asyncopt-{settings.solver}-loop-{i}-epoch-{epoch}-{token}")
            for i, (shard, addr) in enumerate(zip(shards, loop_workers, strict=True))]
        loops[:] = futures
        reports = client.gather(futures)
        calls = [a.stats() for a in actors]  # all blocks at once, then collect
        stats = [c.result(settings.timeout) for c in calls]
        penalty = sum(s["penalty"] for s in stats)
        loops.clear()
        epoch_samples = sum(r["samples"] for r in reports)
        total = max(s["samples"] for s in stats)
        loss = sum(r["loss_sum"] for r in reports) / max(epoch_samples, 1)
        objective = loss + penalty
        pushes = sum(s["pushes"] for s in stats)
        wall = sum(r["wall_time"] for r in reports)
        row = {
            "epoch": epoch,
            "time": time.perf_counter() - started,
            "samples": total,
            "updates": pushes,
            "loss": loss,
            "objective": objective,
            "eta0": float(params[P_ETA0]),
            "staleness_mean": sum(s["staleness_sum"] for s in stats) / max(pushes, 1),
            "staleness_max": max(s["staleness_max"] for s in stats),
            "compute_fraction": sum(r["kernel_time"] for r in reports) / max(wall, 1e-12),
        }
        history.append(row)
        logger.info("epoch %d: objective %.6g, %.3g s, staleness %.2f/%d, compute %.0f%%",
                    epoch, objective, row["time"], row["staleness_mean"],
                    row["staleness_max"], 100 * row["compute_fraction"])
        if settings.callback is not None:
            settings.callback(row)
        if not math.isfinite(objective):
            raise FloatingPointError(
                f"the objective became {objective} at epoch {epoch}: the step size is too "
                "large; lower eta0 (or raise alpha with learning_rate='optimal')")
        if settings.tol is not None:
            if objective > best - settings.tol:
                no_improve += 1
            else:
                no_improve = 0
            best = min(best, objective)
            if no_improve >= settings.n_iter_no_change:
                if problem.schedule == ADAPTIVE and params[P_ETA0] > 1e-6:
                    params = params.copy()
                    params[P_ETA0] /= 5.0
                    config = dict(config, problem=dict(config["problem"], params=params))
                    no_improve = 0
                else:
                    break
    calls = [a.coefficients() for a in actors]
    blocks = [c.result(settings.timeout) for c in calls]
    full = np.empty((problem.n_features + int(problem.fit_intercept), problem.n_outputs))
    for b, values in enumerate(blocks):
        full[b::n_blocks] = values
    if not np.isfinite(full).all():
        raise FloatingPointError("the coefficients became non-finite: lower eta0")
    coef = full[:problem.n_features]
    intercept = full[problem.n_features] if problem.fit_intercept else np.zeros(
        problem.n_outputs)
    return FitResult(coef, intercept, history, len(history), total)


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
    client.cancel(list(loops) + list(servers), force=True)

