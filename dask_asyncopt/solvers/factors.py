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
from ..store.factors import FactorBlock, initial_rows
from .config import FactorLoopConfig, Validation
from .mf import held_out_sse, make_rating_shard, place_rating_parts, rmse_of, stratify
from .registry import ITEM_SIDES
from .run import (
    EpochResult,
    Run,
    drive,
    epochs_result,
    on_cluster,
    place_loops,
    stopping,
    store_columns,
    with_restarts,
)
from .steps import EpochSteps

#: ``FactorProblem.rule`` -> the kernels' step rule
FACTOR_RULES = {"adagrad": RULE_ADAGRAD, "constant": RULE_SGD, "amsgrad": RULE_AMSGRAD}


def fit_factors(client, ratings, n_ids, mu, problem, settings, rng, held_out=None,
                init=None):
    """Train a factorisation of ``ratings`` on the current workers, resuming on the
    surviving ones when a worker is lost.

    Parameters
    ----------
    client : distributed.Client
    ratings : tuple (users, items, ratings) or list of dask Delayed
        Training ratings, ids already mapped to rows ``0..n-1``: arrays in the
        caller's memory (stratified here, each loop's strata scattered to its
        worker), or parts of a dask collection, each a ``Delayed`` computing to
        such a tuple.  Parts are computed on the workers and regrouped there by
        user block (:func:`~.mf.place_rating_parts`): no rating passes through
        the client, which receives only the ratings per user and per item.
    n_ids : tuple (n_users, n_items)
    mu : float
        Global mean.
    problem : FactorProblem
    settings : Settings
        ``n_blocks``: item blocks (``None``: twice the loops).  ``first_epoch``
        above 1 continues the epoch count of an earlier fit (history rows, the
        ``eta0 / sqrt(epoch)`` steps of ``rule="constant"``); epochs
        ``first_epoch .. max_iter`` run.
    rng : numpy.random.Generator
        Stratification, initial factors and the loops' rating order.
    held_out : tuple (users, items, ratings) or list of dask Delayed, optional
        Validation ratings, in memory or parts on the cluster (their errors are
        summed where they lie): their RMSE after every epoch (``valid_rmse``),
        early stopping on it (``settings.tol``) and the best epoch's model kept;
        without them the fit runs every epoch.
    init : tuple (U, V) of ndarray, optional
        Starting rows in id order (a warm start): packed rows of the first
        ``len(U)`` users and ``len(V)`` items, either ``n_factors + 1`` columns
        (factors, bias: the step state starts fresh) or the rule's full packed
        width (:func:`~dask_asyncopt.kernels.factors.row_width`, step state
        included).  Rows of ids beyond them (new users and items) start as a
        fresh fit's.

    Returns
    -------
    FitResult
        ``model`` is the packed ``(U, V)`` in id order.

    Notes
    -----
    Checked before any data moves (a ``UserWarning`` for values the user set):
    ``n_workers`` above the users is clipped (a loop owns users of its own),
    above the workers' threads kept (loops share threads); ``n_blocks`` above the
    items is clipped, and below the loops kept (with ``asyb``/``sync`` at most
    ``n_blocks`` loops can hold an item block at a time).
    """
    seed = int(rng.integers(2**31))
    problem = replace(problem, rule=FACTOR_RULES[problem.rule])
    if init is not None:
        init = tuple(_full_rows(W, n, problem, [seed, 2, side])
                     for side, (W, n) in enumerate(zip(init, n_ids, strict=True)))
    on_cluster = not isinstance(ratings, tuple)
    held = None
    if held_out is None:
        settings = replace(settings, tol=None, validation=None)
    else:
        if isinstance(held_out, tuple):
            def score(model):
                return rmse_of(model, mu, *held_out, problem.rule)
        else:
            held = client.compute(list(held_out))

            def score(model):
                return _held_out_rmse(client, held, model, mu, problem.rule)
        settings = replace(settings, validation=Validation(
            score, "valid_rmse", lower_is_better=True, watch=True, keep_best=True))

    def attempt(settings):
        loop_workers = place_loops(settings.n_workers, client.nthreads(), [(n_ids[0], (
            f"the ratings have {n_ids[0]} distinct user(s) (a worker loop owns users of "
            "its own)"), "")], restarted=settings.resume is not None)
        n_loops = len(loop_workers)
        n_blocks = item_blocks(settings.n_blocks, n_loops, n_ids[1], settings.solver)
        token = uuid.uuid4().hex[:8]
        scattered, shards = [], []
        try:
            if on_cluster:
                layout, shards = place_rating_parts(client, ratings, n_ids, loop_workers,
                                                    n_blocks, rng, token)
            else:
                layout, parts = stratify(*ratings, *n_ids, n_loops, n_blocks, rng)
                for w, addr in enumerate(loop_workers):
                    # hash=False: identical data in two fits must not share (and cancel)
                    # keys
                    scattered.append(client.scatter(parts[w], workers=[addr], direct=True,
                                                    hash=False))
                    shards.append(client.submit(
                        make_rating_shard, scattered[-1], int(rng.integers(2**31)),
                        workers=[addr], allow_other_workers=False, pure=False))
                del parts
            return fit(client, shards, loop_workers, layout, mu, problem, settings, seed,
                       init)
        finally:
            # released now, not when the traceback of a failed fit (which IPython
            # keeps) lets its frames go
            client.cancel(shards + scattered)
            scattered.clear()
            shards.clear()

    try:
        result = with_restarts(client, settings, attempt)
    finally:
        if held is not None:
            client.cancel(held)
    U, V = result.model
    if not (np.isfinite(U).all() and np.isfinite(V).all()):
        raise FloatingPointError(
            "the factors became non-finite: lower eta0, or scale ratings far from 1 (e.g. "
            "y / y.std())")
    return result


