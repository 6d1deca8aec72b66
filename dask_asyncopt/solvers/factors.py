"""Matrix factorisation on the cluster: placement, factor blocks and the epochs.

Users are split into one block per worker loop (the loop owns their
ratings, see :mod:`.mf`); the item side is chosen by the solver
(:data:`.registry.ITEM_SIDES`): item blocks checked out one loop at a time (``asyb``,
``sync``) or one replica of all item rows per loop (``adpsgd``,
:mod:`.mf_gossip`).  The epochs run through :func:`~.run.drive`, as the linear
models' do: one task per loop per epoch, the history row, the step policy
(:class:`~.steps.EpochSteps`), early stopping on the validation RMSE with the
best epoch's model kept, checkpoints and restarts after a lost worker.
"""

import math
import time
import uuid
import warnings
from dataclasses import replace

import numpy as np

from ..kernels.factors import RULE_ADAGRAD, RULE_AMSGRAD, RULE_SGD, row_width
from ..store.factors import FactorBlock
from .config import FactorLoopConfig, Validation
from .mf import make_rating_shard, rmse_of, stratify
from .registry import ITEM_SIDES
from .run import (
    EpochResult,
    Run,
    drive,
    epochs_result,
    on_cluster,
    stopping,
    store_columns,
    with_restarts,
    worker_loops,
)
from .steps import EpochSteps

#: ``FactorProblem.rule`` -> the kernels' step rule
FACTOR_RULES = {"adagrad": RULE_ADAGRAD, "constant": RULE_SGD, "amsgrad": RULE_AMSGRAD}


def fit_factors(client, ratings, n_ids, mu, problem, settings, rng, held_out=None):
    """Train a factorisation of ``ratings`` on the current workers, resuming on the
    surviving ones when a worker is lost.

    Parameters
    ----------
    client : distributed.Client
    ratings : tuple (users, items, ratings)
        Training ratings, ids already mapped to ``0..n-1``.
    n_ids : tuple (n_users, n_items)
    mu : float
        Global mean.
    problem : FactorProblem
    settings : Settings
        ``n_blocks``: item blocks (``None``: twice the loops).
    rng : numpy.random.Generator
        Stratification, initial factors and the loops' rating order.
    held_out : tuple (users, items, ratings), optional
        Validation ratings: their RMSE after every epoch (``valid_rmse``), early
        stopping on it (``settings.tol``) and the best epoch's model kept;
        without them the fit runs ``max_iter`` epochs.

    Returns
    -------
    FitResult
        ``model`` is the packed ``(U, V)`` in id order.

    Notes
    -----
    Checked before any data moves (a ``UserWarning`` for values the user set):
    ``n_workers`` above the users is clipped (a loop owns users of its own),
    above the Dask workers kept (loops share workers); ``n_blocks`` above the
    items is clipped, and below the loops kept (with ``asyb``/``sync`` at most
    ``n_blocks`` loops can hold an item block at a time).
    """
    seed = int(rng.integers(2**31))
    problem = replace(problem, rule=FACTOR_RULES[problem.rule])
    if held_out is None:
        settings = replace(settings, tol=None, validation=None)
    else:
        settings = replace(settings, validation=Validation(
            lambda model: rmse_of(model, mu, *held_out, problem.rule), "valid_rmse",
            lower_is_better=True, watch=True, keep_best=True))

    def attempt(settings):
        workers = sorted(client.nthreads())
        if not workers:
            raise RuntimeError("the Dask cluster has no workers" + (
                " left" if settings.first_epoch > 1 else ""))
        n_loops = worker_loops(settings.n_workers, workers, [(n_ids[0], (
            f"the ratings have {n_ids[0]} distinct user(s) (a worker loop owns users of "
            "its own)"), "")])
        n_blocks = item_blocks(settings.n_blocks, n_loops, n_ids[1], settings.solver)
        loop_workers = [workers[i % len(workers)] for i in range(n_loops)]
        layout, parts = stratify(*ratings, *n_ids, n_loops, n_blocks, rng)
        scattered, shards = [], []
        try:
            for w, addr in enumerate(loop_workers):
                # hash=False: identical data in two fits must not share (and cancel) keys
                scattered.append(client.scatter(parts[w], workers=[addr], direct=True,
                                                hash=False))
                shards.append(client.submit(
                    make_rating_shard, scattered[-1], int(rng.integers(2**31)),
                    workers=[addr], allow_other_workers=False, pure=False))
            del parts
            return fit(client, shards, loop_workers, layout, mu, problem, settings, seed)
        finally:
            # released now, not when the traceback of a failed fit (which IPython
            # keeps) lets its frames go
            client.cancel(shards + scattered)
            scattered.clear()
            shards.clear()

    result = with_restarts(client, settings, attempt)
    U, V = result.model
    if not (np.isfinite(U).all() and np.isfinite(V).all()):
        raise FloatingPointError("the factors became non-finite: lower eta0")
    return result


