"""Matrix factorisation on the cluster (``solvers/factors.py``): ``fit_factors`` with and
without held-out ratings, the driver's epochs, and a sync fit resumed from a
checkpoint equal to the uninterrupted fit bit for bit."""

from dataclasses import replace

import numpy as np
import pytest
from distributed import Client, LocalCluster

from dask_asyncopt.datasets import make_ratings
from dask_asyncopt.kernels.factors import RULE_ADAGRAD, RULE_AMSGRAD, RULE_SGD, row_width
from dask_asyncopt.solvers import FACTOR_RULES, FactorProblem, Settings, fit_factors
from dask_asyncopt.solvers import factors as factors_solver
from dask_asyncopt.solvers.mf import make_rating_shard, rmse_of, stratify
from dask_asyncopt.solvers.run import Checkpoint

from ..conftest import cluster_is_clean


@pytest.fixture(scope="module")
def tiny():
    X, y = make_ratings(120, 80, 2_000, random_state=3)
    users = np.unique(X[:, 0], return_inverse=True)[1].ravel()
    items = np.unique(X[:, 1], return_inverse=True)[1].ravel()
    return users, items, y, (int(users.max() + 1), int(items.max() + 1))


def _problem(rule="adagrad", eta0=0.1):
    return FactorProblem(n_factors=4, reg_factors=0.04, reg_biases=0.05, eta0=eta0,
                         rule=rule, init_scale=0.1)


def test_factor_rules():
    assert FACTOR_RULES == {"adagrad": RULE_ADAGRAD, "constant": RULE_SGD,
                            "amsgrad": RULE_AMSGRAD}


def test_without_held_out_ratings_every_epoch_runs(client, tiny):
    users, items, y, n_ids = tiny
    rows = []
    settings = Settings(solver="sync", max_iter=4, tol=10.0, n_iter_no_change=1,
                        callback=rows.append)
    result = fit_factors(client, (users, items, y), n_ids, float(y.mean()), _problem(),
                         settings, np.random.default_rng(0))
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4] == [r["epoch"] for r in rows]
    assert "valid_rmse" not in result.history[0] and result.best_epoch == 4
    assert result.n_iter == 4 and result.t == 4 * y.shape[0]
    U, V = result.model
    assert U.shape == (n_ids[0], 6) and V.shape == (n_ids[1], 6)
    train = [r["train_rmse"] for r in result.history]
    assert train[-1] < train[0]
    assert all(r["staleness_max"] == 0 and r["ratings"] == y.shape[0] for r in result.history)
    assert cluster_is_clean(client)


def test_held_out_ratings_score_every_epoch_and_keep_the_best(client, tiny):
    users, items, y, n_ids = tiny
    held = (users[:300], items[:300], y[:300])
    train = (users[300:], items[300:], y[300:])
    mu = float(train[2].mean())
    settings = Settings(solver="sync", max_iter=12, tol=1e-3, n_iter_no_change=2)
    result = fit_factors(client, train, n_ids, mu, _problem("constant", 0.05), settings,
                         np.random.default_rng(0), held_out=held)
    valid = np.array([r["valid_rmse"] for r in result.history])
    assert result.best_epoch == int(np.argmin(valid)) + 1
    # the model returned is the best epoch's: its held-out RMSE is the best one
    assert rmse_of(result.model, mu, *held, RULE_SGD) == pytest.approx(valid.min(), rel=1e-12)
    steps = [r["eta0"] for r in result.history]  # plain SGD: eta0 / sqrt(epoch)
    np.testing.assert_allclose(steps, 0.05 / np.sqrt(np.arange(1, len(steps) + 1)))
    assert cluster_is_clean(client)


def test_amsgrad_state_survives_a_checkpoint_restart(client, tiny):
    """A sync fit resumed from the rows of epoch 2 (what a checkpoint holds) equals
    the uninterrupted fit bit for bit: the moments and step counts travel with the
    rows.  Restarting the moments instead gives a different model."""
    users, items, y, n_ids = tiny
    problem = replace(_problem(eta0=0.01), rule=RULE_AMSGRAD)  # fit() takes the kernels' code
    settings = Settings(solver="sync", max_iter=4, tol=None, n_iter_no_change=3,
                        timeout=30.0)
    workers = sorted(client.nthreads())[:2]
    layout, parts = stratify(users, items, y, *n_ids, 2, 4, np.random.default_rng(0))

    def shards():
        return [client.submit(make_rating_shard, parts[w], 7 + w, workers=[a], pure=False)
                for w, a in enumerate(workers)]

    mu = float(y.mean())
    first = shards()
    full = factors_solver.fit(client, first, workers, layout, mu, problem, settings, 0)
    client.cancel(first)
    U_full, V_full = full.model
    assert U_full.shape[1] == row_width(4, RULE_AMSGRAD)
    restarted = []
    for reset in (False, True):
        first = shards()
        half = factors_solver.fit(client, first, workers, layout, mu, problem,
                                  replace(settings, max_iter=2), 0)
        U, V = (W.copy() for W in half.model)
        assert (V[:, -1] > 0).all()  # every item row has taken steps
        if reset:
            U[:, 6:], V[:, 6:] = 0.0, 0.0  # moments and step counts back to zero
        resume = Checkpoint((U, V), half.t, 2)
        restarted.append(factors_solver.fit(
            client, first, workers, layout, mu, problem,
            replace(settings, first_epoch=3, resume=resume), 0))
        client.cancel(first)
    np.testing.assert_array_equal(restarted[0].model[0], U_full)
    np.testing.assert_array_equal(restarted[0].model[1], V_full)
    assert [r["epoch"] for r in restarted[0].history] == [3, 4]
    assert not np.allclose(restarted[1].model[0][:, :5], U_full[:, :5], rtol=1e-6, atol=0)
    assert cluster_is_clean(client)


def test_a_cluster_without_workers_is_an_error(tiny):
    users, items, y, n_ids = tiny
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as empty:
        with pytest.raises(RuntimeError, match="has no workers"):
            fit_factors(empty, (users, items, y), n_ids, 3.0, _problem(), Settings(),
                        np.random.default_rng(0))


def test_the_model_returned_is_the_last_epochs_whatever_the_checkpoints(client, tiny):
    """The model after the last epoch is read once: from the checkpoint kept after
    it, else from the blocks (a checkpoint of an earlier epoch is not the result)."""
    users, items, y, n_ids = tiny
    models = []
    for every in (0, 1, 3):  # none, after every epoch, after epoch 3 of 4
        settings = Settings(solver="sync", max_iter=4, tol=None, checkpoint_every=every)
        models.append(fit_factors(client, (users, items, y), n_ids, float(y.mean()),
                                  _problem(), settings, np.random.default_rng(0)).model)
    for U, V in models[1:]:
        np.testing.assert_array_equal(U, models[0][0])
        np.testing.assert_array_equal(V, models[0][1])
    assert cluster_is_clean(client)
