"""Coefficient blocks: AsyB-ProxSGD (``solver="asyb"``) and its synchronous baseline.

The coefficients are split into ``n_blocks`` interleaved blocks (coordinate
``i`` -> block ``i % n_blocks``), each a
:class:`~dask_asyncopt.store.blocks.BlockServer` actor (a
:class:`~dask_asyncopt.store.rule_blocks.RuleServer` for an update rule).
An epoch is one pass of every worker loop over its own shard (each sample
once, so the stochastic gradients stay unbiased); within it the loops never
wait for each other under ``"asyb"``.  One task per loop runs all the epochs
of a fit; between two epochs the loops wait at block 0 while the driver
records the epoch (:func:`~.run.drive`) and hands them its decision.

Three gradient estimators share that structure:

* plain proximal SGD with a decaying step schedule; the objective reported is
  the progressive loss of the epoch (each row's loss before its step) plus the
  penalty at its end;
* proximal SVRG (``problem.svrg``): after every epoch a *snapshot* pass over
  all shards stores each row's loss derivative and sums the full gradient in
  the blocks; the next epoch's steps subtract the stale part and add the full
  gradient, which removes the sampling noise that makes SGD stall short of
  the optimum under L1.  The snapshot pass also yields the exact objective of
  the current coefficients, which the history reports;
* an update rule (``problem.rule``, AMSGrad): loops push minibatch gradients
  (:mod:`.gradients`) that the blocks apply with the rule's state; snapshots
  as for SVRG.

``"sync"`` runs the same exchanges with a barrier per round at the blocks,
the round's pushes applied together in worker order (deterministic for an
int ``random_state``).
"""

import copy
import math
import time
import uuid
from dataclasses import replace

import numpy as np

from ..data.shards import block_sizes
from ..objective.schedules import ADAPTIVE
from ..store.blocks import BlockServer, wide_zeros
from ..store.rule_blocks import RuleServer
from .config import GradOptions, LoopConfig, SVRGStep, kernel_args
from .gradients import rule_epoch
from .loop import epoch_then_snapshot, run_snapshot, sgd_epoch, sweep_epoch
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
from .steps import HalvingSteps, ObjectiveTrail, RuleSteps, ScheduleSteps, certifies, duality_gap

MODES = {"asyb": "async", "sync": "sync"}


def fit(client, shards, loop_workers, n_samples, problem, settings, init=None, t_start=0,
        kept=None, moments=None):
    """Minimise ``problem`` over the data in ``shards`` on coefficient blocks.

    Parameters
    ----------
    client : distributed.Client
    shards : list of Future
        One :class:`~dask_asyncopt.data.shards.WorkerShard` per worker loop, held
        by the worker at the same position of ``loop_workers``.
    n_samples : int
        Rows in all shards together (one epoch).
    problem : LinearProblem
    settings : Settings
        ``n_blocks`` is the number of blocks.
    init : ndarray of shape (n_coords, n_outputs), optional
        Starting coefficients (intercept last).
    t_start : int
        Samples processed by earlier fits (warm start): the schedule goes on.
    kept : KeptStore, optional
        Blocks kept from the last fit (``partial_fit``): taken as they are
        when they still serve this layout and hold ``init``; the blocks this
        fit ends with are kept there.
    moments : tuple of ndarrays, optional
        An update rule's moments to start from (shaped as ``init``).

    Returns
    -------
    FitResult
    """
    mode = MODES[settings.solver]
    n_coords = problem.n_coords
    n_blocks = min(settings.n_blocks, n_coords)
    workers = sorted(client.nthreads())  # asks the scheduler: no stale cache
    token = uuid.uuid4().hex[:8]
    run = Run(client, shards, loop_workers, settings, token)
    sizes = block_sizes(n_coords, n_blocks)
    icpt_block = problem.n_features % n_blocks
    inits = [None] * n_blocks if init is None else [init[b::n_blocks] for b in range(n_blocks)]
    futures = []
    key = ("blocks", mode, n_blocks, settings.max_staleness, layout_key(problem), workers)
    reuse = kept.take(client, key, init) if kept is not None else None
    # epochs may be undone (variance reduction, rules); checkpoints read the changes
    undoable = problem.svrg is not None or problem.rule is not None
    track = bool(settings.checkpoint_every)

    def body():
        if reuse is not None:
            run.actors, run.channel = reuse
            run.call_blocks("begin", len(shards), undoable, track)
        for b, size in enumerate(sizes if reuse is None else ()):
            unpenalised = problem.n_features // n_blocks if (
                problem.fit_intercept and b == icpt_block) else -1
            cls, extra = BlockServer, {}
            if problem.rule is not None:
                cls, extra = RuleServer, {"rule": copy.deepcopy(problem.rule), "moments": (
                    None if moments is None else tuple(a[b::n_blocks] for a in moments))}
            futures.append(client.submit(
                cls, b, n_blocks, size, problem.n_outputs, problem.penalty, unpenalised, mode,
                len(shards), settings.max_staleness, inits[b], t_start,
                problem.svrg is not None,
                precondition=problem.svrg is not None and problem.svrg.step is None,
                undoable=undoable, track=track, **extra, actor=True,
                workers=[workers[b % len(workers)]], key=f"asyncopt-block-{b}-{token}"))
        if reuse is None:
            run.actors = run.connect(futures)
            if kept is not None:
                kept.keep(client, key, futures, run.actors, run.channel)
        run.config = LoopConfig(
            mode=mode, kernel=kernel_args(problem), penalty=problem.penalty,
            n_loops=len(shards), timeout=settings.timeout,
            bounded=mode == "async" and settings.max_staleness is not None,
            zero_start=init is None, block_sizes=tuple(sizes), channel=run.channel)
        topology = Blocks(run, problem, n_samples, t_start, n_blocks, init)
        drive(run, topology)
        result = epochs_result(run, topology.final_model(track), topology.total)
        if problem.rule is not None:
            result.moments = topology.moments()
        if kept is not None:
            kept.model = result.model
        return result

    return on_cluster(client, run, futures, body, kept)


