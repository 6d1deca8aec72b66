"""Linear models on the cluster: data placement, the solver's fit, restarts.

The estimators hand over validated data, a :class:`~.config.LinearProblem` and
:class:`~.config.Settings`; this places the data on the current workers
(:mod:`~dask_asyncopt.data.placement`: one shard per worker loop, dask
collections where they already are), runs the solver named in the settings
(:data:`.registry.SOLVERS`) and, when a worker is lost, places the data on
the survivors and resumes from the driver's last checkpoint.

A sparse ``X`` that uses few of the model's columns (a hashed model wider
than its data) is fitted on those columns alone (:func:`used_columns`):
every other coefficient starts at 0 and no gradient, step or proximal map
moves it, so the store, the checkpoints and every per-coordinate array
follow the data, not the width.
"""

import warnings
from dataclasses import replace
from functools import partial

import numpy as np
import scipy.sparse as sp

from ..data.inputs import is_dask
from ..data.placement import place_dask, place_in_memory
from ..data.shards import ShardLayout
from ..kernels.columns import renumber_columns
from ..store.blocks import wide_zeros
from .config import HeldOut
from .gradients import exchange_sizes
from .registry import SOLVERS
from .run import place_loops, with_restarts

#: fit a sparse ``X`` on the columns it uses when they are at most this share of the model
COMPACT_SHARE = 1 / 8


def used_columns(X, problem, init, kept):
    """``(columns, X on them)`` when the fit may run on the columns in-memory
    sparse ``X`` uses alone, else ``None``.

    Exact when every other coefficient stays where it starts, at 0: no row
    gives it a gradient and the penalties' proximal maps keep 0 at 0.  Not
    for a warm start with values there (a proximal map would shrink them),
    an update rule (its state), or the store ``partial_fit`` keeps (its
    layout must serve the next batch's columns too); and only when they are
    at most :data:`COMPACT_SHARE` of the model (else renumbering the
    non-zeros costs more than the smaller store saves).  Finding them costs
    passes over the non-zeros, not a sort
    (:func:`~dask_asyncopt.kernels.columns.renumber_columns`)."""
    if (kept is not None or problem.rule is not None or is_dask(X) or not sp.issparse(X)
            or X.format != "csr"):
        return None
    n_features = problem.n_features
    columns, local = renumber_columns(X.indices, n_features, int(COMPACT_SHARE * n_features))
    if columns.shape[0] > COMPACT_SHARE * n_features:
        return None
    if init is not None and np.count_nonzero(init[:n_features]) != np.count_nonzero(
            init[columns]):
        return None
    return columns, sp.csr_matrix((X.data, local, X.indptr),
                                  shape=(X.shape[0], columns.shape[0]))


def _on_columns(columns, problem, init, settings):
    """The problem, start and settings of a fit on ``columns`` alone: the
    intercept stays last; a validation score sees the whole model."""
    n_used = columns.shape[0]
    if init is not None:
        init = np.concatenate([init[columns], init[problem.n_features:]])
    validation = settings.validation
    if validation is not None:
        score = validation.score
        validation = replace(validation, score=lambda model: score(
            _whole(model, columns, problem.n_features)))
    return (replace(problem, n_features=n_used), init,
            replace(settings, validation=validation))


def _whole(model, columns, n_features):
    """A model over ``columns`` (intercept last) as one over all ``n_features``.

    Only its non-zero coefficients are written, into zeros on 4 KB pages
    (:func:`~dask_asyncopt.store.blocks.wide_zeros`): the used columns of a
    hashed model fall on nearly every page of it, but an L1 fit leaves most
    of them at 0, and a page no non-zero falls on is never mapped (it reads as
    zeros without memory).  Exact: an entry is skipped only when all its bits
    are 0 (``-0.0`` is written)."""
    n_used = columns.shape[0]
    full = wide_zeros((n_features + model.shape[0] - n_used, model.shape[1]))
    used = model[:n_used]
    rows = np.flatnonzero(used.view(np.uint64).any(axis=1))
    full[columns[rows]] = used[rows]
    full[n_features:] = model[n_used:]
    return full