def _full_rows(W, n, problem, seed):
    """``n`` packed rows starting with ``W`` (:func:`fit_factors`' ``init``)."""
    k = problem.n_factors
    width = row_width(k, problem.rule)
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] not in (k + 1, width) or W.shape[0] > n:
        raise ValueError(
            f"init rows of shape {W.shape} do not fit {n} rows of {k} factors: they need "
            f"at most {n} rows of {k + 1} (factors, bias) or {width} columns (with the "
            "step state)")
    rows = initial_rows(n, k, problem.init_scale, seed, width)
    rows[:W.shape[0], :W.shape[1]] = W
    return rows


def _held_out_rmse(client, held, model, mu, rule):
    """RMSE of ``model`` on held-out parts on the cluster: the model goes to the
    parts, their error sums come back."""
    [m] = client.scatter([model], hash=False)
    sums = [client.submit(held_out_sse, m, part, mu, rule, pure=False) for part in held]
    try:
        results = client.gather(sums)
    finally:
        client.cancel([*sums, m])
    n = sum(c for _, c in results)
    return math.sqrt(sum(s for s, _ in results) / n) if n else math.nan


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


def fit(client, shards, loop_workers, layout, mu, problem, settings, seed, init=None):
    """Train the factor blocks over the loops' shards (one attempt: a lost worker
    raises :class:`~.run.WorkerLost`), from ``init`` (full packed ``(U, V)``) if
    given, else from the checkpoint resumed or a random start."""
    n_loops = len(shards)
    n_blocks = len(layout.item_sizes)
    token = uuid.uuid4().hex[:8]
    if settings.resume is not None:
        init = settings.resume.model
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
        items = side(run.bind(actors[n_loops:]), layout, settings.timeout)
        run.config = items.loop_config(FactorLoopConfig(
            settings.solver, n_loops, mu, problem.eta0, problem.reg_factors, problem.reg_biases,
            problem.rule, tuple(problem.adam), settings.timeout,
            first_epoch=settings.first_epoch, channel=run.channel),
            problem.n_factors + 1)
        topology = Factors(run, items, layout, problem)
        drive(run, topology)
        return epochs_result(run, topology.final_model(), topology.ratings)

    return on_cluster(client, run, futures, body)


class Factors:
    """The driver's side of a factorisation fit (see :func:`~.run.drive`)."""

    def __init__(self, run, items, layout, problem):
        self.run = run
        self.items = items
        self.layout = layout
        self.problem = problem
        self.ratings = 0
        self.last_epoch = None

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
        self.last_epoch = epoch
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

    def final_model(self):
        """:meth:`model` after the last epoch: the checkpoint's if one was kept after
        it (the whole model crosses to the driver once, not twice)."""
        kept = self.run.checkpoint
        if kept is not None and self.last_epoch is not None and kept.epoch == self.last_epoch:
            return kept.model
        return self.model()

    def model(self):
        """Packed ``(U, V)`` in id order, step state included."""
        calls = [h.call("rows") for h in self.run.handles()]
        users = [c.result(self.run.settings.timeout) for c in calls]
        return self.layout.gather(users, self.items.item_blocks())
