"""Linear models on the cluster (``solvers/linear.py``): ``fit_linear`` places the data,
runs the solver named in the settings and resumes from checkpoints."""

import threading
from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

from dask_asyncopt.datasets import make_sparse_classification
from dask_asyncopt.objective.losses import LOG_LOSS, SMOOTHNESS
from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.schedules import CONSTANT
from dask_asyncopt.solvers import (
    SVRG,
    FitResult,
    LinearProblem,
    Schedule,
    Settings,
    Validation,
    fit_linear,
)
from dask_asyncopt.solvers.linear import used_columns
from dask_asyncopt.solvers.run import Checkpoint

from ..conftest import cluster_is_clean, logistic_objective

ALPHA = 1e-4


@pytest.fixture(scope="module")
def sparse():
    X, y = make_sparse_classification(1500, 200, random_state=2)
    return X, np.where(y == 1, 1.0, -1.0)[:, None], y


def _problem(svrg=True):
    return LinearProblem(n_features=200, n_outputs=1, loss=LOG_LOSS,
                         penalty=ElasticNet(ALPHA, 1.0), fit_intercept=True,
                         schedule=Schedule(CONSTANT, 0.05), intercept_decay=0.01,
                         svrg=SVRG(SMOOTHNESS[LOG_LOSS]) if svrg else None)


def test_fit_returns_the_model_intercept_last_and_its_exact_objective(client, sparse):
    X, Y, y = sparse
    result = fit_linear(client, (X, Y, None, None), _problem(),
                        Settings(solver="sync", max_iter=3, tol=None),
                        np.random.default_rng(0))
    assert isinstance(result, FitResult)
    assert result.model.shape == (201, 1) and result.n_iter == 3
    assert result.t == 3 * X.shape[0] and result.best_epoch == 3
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    f = logistic_objective(X, y, result.model[:200, 0], result.model[200], ALPHA, 1.0)
    np.testing.assert_allclose(result.history[-1]["objective"], f, rtol=1e-9)
    assert cluster_is_clean(client)


@pytest.mark.parametrize("paged", [False, True])
def test_a_model_wider_than_its_data_is_fitted_on_the_used_columns(client, sparse, paged,
                                                                   monkeypatch):
    """X's 200 columns spread over 4000: the fit runs on the 200 alone (the same fit,
    bit for bit, as on the narrow X) and returns every other coefficient at 0; a
    validation score sees the whole model.  ``paged``: the whole model is written
    into zeros on pages mapped as written (a large model's path), with the same
    bytes."""
    if paged:
        from dask_asyncopt.store import blocks

        monkeypatch.setattr(blocks, "_WIDE_BYTES", 0)
    X, Y, _ = sparse
    wide = 4000
    columns = np.sort(np.random.default_rng(3).choice(wide, size=200, replace=False))
    X_wide = X.copy()
    X_wide.indices = columns[X.indices].astype(X.indices.dtype)
    X_wide._shape = (X.shape[0], wide)
    settings = Settings(solver="sync", max_iter=2, tol=None)
    base = replace(_problem(), penalty=ElasticNet(0.01, 1.0))  # some coefficients at 0
    narrow = fit_linear(client, (X, Y, None, None), base, settings, np.random.default_rng(0))
    problem = replace(base, n_features=wide)
    seen = Validation(lambda model: model.shape[0], "rows")
    result = fit_linear(client, (X_wide, Y, None, None), problem,
                        replace(settings, validation=seen), np.random.default_rng(0))
    assert result.model.shape == (wide + 1, 1)
    assert result.model.flags.owndata is not paged  # paged: a view of its mapped memory
    # bit for bit (a -0.0 too); L1 left some used columns at 0, which are not written
    assert (narrow.model[:200] == 0).any()
    assert result.model[columns].tobytes() == narrow.model[:200].tobytes()
    assert result.model[wide].tobytes() == narrow.model[200].tobytes()
    assert np.count_nonzero(np.delete(result.model[:wide], columns)) == 0
    assert [r["objective"] for r in result.history] == [
        r["objective"] for r in narrow.history]
    assert [r["rows"] for r in result.history] == [wide + 1] * 2
    assert used_columns(X_wide, problem, None, None)[0].tolist() == columns.tolist()
    # not when a warm start has a value where no row reaches, nor for a narrow model
    init = np.zeros((wide + 1, 1))
    init[np.setdiff1d(np.arange(wide), columns)[0]] = 1.0
    assert used_columns(X_wide, problem, init, None) is None
    assert used_columns(X, _problem(), None, None) is None
    assert cluster_is_clean(client)


