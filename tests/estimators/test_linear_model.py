"""The linear estimators (``estimators/linear_model.py``): bad input gets a clear error and
any fit, failed or not, leaves the cluster clean; multiclass, warm start and early
stopping on a held-out score."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor
from dask_asyncopt.datasets import make_sparse_classification

from ..conftest import cluster_is_clean
from ..integration.deployments import nothing_left

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 3))
y = (X[:, 0] > 0).astype(int)

X_nan = X.copy()
X_nan[3, 1] = np.nan
X_inf = X.copy()
X_inf[0, 0] = np.inf

BAD_FIT = [
    ("nan", dict(), X_nan, y, ValueError, "NaN"),
    ("inf", dict(), X_inf, y, ValueError, "infinity"),
    ("sparse nan", dict(), sp.csr_matrix(X_nan), y, ValueError, "NaN"),
    ("y nan", dict(), X, np.where(y == 1, np.nan, 0.0), ValueError, "NaN|Unknown label"),
    ("wrong lengths", dict(), X, y[:-1], ValueError, "inconsistent numbers of samples"),
    ("1-d X", dict(), X[:, 0], y, ValueError, "2D array"),
    ("one class", dict(), X, np.zeros(60), ValueError, "at least two classes"),
    ("strings", dict(), np.array([["a", "b"]] * 60), y, ValueError, "convert|numeric"),
    ("empty", dict(), np.empty((0, 3)), np.empty(0), ValueError, "0 sample"),
    ("no features", dict(), np.empty((60, 0)), y, ValueError, "0 feature"),
    ("squares overflow", dict(), X * 1e160, y, ValueError, "overflows float64"),
    ("sparse squares overflow", dict(), sp.csr_matrix(X * 1e160), y, ValueError,
     "overflows float64"),
    ("unknown solver", dict(solver="hogwild"), X, y, ValueError, "solver"),
    ("unknown penalty", dict(penalty="l3"), X, y, ValueError, "penalty"),
    ("negative alpha", dict(alpha=-1.0), X, y, ValueError, "alpha"),
    ("unknown loss", dict(loss="squared_error"), X, y, ValueError, "loss"),
    ("bad l1_ratio", dict(l1_ratio=2.0), X, y, ValueError, "l1_ratio"),
    ("bad batch_size", dict(batch_size=0), X, y, ValueError, "batch_size"),
    ("bad n_workers", dict(n_workers=0), X, y, ValueError, "n_workers"),
    ("string alpha", dict(alpha="big"), X, y, ValueError, "alpha"),
    ("constant without eta0", dict(learning_rate="constant"), X, y, ValueError, "eta0"),
    ("optimal without alpha", dict(alpha=0.0), X, y, ValueError, "alpha must be > 0"),
    ("coef_init width", dict(), X, y, ValueError, "coef_init"),
    ("svrg with hinge", dict(variance_reduction="svrg"), X, y, ValueError, "smooth loss"),
    ("unknown variance_reduction", dict(variance_reduction="saga"), X, y, ValueError,
     "variance_reduction"),
]


# Cases that do not apply to a regressor: it has no classes, squared_error is its
# default loss and its losses are smooth.
CLASSIFIER_ONLY = {"one class", "unknown loss", "svrg with hinge", "y nan",
                   "constant without eta0", "optimal without alpha"}
BAD_FIT_REGRESSOR = [c for c in BAD_FIT if c[0] not in CLASSIFIER_ONLY] + [
    ("y nan", dict(), X, np.where(y == 1, np.nan, 0.0), ValueError, "NaN"),
    ("unknown loss", dict(loss="log_loss"), X, y, ValueError, "loss"),
    ("constant without eta0", dict(learning_rate="constant", eta0=0.0), X, y, ValueError,
     "eta0"),
    ("optimal without alpha", dict(alpha=0.0, variance_reduction=None,
                                   learning_rate="optimal"), X, y, ValueError,
     "alpha must be > 0"),
    ("svrg with epsilon_insensitive", dict(loss="epsilon_insensitive",
                                           variance_reduction="svrg"), X, y, ValueError,
     "smooth loss"),
]


@pytest.mark.parametrize("estimator,case", [(AsyncSGDClassifier, c) for c in BAD_FIT] + [
    (AsyncSGDRegressor, c) for c in BAD_FIT_REGRESSOR], ids=[
    f"classifier-{c[0]}" for c in BAD_FIT] + [f"regressor-{c[0]}" for c in BAD_FIT_REGRESSOR])
def test_bad_fit_input(estimator, case, client):
    name, params, Xb, yb, exc, match = case
    est = estimator(max_iter=2, **params)
    kwargs = {"coef_init": np.zeros((1, 5))} if name == "coef_init width" else {}
    with pytest.raises(exc, match=match):
        est.fit(Xb, yb, **kwargs)
    assert cluster_is_clean(client)


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        AsyncSGDClassifier().predict(X)
    with pytest.raises(NotFittedError):
        AsyncSGDRegressor().predict(X)


def test_predict_with_wrong_width(client):
    est = AsyncSGDClassifier(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="3 features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        est.predict(X_nan)
    assert cluster_is_clean(client)


def test_a_dask_dataframe_keeps_its_feature_names(client):
    """A fit on a dask DataFrame sets ``feature_names_in_`` as one on pandas does
    (from the metadata: nothing computed), so columns in another order at predict
    time are an error: it kept no names and predicted from the swapped columns."""
    import warnings

    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd

    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    dX, dy = dd.from_pandas(frame, npartitions=2), dd.from_pandas(pd.Series(y), npartitions=2)
    est = AsyncSGDClassifier(max_iter=2, random_state=0).fit(dX, dy)
    assert list(est.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_array_equal(est.predict(dX).compute(), est.predict(frame))
    for swapped in (frame[["c", "b", "a"]], dX[["c", "b", "a"]]):
        with pytest.raises(ValueError, match="feature names should match"):
            est.predict(swapped)
    with pytest.raises(ValueError, match="feature names should match"):
        est.partial_fit(dX[["c", "b", "a"]], dy)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        est.predict(da.from_array(X))
    est.fit(da.from_array(X), da.from_array(y))  # a refit without names drops them
    assert not hasattr(est, "feature_names_in_")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.predict(X)
    assert cluster_is_clean(client)


def test_predict_proba_only_for_probabilistic_losses():
    est = AsyncSGDClassifier(loss="hinge", max_iter=2).fit(X, y)
    assert not hasattr(est, "predict_proba")


def test_divergence_is_an_error_not_nan_coefficients(client):
    # values so large that one step overflows the predictions to inf
    Xbig = rng.normal(loc=1e100, scale=1e99, size=(200, 3))
    ybig = rng.normal(size=200)
    est = AsyncSGDRegressor(learning_rate="constant", eta0=10.0, max_iter=5, tol=None)
    with pytest.raises(FloatingPointError, match="step size"):
        est.fit(Xbig, ybig)
    assert not hasattr(est, "coef_")
    assert cluster_is_clean(client)


def test_failure_inside_a_worker_loop_leaves_cluster_clean(client):
    """A dask partition with NaN fails on its worker; nothing is left behind."""
    import dask.array as da

    Xd = da.from_array(X_nan, chunks=(20, -1))
    yd = da.from_array(y, chunks=20)
    with pytest.raises(ValueError, match="NaN"):
        AsyncSGDClassifier(max_iter=2).fit(Xd, yd)
    assert cluster_is_clean(client)


@pytest.mark.parametrize("scale", [1e-20, 1e25])
def test_features_too_far_from_unit_scale_are_an_error_not_a_frozen_fit(
        process_client, scale):
    """The blocks keep the variance-reduced steps' per-feature scale in float32:
    features whose scale would round it to 0 (a fit that silently returns its
    start) or to infinity fail with the fix named, on process workers too, and
    leave nothing behind."""
    with process_client.as_current(), pytest.raises(ValueError, match="scale the features"):
        AsyncSGDClassifier(loss="log_loss", max_iter=2).fit(X * scale, y)
    assert cluster_is_clean(process_client)
    # within range, the same data fits (the steps do not depend on a feature's scale)
    est = AsyncSGDClassifier(loss="log_loss", max_iter=2, solver="sync", random_state=0)
    with process_client.as_current():
        assert est.fit(X * 1e18, y).score(X * 1e18, y) > 0.8


@pytest.mark.parametrize("loss", ["hinge", "log_loss"])  # plain SGD, SVRG
def test_exception_from_callback_stops_loops(client, monkeypatch, loss):
    """An exception raised in the driver mid-fit stops the loops and frees actors."""
    from dask_asyncopt.solvers.config import Settings

    calls = []

    def boom(row):
        calls.append(row)
        raise KeyboardInterrupt

    def settings_with_callback(**kw):
        return Settings(**{**kw, "callback": boom})  # replaces the progress callback

    monkeypatch.setattr("dask_asyncopt.estimators.linear_model.Settings",
                        settings_with_callback)
    Xs, ys = rng.normal(size=(2000, 5)), rng.integers(0, 2, 2000)
    with pytest.raises(KeyboardInterrupt):
        AsyncSGDClassifier(loss=loss, max_iter=10, tol=None).fit(Xs, ys)
    assert len(calls) == 1
    assert cluster_is_clean(client)
    # the client is still usable afterwards
    monkeypatch.undo()
    assert AsyncSGDClassifier(max_iter=2).fit(Xs, ys).n_iter_ == 2


def test_multiclass_and_more_blocks(data):
    X, _ = make_sparse_classification(3000, 500, n_classes=3, random_state=1)
    _, y = make_sparse_classification(3000, 500, n_classes=3, random_state=1)
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, n_blocks=5, random_state=0)
    est.fit(X, y)
    assert est.coef_.shape == (3, 500)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert est.score(X, y) > 0.6


def test_warm_start_continues_schedule(data):
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, max_iter=2, tol=None,
                             warm_start=True, random_state=0).fit(X, y)
    t1 = est.t_
    est.fit(X, y)
    assert est.t_ >= t1 + 2 * X.shape[0]


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_amsgrad_l1_is_as_sparse_as_the_optimum(data, saga, solver):
    """optimizer="amsgrad" with default settings: the L1 fit's support is within 10%
    of the exact optimum's (saga) and mostly the same coordinates."""
    X, y = data
    ref = np.flatnonzero(saga("l1").coef_)
    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=1e-4, solver=solver,
                             optimizer="amsgrad", random_state=0).fit(X, y)
    ours = np.flatnonzero(est.coef_)
    assert abs(len(ours) - len(ref)) <= 0.1 * len(ref), (len(ours), len(ref))
    assert len(np.intersect1d(ours, ref)) >= 0.9 * len(ref)


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_warm_start_keeps_the_amsgrad_moments(data, solver):
    """A warm start continues from the moments the last fit ended with: ``vhat`` only
    grows, so after the second fit it is at least the first fit's everywhere (a
    fresh start from the same coefficients, ``coef_init``, ends below it in places,
    and so would moments handed to the wrong blocks)."""
    X, y = data
    params = dict(loss="log_loss", penalty="l1", alpha=1e-4, solver=solver,
                  optimizer="amsgrad", n_blocks=None if solver == "adpsgd" else 3,
                  max_iter=2, tol=None, random_state=0)
    est = AsyncSGDClassifier(warm_start=True, **params).fit(X, y)
    m, v, vhat = est._moments
    assert m.shape == vhat.shape == (X.shape[1] + 1, 1) and (vhat >= v).all()
    coef, intercept = est.coef_.copy(), est.intercept_.copy()
    est.fit(X, y)
    assert (est._moments[2] >= vhat).all()
    cold = AsyncSGDClassifier(**params).fit(X, y, coef_init=coef, intercept_init=intercept)
    assert (cold._moments[2] < vhat).any()


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
def test_early_stopping_on_a_validation_score(data, solver):
    """``early_stopping`` holds out rows, reports their score every epoch and stops on it."""
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", alpha=1e-4, early_stopping=True,
                             validation_fraction=0.2, n_iter_no_change=2, tol=1e-2,
                             max_iter=50, solver=solver, random_state=0).fit(X, y)
    h = est.history_
    assert h["validation_score"].between(0.5, 1.0).all()
    assert est.n_iter_ < 50  # a 1e-2 accuracy improvement stops coming early
    # the rule: each of the last n_iter_no_change epochs failed to beat the best score
    # seen before it by tol
    scores = h["validation_score"].to_numpy()
    for k in (len(scores) - 2, len(scores) - 1):
        assert scores[k] < scores[:k].max() + 1e-2, scores
    assert est.t_ < est.n_iter_ * X.shape[0]  # it trained on the 80 % only