def held_out_score(client, held, problem, spec, model, timeout=None):
    """The validation score of ``model`` on rows held out on the cluster
    (``held``: futures of each chunk's rows, see
    :func:`~dask_asyncopt.data.placement.held_rows`): the model goes to the rows,
    each chunk's sums (``spec.part_score``) come back and ``spec.combine`` makes
    them the score.  A ``TimeoutError`` after ``timeout`` seconds (the fit's):
    the driver waits here between epochs, and a worker that hangs without
    leaving would otherwise stop the fit for good."""
    from distributed import wait

    [m] = client.scatter([model], hash=False)
    sums = [client.submit(_part_sums, m, part, problem.n_features, problem.fit_intercept,
                          spec.part_score, pure=False) for part in held]
    try:
        try:
            wait(sums, timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError("scoring the held-out rows") from exc
        return spec.combine(client.gather(sums))
    finally:
        client.cancel([*sums, m])


def _part_sums(model, part, n_features, fit_intercept, part_score):
    X, y, w = part
    decision = np.asarray(X @ model[:n_features])
    if fit_intercept:
        decision = decision + model[n_features]
    return part_score(decision, y, w)


def store_bytes(problem, solver, n_loops):
    """About how many bytes the fit's store takes on the cluster: per coordinate
    and output, the weights, the variance-reduced solver's terms and the lazy
    prox's bookkeeping; AD-PSGD keeps one replica per loop."""
    k = problem.n_outputs
    svrg = problem.svrg is not None or problem.rule is not None
    per = 8 * k + 8 + (24 * k + 32 if svrg else 24)
    if solver == "adpsgd":
        per = n_loops * (16 * k + 24)
    return problem.n_coords * per


def check_memory(client, problem, settings, n_loops):
    """Refuse a model the cluster cannot hold before any worker tries to, with the
    numbers and the fix (a bare MemoryError from a worker says neither)."""
    need = store_bytes(problem, settings.solver, n_loops)
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    have = sum(w.get("memory_limit") or 0 for w in workers)
    if have and need > 0.8 * have:
        raise MemoryError(
            f"the model has {problem.n_coords:,} coefficients per output "
            f"({problem.n_outputs} output(s)); its store would take about "
            f"{need / 2**30:.1f} GiB on the cluster, whose workers have "
            f"{have / 2**30:.1f} GiB in all: hash the features into fewer columns, add "
            "workers (or memory), or use solver='asyb' (AD-PSGD keeps a full replica "
            "per worker loop)")


def check_solver_settings(settings):
    """Settings the chosen solver does not use: said in a ``UserWarning`` and
    dropped (``max_staleness`` bounds ``asyb``'s pushes only; ``adpsgd`` keeps
    replicas, not blocks)."""
    if settings.max_staleness is not None and settings.solver != "asyb":
        how = ("every round's reads wait at a barrier" if settings.solver == "sync" else
               "its replicas have no pushes to hold back")
        warnings.warn(
            f"max_staleness={settings.max_staleness} has no effect with "
            f"solver={settings.solver!r} ({how}); it bounds solver='asyb' only",
            UserWarning, stacklevel=3)
        settings = replace(settings, max_staleness=None)
    if settings.n_blocks is not None and settings.solver == "adpsgd":
        warnings.warn(
            f"n_blocks={settings.n_blocks} has no effect with solver='adpsgd' (every "
            "worker loop keeps a full replica of the model; there are no blocks)",
            UserWarning, stacklevel=3)
        settings = replace(settings, n_blocks=None)
    return settings


def block_count(requested, n_workers, problem):
    """Coefficient blocks: ``requested`` (``n_blocks``; ``None``: one per Dask
    worker), at most one per coordinate (features + intercept): clipped silently
    for the default, with a ``UserWarning`` naming both numbers for an explicit
    ``n_blocks``."""
    n_blocks = requested or n_workers
    if n_blocks > problem.n_coords:
        if requested is not None:
            what = f"{problem.n_features} feature(s)" + (
                " + the intercept" if problem.fit_intercept else "")
            warnings.warn(
                f"n_blocks={requested} is more than the model's {problem.n_coords} "
                f"coordinates ({what}): the fit uses {problem.n_coords} blocks, one "
                "coordinate each", UserWarning, stacklevel=3)
        n_blocks = problem.n_coords
    return n_blocks


def fit_linear(client, data, problem, settings, rng, init=None, t_start=0, kept=None,
               moments=None):
    """Fit a linear model; returns a :class:`~.config.FitResult` whose ``model`` is
    the ``(n_features + fit_intercept, n_outputs)`` coefficients, intercept last.

    Parameters
    ----------
    client : distributed.Client
    data : tuple (X, Y, W, encode)
        Validated in-memory ``X`` (CSR or dense), encoded targets ``Y`` and
        weights ``W`` (shaped as ``Y``, or ``None``: all 1) with ``encode``
        ``None``; or dask collections ``X``, ``y``, ``sample_weight`` (or
        ``None``) and the function that turns a chunk of ``y`` and of
        ``sample_weight`` into ``Y, W`` on the workers.
    problem : LinearProblem
    settings : Settings
    rng : numpy.random.Generator
        The shuffle, the rows' split between loops and the loops' orders.
    init : ndarray, optional
        Starting coefficients (intercept last).
    t_start : int
        Samples of earlier fits (warm start): the schedules go on from there.
    kept : KeptStore, optional
        The store of the last fit, kept on the cluster (``partial_fit``): used
        as it is when it still fits this one, and the store this fit ends with
        is kept there (see :class:`~.run.KeptStore`).
    moments : tuple of ndarrays, optional
        An update rule's moments to start from with ``init`` (a warm start;
        see :attr:`~.config.FitResult.moments`).  A restart from a checkpoint
        starts them afresh.

    Settings that disagree with the data, the cluster or the solver are checked
    before any data moves: ``n_workers`` above the rows (or a dask ``X``'s row
    chunks) and ``n_blocks`` above the coordinates are clipped, ``n_workers``
    above the workers' threads is kept (loops share threads), ``max_staleness``
    without ``solver="asyb"`` and ``n_blocks`` with ``solver="adpsgd"`` are
    dropped; each with a ``UserWarning`` when the user set the value.  A
    ``batch_size`` above a loop's rows makes one exchange of all of them.
    """
    fit = SOLVERS[settings.solver]
    X, Y, W, encode = data
    settings = check_solver_settings(settings)
    compact = used_columns(X, problem, init, kept)
    if compact is not None:
        columns, X = compact
        n_features = problem.n_features
        problem, init, settings = _on_columns(columns, problem, init, settings)
    caps = [(X.shape[0], f"X has {X.shape[0]} row(s) (a worker loop needs at least one)",
             "")]
    if is_dask(X):
        caps.append((X.numblocks[0], f"X has {X.numblocks[0]} row chunk(s) (a worker loop "
                     "takes whole chunks)", "; rechunk X into at least n_workers row chunks "
                     "to run them all"))

    def attempt(settings):
        nthreads = client.nthreads()  # asks the scheduler: no stale cache
        loop_workers = place_loops(settings.n_workers, nthreads, caps,
                                   restarted=settings.first_epoch > 1)
        n_loops, workers = len(loop_workers), sorted(nthreads)
        settings = replace(settings, n_blocks=block_count(settings.n_blocks, len(workers),
                                                          problem))
        check_memory(client, problem, settings, n_loops)
        batch_size = settings.batch_size
        if problem.rule is not None:  # gradient exchanges have their own sizes
            batch_size, gradient_rows = exchange_sizes(
                -(-X.shape[0] // n_loops), settings.batch_size,
                settings.max_staleness is not None)
            settings = replace(settings, gradient_rows=gradient_rows)
        layout = ShardLayout(problem.n_features, settings.n_blocks, problem.fit_intercept,
                             batch_size)
        held = []
        if is_dask(X):
            validation = settings.validation
            hold_out = validation.score if validation is not None and isinstance(
                validation.score, HeldOut) else None
            shards, n_samples, *held = place_dask(client, X, Y, W, loop_workers, layout,
                                                  encode, rng, hold_out)
            if hold_out is not None:
                held = held[0]
                settings = replace(settings, validation=replace(validation, score=partial(
                    held_out_score, client, held, problem, hold_out,
                    timeout=settings.timeout)))
        else:
            shards, n_samples = place_in_memory(client, X, Y, W, loop_workers, layout,
                                                rng)
        start, samples, start_moments = init, t_start, moments
        if settings.resume is not None:
            start, samples = settings.resume.model, settings.resume.samples
            start_moments = None
        try:
            return fit(client, shards, loop_workers, n_samples, problem, settings, start,
                       samples, kept, start_moments)
        finally:
            client.cancel(shards + held)

    result = with_restarts(client, settings, attempt)
    if not np.isfinite(result.model).all():
        raise FloatingPointError("the coefficients became non-finite: lower eta0")
    if compact is not None:
        result.model = _whole(result.model, columns, n_features)
    return result