def test_resume_starts_from_the_checkpoint(client, sparse):
    """A fit resumed from a checkpoint starts from its model and samples: resumed at
    the last epoch, nothing is left to run and the fit returns the checkpoint's model."""
    X, Y, _ = sparse
    model = np.random.default_rng(1).normal(size=(201, 1))
    resume = Checkpoint(model, 12345, 4)
    settings = Settings(solver="asyb", max_iter=4, tol=None, first_epoch=5, resume=resume)
    result = fit_linear(client, (X, Y, None, None), _problem(), settings, np.random.default_rng(0))
    np.testing.assert_array_equal(result.model, model)
    assert result.history == [] and result.n_iter == 4
    # one more epoch of plain SGD: the samples go on from the checkpoint's
    settings = Settings(solver="asyb", max_iter=5, tol=None, first_epoch=5, resume=resume)
    result = fit_linear(client, (X, Y, None, None), _problem(svrg=False), settings,
                        np.random.default_rng(0))
    assert [r["epoch"] for r in result.history] == [5] and result.n_iter == 5
    assert result.t == 12345 + X.shape[0]
    assert cluster_is_clean(client)


def test_warm_start_continues_the_sample_count(client, sparse):
    X, Y, _ = sparse
    init = np.zeros((201, 1))
    result = fit_linear(client, (X, Y, None, None), _problem(svrg=False),
                        Settings(max_iter=2, tol=None), np.random.default_rng(0), init=init,
                        t_start=500)
    assert result.t == 500 + 2 * X.shape[0]
    assert result.history[0]["samples"] == 500 + X.shape[0]


@pytest.mark.parametrize("chunks", [1, 3])
def test_dask_input_runs_at_most_one_loop_per_row_chunk(client, sparse, chunks):
    """Loops take the partitions where they lie: no more loops than row chunks."""
    X, Y, y = sparse
    Xd = da.from_array(X.toarray(), chunks=(-(-X.shape[0] // chunks), -1))
    yd = da.from_array(y, chunks=(Xd.chunks[0],))

    def encode(part, sample_weight):
        return np.where(part == 1, 1.0, -1.0)[:, None], sample_weight

    result = fit_linear(client, (Xd, yd, None, encode), _problem(svrg=False),
                        Settings(solver="adpsgd", max_iter=1, tol=None, n_workers=2),
                        np.random.default_rng(0))
    assert len(result.history[0]["loop_shares"]) == min(chunks, 2)
    assert result.history[0]["samples"] >= X.shape[0]
    assert cluster_is_clean(client)


def test_a_cluster_without_workers_is_an_error(sparse):
    X, Y, _ = sparse
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as empty:
        with pytest.raises(RuntimeError, match="has no workers"):
            fit_linear(empty, (X, Y, None, None), _problem(), Settings(), np.random.default_rng(0))


_HUNG = threading.Event()  # released by the test: a worker that stops answering


def _hung_sums(decision, labels, w):
    _HUNG.wait()
    return 0.0, 1.0


def test_held_out_score_gives_up_after_the_fits_timeout(client):
    """Scoring held-out rows on a worker that stops answering (without
    leaving, so the fit has no lost worker to restart from) fails with a
    TimeoutError after the fit's timeout, which the fit turns into its
    timeout= error, and leaves nothing; before, the driver waited for good."""
    from dask_asyncopt.data.placement import place_dask
    from dask_asyncopt.data.shards import ShardLayout
    from dask_asyncopt.solvers.config import HeldOut
    from dask_asyncopt.solvers.linear import held_out_score

    X = np.random.default_rng(2).normal(size=(200, 3))
    spec = HeldOut(0.2, 1, _hung_sums, sum)
    shards, _, held = place_dask(
        client, da.from_array(X, chunks=(100, 3)), da.from_array(X[:, 0], chunks=100),
        None, sorted(client.nthreads()), ShardLayout(3, 1, False, 64),
        lambda y, w: (y[:, None], None), np.random.default_rng(0), spec)
    client.cancel(shards)
    problem = LinearProblem(n_features=3, n_outputs=1, loss=0, penalty=None,
                            fit_intercept=False, schedule=None)
    try:
        with pytest.raises(TimeoutError, match="scoring the held-out rows"):
            held_out_score(client, held, problem, spec, np.zeros((3, 1)), timeout=0.5)
    finally:
        _HUNG.set()
        client.cancel(held)
    assert cluster_is_clean(client)