def item_blocks(requested, n_loops, n_items, solver):
    """Item blocks: ``requested`` (``n_blocks``; ``None``: twice the loops), at most
    one per item.  An explicit ``n_blocks`` above the items is clipped with a
    ``UserWarning``; one below the loops is kept, with a ``UserWarning`` when
    loops check blocks out (``asyb``, ``sync``: the other loops wait)."""
    n_blocks = requested or 2 * n_loops
    if n_blocks > n_items:
        if requested is not None:
            warnings.warn(
                f"n_blocks={requested} is more than the {n_items} distinct item(s) of the "
                f"ratings: the fit uses {n_items} item block(s), one item each",
                UserWarning, stacklevel=3)
        n_blocks = n_items
    if requested is not None and n_blocks < n_loops and solver != "adpsgd":
        warnings.warn(
            f"n_blocks={n_blocks} item block(s) for {n_loops} worker loops: a loop needs "
            f"an item block to itself, so at most {n_blocks} loop(s) work at a time while "
            f"the others wait; use n_blocks >= {n_loops} (None: twice the loops)",
            UserWarning, stacklevel=3)
    return max(n_blocks, 1)


def fit(client, shards, loop_workers, layout, mu, problem, settings, seed):
    """Train the factor blocks over the loops' shards (one attempt: a lost worker
    raises :class:`~.run.WorkerLost`)."""
    n_loops = len(shards)
    n_blocks = len(layout.item_sizes)
    token = uuid.uuid4().hex[:8]
    init = settings.resume.model if settings.resume is not None else None
    inits_u, inits_v = layout.split(*init) if init is not None else (
        [None] * n_loops, [None] * n_blocks)
    width = row_width(problem.n_factors, problem.rule)
    side = ITEM_SIDES[settings.solver]
    run = Run(client, shards, loop_workers, settings, token)
    futures = []

    def body():
        for w in range(n_loops):
            futures.append(client.submit(
                FactorBlock, w, int(layout.user_sizes[w]), problem.n_factors,
                problem.init_scale, [seed, 0, w], inits_u[w], width, actor=True,
                workers=[loop_workers[w]], key=f"asyncopt-mf-users-{w}-{token}"))
        futures.extend(side.submit(client, layout, problem, seed, inits_v, loop_workers, token))
        actors = run.connect(futures)
        run.actors = actors[:n_loops]  # the driver reads the user blocks directly
        items = side(actors[n_loops:], layout, settings.timeout)
        run.config = items.loop_config(FactorLoopConfig(
            settings.solver, n_loops, mu, problem.eta0, problem.reg_factors, problem.reg_biases,
            problem.rule, tuple(problem.adam), settings.timeout,
            first_epoch=settings.first_epoch, channel=run.channel),
            problem.n_factors + 1)
        topology = Factors(run, items, layout, problem)
        drive(run, topology)
        return epochs_result(run, topology.model(), topology.ratings)

    return on_cluster(client, run, futures, body)


class Factors:
    """The driver's side of a factorisation fit (see :func:`~.run.drive`)."""

    def __init__(self, run, items, layout, problem):
        self.run = run
        self.items = items
        self.layout = layout
        self.problem = problem
        self.ratings = 0

    def policy(self):
        return self._policy

    def start(self, first, last):
        # plain SGD: eta0 / sqrt(epoch) (the adaptive rules adapt per row; AMSGrad
        # with this decay measured worse)
        self._policy = EpochSteps(self.problem.eta0, self.problem.rule == RULE_SGD,
                                  stopping(self.run.settings), first)
        self.step = self._policy.step

    def epoch(self, epoch):
        run = self.run
        run.config = replace(run.config, eta=self.step)
        futures = [
            run.client.submit(self.items.loop, shard, run.actors[i], *self.items.loop_args(),
                              run.config, i, epoch,
                              **self.items.loop_kwargs(run.settings.solver),
                              workers=[addr], allow_other_workers=False,
                              pure=False, key=f"asyncopt-mf-{run.settings.solver}-loop-{i}-"
                                              f"epoch-{epoch}-{run.token}")
            for i, (shard, addr) in enumerate(zip(run.shards, run.loop_workers, strict=True))]
        run.loops[:] = futures
        reports = run.gather_loops()
        stats, extra = self.items.after_epoch(reports)
        n = sum(r.samples for r in reports)
        self.ratings += n
        wall = sum(r.wall_time for r in reports)
        columns = store_columns(stats, reports, sum(r.remote_calls for r in reports)
                                + run.driver_calls())
        rmse = math.sqrt(sum(r.loss_sum for r in reports) / max(n, 1))
        row = {"ratings": n, "train_rmse": rmse, "updates": columns.pop("updates"),
               "eta0": self.step, **columns,
               "wait_fraction": sum(r.wait_time for r in reports) / max(wall, 1e-12), **extra}
        hint = "lower eta0" + (", or use learning_rate='adagrad'"
                               if self.problem.rule == RULE_SGD else "")
        return EpochResult(
            row, rmse, self.ratings, self.step,
            log=(f"train RMSE {rmse:.5g}, {time.perf_counter() - run.started:.3g} s, "
                 f"compute {100 * row['compute_fraction']:.0f}%, "
                 f"wait {100 * row['wait_fraction']:.0f}%"),
            diverged=f"the training error became {rmse} at epoch {epoch}: {hint}")

    def next(self, epoch, step):
        self.step = step

    def finish(self):
        pass

    def model(self):
        """Packed ``(U, V)`` in id order, step state included."""
        calls = [h.call("rows") for h in self.run.handles()]
        users = [c.result(self.run.settings.timeout) for c in calls]
        return self.layout.gather(users, self.items.item_blocks())
