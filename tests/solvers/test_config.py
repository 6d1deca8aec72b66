"""Typed configuration (``solvers/config.py``): the one mapping of a problem to the
kernels' arguments, immutability, and the loop configuration's replacements."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt.data.shards import NO_WEIGHTS
from dask_asyncopt.kernels import sweeps
from dask_asyncopt.objective.losses import HUBER, LOG_LOSS
from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.schedules import INVSCALING, OPTIMAL
from dask_asyncopt.solvers.config import (
    SVRG,
    Decision,
    EpochReport,
    FactorLoopConfig,
    FactorProblem,
    FitResult,
    GradOptions,
    KernelArgs,
    LinearProblem,
    LoopConfig,
    PassReport,
    Schedule,
    Settings,
    SVRGStep,
    Validation,
    kernel_args,
)

from ..reference import ref_sweep


def _problem(**kw):
    return LinearProblem(**{**dict(
        n_features=12, n_outputs=2, loss=HUBER, penalty=ElasticNet(0.03, 0.25),
        fit_intercept=True, schedule=Schedule(INVSCALING, 0.2, power_t=0.4, t0=7.0),
        epsilon=0.6, intercept_decay=0.01), **kw})


def test_kernel_args_lay_the_problem_out_as_the_sweeps_read_it():
    args = kernel_args(_problem())
    assert isinstance(args, KernelArgs)
    assert (args.loss, args.schedule) == (HUBER, INVSCALING)
    p = args.params
    assert p.shape == (sweeps.N_PARAMS,) and p.dtype == np.float64
    assert (p[sweeps.P_ETA0], p[sweeps.P_ALPHA], p[sweeps.P_L1_RATIO], p[sweeps.P_T0],
            p[sweeps.P_POWER_T], p[sweeps.P_EPSILON], p[sweeps.P_INTERCEPT_DECAY]) == (
        0.2, 0.03, 0.25, 7.0, 0.4, 0.6, 0.01)
    # eta0 replaced (a between-epoch decision), nothing else; a new array each time
    other = kernel_args(_problem(), eta0=0.05)
    assert other.params[sweeps.P_ETA0] == 0.05
    np.testing.assert_array_equal(np.delete(other.params, sweeps.P_ETA0),
                                  np.delete(p, sweeps.P_ETA0))
    assert other.params is not p and p[sweeps.P_ETA0] == 0.2


@pytest.mark.parametrize("schedule,name", [(OPTIMAL, "optimal"), (INVSCALING, "invscaling")])
def test_a_sweep_with_kernel_args_is_the_problems_sgd(schedule, name):
    """What the loops run from ``kernel_args``: the reference's per-sample proximal SGD
    with the problem's loss, schedule, penalty, epsilon and intercept decay."""
    rng = np.random.default_rng(0)
    problem = _problem(loss=LOG_LOSS, schedule=Schedule(schedule, 0.2, 0.4, 50.0),
                       n_outputs=1)
    X = rng.normal(size=(20, 6)) * (rng.random((20, 6)) < 0.5)
    X[:, 5] = 0.0  # the intercept's slot
    Y = np.where(rng.random((20, 1)) < 0.5, -1.0, 1.0)
    rows = rng.permutation(20).astype(np.int64)
    w0 = rng.normal(scale=0.3, size=(6, 1))
    Xc = sp.csr_matrix(X)
    w = w0.copy()
    loss, sched, params = kernel_args(problem)
    got = sweeps.sweep_csr(Xc.indptr, Xc.indices, Xc.data, Y, NO_WEIGHTS, rows, w, 5, loss,
                           sched, params, 3.0, 2.0)
    want = ref_sweep(X, Y, rows, w0, 5, "log_loss", name, {
        "eta0": 0.2, "alpha": 0.03, "l1_ratio": 0.25, "t0": 50.0, "power_t": 0.4,
        "epsilon": 0.6, "decay": 0.01}, 3.0, 2.0)
    np.testing.assert_allclose(got, want[:3], rtol=1e-10)
    np.testing.assert_allclose(w, want[3], rtol=1e-10, atol=1e-14)


def test_with_eta_replaces_only_the_svrg_step():
    base = LoopConfig(mode="sync", kernel=kernel_args(_problem()), penalty=ElasticNet(0.1, 1.0),
                      n_loops=3, timeout=5.0,
                      svrg=SVRGStep(100, 0.25, None, normalise=True, fit_intercept=True))
    assert base.sync and not dataclasses.replace(base, mode="async").sync
    assert base.svrg.eta is None
    stepped = base.with_eta(0.125)
    assert stepped.svrg.eta == 0.125 and base.svrg.eta is None  # a new configuration
    assert dataclasses.replace(stepped, svrg=base.svrg) == base
    assert stepped.svrg == dataclasses.replace(base.svrg, eta=0.125)


@pytest.mark.parametrize("obj", [
    Schedule(OPTIMAL, 0.1), SVRG(0.25), _problem(),
    FactorProblem(4, 0.1, 0.1, 0.1, "adagrad", 0.01), Validation(abs, "score"), Settings(),
    LoopConfig("async", None, ElasticNet(), 1, 1.0), SVRGStep(1, 1.0, None, True, True),
    GradOptions(True, 32, 100), FactorLoopConfig("sync", 1, 0.0, 0.1, 0.1, 0.1, 1, (), 1.0),
])
def test_configurations_are_frozen(obj):
    """What crosses the driver/loop boundary cannot change under a loop: a change is a
    new object (``dataclasses.replace``)."""
    field = dataclasses.fields(obj)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, None)


def test_problem_and_settings_defaults():
    assert _problem().n_coords == 13 and _problem(fit_intercept=False).n_coords == 12
    s = Settings()
    assert (s.solver, s.max_iter, s.tol, s.n_iter_no_change, s.checkpoint_every,
            s.first_epoch, s.resume) == ("asyb", 20, 1e-3, 5, 1, 1, None)


def test_reports_and_decisions():
    start = PassReport(0, 1.0, 10, 0.1, 0.2)
    epoch = PassReport(0, 2.0, 10, 0.1, 0.2, steps=3)
    after = PassReport(0, 3.0, 10, 0.1, 0.2)
    assert EpochReport(epoch).passes() == [epoch]
    assert EpochReport(epoch, after, start, 0.5).passes() == [start, epoch, after]
    assert EpochReport(epoch, after).eta is None
    assert EpochReport(epoch).remote_calls == 0 == epoch.remote_calls
    # go on to a sample count, with a new loop configuration or not; or undo the epoch
    assert Decision(100) == (100, None, False) and Decision(7, "c").config == "c"
    assert Decision(7, redo=True).redo and not Decision(7, "c").redo
    result = FitResult(np.zeros(2))
    assert (result.history, result.n_iter, result.t, result.best_epoch) == ([], 0, 0, 0)
    assert FitResult(None).history is not result.history  # no shared default list