def test_early_stopping_regressor_and_errors(client):
    import dask.array as da

    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 5))
    y = X @ rng.normal(size=5) + 0.1 * rng.normal(size=400)
    est = AsyncSGDRegressor(early_stopping=True, max_iter=30, random_state=0).fit(X, y)
    assert est.history_["validation_score"].iloc[-1] > 0.9  # R^2 on held-out rows
    with pytest.raises(ValueError, match="validation_fraction=0.1 holds out 0 of the 400"):
        AsyncSGDRegressor(early_stopping=True).fit(da.from_array(X, chunks=(4, 5)),
                                                   da.from_array(y, chunks=4))
    assert cluster_is_clean(client)


def test_a_dask_hold_out_is_stratified_for_the_classifier_only(client, monkeypatch):
    """As scikit-learn's SGD splits in memory: by class for a classifier, at random
    for a regressor (tests/data/test_placement.py checks the classes' shares).
    On the thread cluster the placement's tasks run here, where the spy is."""
    import dask.array as da

    from dask_asyncopt.data import placement

    split_by = []

    def spy(n, k, seed, part, labels=None):
        split_by.append(None if labels is None else set(np.asarray(labels).ravel()))
        return held_index(n, k, seed, part, labels)

    held_index = placement.held_index
    monkeypatch.setattr(placement, "held_index", spy)
    X = np.random.default_rng(0).normal(size=(200, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    for est, target in [(AsyncSGDClassifier, y), (AsyncSGDRegressor, X[:, 1])]:
        split_by.clear()
        est(early_stopping=True, max_iter=2, tol=None, random_state=0).fit(
            da.from_array(X, chunks=(100, 3)), da.from_array(target, chunks=100))
        assert split_by  # the held-out rows and the shards of both chunks
        expected = {"yes", "no"} if est is AsyncSGDClassifier else None
        assert all(labels == expected for labels in split_by), est
    assert cluster_is_clean(client)


@pytest.mark.parametrize("model", ["classifier", "regressor"])
def test_early_stopping_on_dask_collections_scores_rows_held_out_on_the_workers(
        process_client, model):
    """Each row chunk holds out about validation_fraction of its rows on its
    worker: the fit trains on the rest (its sample count says so), scores the
    held-out rows there every epoch (tests/data/test_placement.py checks the
    score against scikit-learn's) and leaves nothing on the cluster."""
    import dask.array as da

    from dask_asyncopt.solvers import HeldOut

    rng = np.random.default_rng(5)
    X = sp.random(3000, 40, density=0.2, format="csr", random_state=5)
    truth = X @ rng.normal(size=40)
    if model == "classifier":
        est, y = AsyncSGDClassifier, np.where(truth > 0, "yes", "no")
    else:
        est, y = AsyncSGDRegressor, truth + 0.1 * rng.normal(size=3000)
    w = rng.random(3000)
    Xd = da.from_array(X, chunks=(700, -1), asarray=False)
    fitted = est(early_stopping=True, validation_fraction=0.2, max_iter=8, tol=None,
                 random_state=0)
    with process_client.as_current():
        fitted.fit(Xd, da.from_array(y, chunks=700), sample_weight=da.from_array(w, chunks=700))
    n_val = sum(HeldOut(0.2, 0, None, None).counts(Xd.chunks[0]))
    assert n_val == 4 * 140 + 40  # chunks of 700, 700, 700, 700, 200
    assert fitted.t_ == 8 * (3000 - n_val)
    scores = fitted.history_["validation_score"]
    assert len(scores) == 8 and scores.notna().all()
    assert scores.iloc[-1] > (0.8 if model == "classifier" else 0.9)
    assert nothing_left(process_client)