class Blocks:
    """The driver's side of a fit on coefficient blocks (see :func:`~.run.drive`)."""

    def __init__(self, run, problem, n_samples, t_start, n_blocks, init):
        self.run = run
        self.problem = problem
        self.n_samples = n_samples
        self.total = t_start
        self.n_blocks = n_blocks
        self.init = init
        self.driver_copy = None  # the checkpoints' copy of the model (see checkpoint_model)
        self.initial_penalty = 0.0 if init is None else problem.penalty.value(
            init[:problem.n_features])
        self.kind = ("rule" if problem.rule is not None else
                     "svrg" if problem.svrg is not None else "sgd")
        self.step = None
        self.before = None  # a rule fit's objective at its first snapshot
        self.redo = False  # the last epoch was undone (rollback)
        self.trail = ObjectiveTrail()

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
            return HalvingSteps(stop)
        return RuleSteps(self.problem.rule.lr, self.problem.svrg is not None, stop, self.before)

    def start(self, first, last):
        run, n = self.run, self.n_samples
        target = self.total + n
        if self.kind == "sgd":
            self.step = self.problem.schedule.eta0
            run.start_epochs(sgd_epoch, first, last, target)
            return
        if self.kind == "svrg":
            svrg = self.problem.svrg
            run.config = replace(run.config, svrg=SVRGStep(
                n, svrg.smoothness, svrg.step, normalise=svrg.step is None,
                fit_intercept=self.problem.fit_intercept))
            # the first epoch also takes the fit's first snapshot and sets the step
            run.start_epochs(epoch_then_snapshot, first, last, target, sweep_epoch, n)
            return
        # an update rule: a snapshot first (row counts for the penalty weights and,
        # with variance reduction, the snapshot of the gradients)
        reports = run.run_loops(run_snapshot, f"{run.settings.solver}-snapshot", 0, True)
        run.call_blocks("finish_snapshot", n)
        run.call_blocks("scale_steps")
        stats = run.call_blocks("stats")
        self.before = self._loss(reports) + sum(s.penalty for s in stats)
        self.step = self.problem.rule.lr
        run.config = replace(run.config, grad=GradOptions(
            self.problem.svrg is not None, run.settings.gradient_rows, n))
        run.start_epochs(rule_epoch, first, last, target, n)

    def _loss(self, reports):
        return sum(r.loss_sum for r in reports) / self.n_samples

    def epoch(self, epoch):
        reports = self.run.epoch_reports(epoch)
        stats = self.run.call_blocks("stats")
        self.total = max(s.samples for s in stats)
        penalty = sum(s.penalty for s in stats)
        before = None
        if self.kind == "sgd":
            passes = [r.epoch for r in reports]
            loss = sum(p.loss_sum for p in passes) / max(sum(p.samples for p in passes), 1)
        else:  # exact: the snapshot (or loss) pass after the epoch
            passes = [p for r in reports for p in r.passes()]
            loss = self._loss([r.after for r in reports])
            if self.kind == "svrg" and reports[0].start is not None:
                self.step = reports[0].eta
                before = self._loss([r.start for r in reports]) + self.initial_penalty
        objective = loss + penalty
        gap = estimate = None
        if self.certifies():
            after = [r.after for r in reports]
            if all(a.curvature is not None for a in after):
                gap = duality_gap(self.problem.penalty,
                                  self.run.call_blocks("gap_terms", self.n_samples), loss,
                                  penalty, sum(a.curvature for a in after) / self.n_samples)
            estimate = self.trail.add(objective)
        columns = store_columns(stats, passes, sum(r.remote_calls for r in reports)
                                + self.run.driver_calls())
        row = {"samples": self.total, "updates": columns.pop("updates"), "loss": loss,
               "objective": objective, "eta0": self.step, **columns}
        if self.certifies():
            row["gap_bound"] = math.nan if gap is None else gap
            row["gap_estimate"] = math.nan if estimate is None else estimate
        return EpochResult(
            row, objective, self.total, self.step, before,
            log=(f"objective {objective:.6g}, {time.perf_counter() - self.run.started:.3g} s, "
                 f"staleness {row['staleness_mean']:.2f}/{row['staleness_max']}, "
                 f"compute {100 * row['compute_fraction']:.0f}%"),
            diverged=(f"the objective became {objective} at epoch {epoch}: the step size is "
                      "too large; lower eta0 (or raise alpha with learning_rate='optimal'), "
                      "or scale features, targets or sample weights far from 1"),
            gap_bound=gap, gap_estimate=estimate)

    def next(self, epoch, step):
        run = self.run
        config = None
        if self.kind == "sgd" and step != self.step:
            config = replace(run.config, kernel=kernel_args(self.problem, eta0=step))
        elif self.kind == "svrg":
            config = run.config.with_eta(step)
        elif self.kind == "rule" and step != self.step:
            run.call_blocks("set_lr", step)  # the loops wait for the decision meanwhile
        if self.kind != "sgd" and not self.redo:
            run.call_blocks("keep")  # the epoch stands: the iterate to go back to
        self.step = step
        run.proceed(epoch, self.total + self.n_samples, config, self.redo)
        self.redo = False

    def rollback(self, epoch, final):
        """Undo ``epoch``: every block back at the iterate the epoch started from;
        unless the fit ends here, the loops take the snapshot there again."""
        self.run.call_blocks("restore")
        self.redo = not final

    def finish(self):
        self.run.finish_epochs()

    def checkpoint_model(self):
        """The model for a checkpoint: the driver's copy of it, brought up to date
        with the coordinates each block changed since the last checkpoint
        (``BlockServer.changes``), so a checkpoint costs what changed, not the
        model's size.  Updated in place: only the latest checkpoint holds it.
        Every block's changes arrive before any is applied: a worker lost
        meanwhile leaves the copy at the last checkpoint."""
        changes = self.run.call_blocks("changes")
        if self.driver_copy is None:  # the blocks report their changes since the fit's start
            shape = (self.problem.n_coords, self.problem.n_outputs)
            self.driver_copy = (wide_zeros(shape) if self.init is None
                         else np.array(self.init, dtype=np.float64, order="C", copy=True))
        for b, (ids, values) in enumerate(changes):
            if ids is None:
                self.driver_copy[b::self.n_blocks] = values
            else:
                self.driver_copy[b::self.n_blocks][ids] = values
        return self.driver_copy

    def final_model(self, tracked):
        """The fit's model: when the blocks ``tracked`` their changes, the
        checkpoints' copy brought up to date (what changed since the last
        checkpoint, none after the last epoch's), else a whole read."""
        return self.checkpoint_model() if tracked else self.model()

    def model(self):
        """All blocks' coefficients as one (n_coords, n_outputs) array, intercept last."""
        return self._interleave(self.run.call_blocks("coefficients"))

    def moments(self):
        """An update rule's moments, each as one array shaped as :meth:`model`."""
        per_block = self.run.call_blocks("moments")
        return tuple(self._interleave([b[k] for b in per_block])
                     for k in range(len(per_block[0])))

    def _interleave(self, blocks):
        full = np.empty((sum(len(b) for b in blocks), blocks[0].shape[1]))
        for b, values in enumerate(blocks):
            full[b::self.n_blocks] = values
        return full
