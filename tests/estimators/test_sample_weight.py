"""``sample_weight`` and ``class_weight``: scikit-learn's SGD meaning, every
solver and optimizer reaching the weighted optimum that scikit-learn's exact
solvers find, on real Dask clusters."""

import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor

ALPHA = 1e-3
SOLVERS = [
    ("sync", "sgd"),
    ("asyb", "sgd"),
    pytest.param("adpsgd", "sgd", marks=pytest.mark.slow),
    pytest.param("sync", "amsgrad", marks=pytest.mark.slow),
    pytest.param("asyb", "amsgrad", marks=pytest.mark.slow),
    pytest.param("adpsgd", "amsgrad", marks=pytest.mark.slow),
]


def _sparse(n=3000, d=150, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.05, random_state=seed, format="csr")
    X.data = rng.normal(size=X.nnz)
    return X, rng


def _log_objective(coef, icpt, X, y01, W, alpha):
    """scikit-learn SGD's weighted objective: sum(w * loss) / n + alpha/2 |coef|^2."""
    z = X @ coef + icpt
    return np.sum(W * np.logaddexp(0.0, -np.where(y01 == 1, 1.0, -1.0) * z)) / len(
        y01) + 0.5 * alpha * coef @ coef


def _squared_objective(coef, icpt, X, y, W, alpha):
    r = X @ coef + icpt - y
    return np.sum(W * 0.5 * r * r) / len(y) + 0.5 * alpha * coef @ coef


def _fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


@pytest.mark.parametrize(("solver", "optimizer"), SOLVERS)
def test_classifier_reaches_the_weighted_logistic_optimum(solver, optimizer):
    X, rng = _sparse(seed=1)
    y = (X @ rng.normal(size=X.shape[1]) + 0.3 * rng.normal(size=X.shape[0]) > 0).astype(int)
    sw = rng.lognormal(0.0, 1.0, size=X.shape[0]) * (rng.random(X.shape[0]) > 0.2)
    n = X.shape[0]
    # alpha/2 |w|^2 + sum(sw * loss) / n  <=>  LogisticRegression's C = 1 / (alpha n)
    ref = LogisticRegression(C=1 / (ALPHA * n), tol=1e-12, max_iter=20000).fit(
        X, y, sample_weight=sw)
    f_star = _log_objective(ref.coef_[0], ref.intercept_[0], X, y, sw, ALPHA)
    clf = _fit(AsyncSGDClassifier(loss="log_loss", alpha=ALPHA, solver=solver,
                                  optimizer=optimizer, tol=1e-6, max_iter=300,
                                  random_state=0), X, y, sample_weight=sw)
    got = _log_objective(clf.coef_[0], clf.intercept_[0], X, y, sw, ALPHA)
    assert (got - f_star) / f_star <= 1e-3
    unweighted = _log_objective(ref.coef_[0], ref.intercept_[0], X, y, np.ones(n), ALPHA)
    assert clf.history_["objective"].iloc[-1] != pytest.approx(unweighted, rel=1e-3)


@pytest.mark.parametrize(("solver", "optimizer"), SOLVERS)
def test_regressor_reaches_the_weighted_ridge_optimum(solver, optimizer):
    X, rng = _sparse(seed=2)
    y = X @ rng.normal(size=X.shape[1]) + 0.3 * rng.normal(size=X.shape[0]) + 1.0
    sw = rng.uniform(0.0, 4.0, size=X.shape[0])
    n = X.shape[0]
    # alpha/2 |w|^2 + sum(sw * r^2 / 2) / n  <=>  Ridge's alpha * n
    ref = Ridge(alpha=ALPHA * n, tol=1e-12).fit(X, y, sample_weight=sw)
    f_star = _squared_objective(ref.coef_, ref.intercept_, X, y, sw, ALPHA)
    reg = _fit(AsyncSGDRegressor(alpha=ALPHA, solver=solver, optimizer=optimizer,
                                 tol=1e-6, max_iter=300, random_state=0),
               X, y, sample_weight=sw)
    got = _squared_objective(reg.coef_, reg.intercept_[0], X, y, sw, ALPHA)
    assert (got - f_star) / f_star <= 1e-3


def test_multiclass_class_weight_is_one_vs_rest_weighting():
    """Output k weighs its positive rows by class k's weight and the others by
    1 (scikit-learn's SGD): each output is the weighted binary optimum."""
    X, rng = _sparse(n=3000, d=120, seed=3)
    y = np.argmax(X @ rng.normal(size=(X.shape[1], 3)) + [0.8, 0.0, -0.8], axis=1)
    sw = rng.uniform(0.5, 2.0, size=X.shape[0])
    cw = {0: 0.5, 1: 2.0, 2: 4.0}
    clf = _fit(AsyncSGDClassifier(loss="log_loss", alpha=ALPHA, class_weight=cw, tol=1e-6,
                                  max_iter=300, random_state=0), X, y, sample_weight=sw)
    n = X.shape[0]
    for k in range(3):
        W = sw * np.where(y == k, cw[k], 1.0)
        ref = LogisticRegression(C=1 / (ALPHA * n), tol=1e-12, max_iter=20000).fit(
            X, (y == k).astype(int), sample_weight=W)
        f_star = _log_objective(ref.coef_[0], ref.intercept_[0], X, y == k, W, ALPHA)
        got = _log_objective(clf.coef_[k], clf.intercept_[k], X, y == k, W, ALPHA)
        assert (got - f_star) / f_star <= 1e-3


def test_balanced_class_weight_is_the_counted_dict():
    X, rng = _sparse(n=1000, d=60, seed=4)
    y = np.where(rng.random(X.shape[0]) < 0.15, "rare", "common")
    params = dict(loss="log_loss", solver="sync", max_iter=10, random_state=0)
    balanced = AsyncSGDClassifier(class_weight="balanced", **params).fit(X, y)
    n_rare = np.sum(y == "rare")
    manual = {"rare": len(y) / (2 * n_rare), "common": len(y) / (2 * (len(y) - n_rare))}
    by_hand = AsyncSGDClassifier(class_weight=manual, **params).fit(X, y)
    np.testing.assert_array_equal(balanced.coef_, by_hand.coef_)
    unweighted = AsyncSGDClassifier(**params).fit(X, y)
    assert np.mean(balanced.predict(X) == "rare") > np.mean(unweighted.predict(X) == "rare")


@pytest.mark.parametrize("Est", [AsyncSGDClassifier, AsyncSGDRegressor])
def test_unit_weights_are_the_unweighted_fit(Est):
    X, rng = _sparse(n=800, d=50, seed=5)
    y = (rng.random(X.shape[0]) < 0.5).astype(int)
    params = dict(solver="sync", max_iter=5, random_state=0)
    plain = Est(**params).fit(X, y)
    ones = Est(**params).fit(X, y, sample_weight=np.ones(X.shape[0]))
    np.testing.assert_array_equal(plain.coef_, ones.coef_)
    np.testing.assert_array_equal(plain.intercept_, ones.intercept_)


def test_integer_weights_are_repeated_rows_at_the_rescaled_alpha():
    """sum(sw * loss) / n + alpha R is, times n / sum(sw), the repeated rows'
    mean loss + alpha n / sum(sw) R: the same optimum (zero weight: no row)."""
    X, rng = _sparse(n=1500, d=80, seed=6)
    y = (X @ rng.normal(size=X.shape[1]) > 0).astype(int)
    sw = rng.integers(0, 4, size=X.shape[0])
    repeat = np.repeat(np.arange(X.shape[0]), sw)
    params = dict(loss="log_loss", solver="sync", tol=1e-8, max_iter=300, random_state=0)
    weighted = _fit(AsyncSGDClassifier(alpha=ALPHA, **params), X, y, sample_weight=sw)
    repeated = _fit(AsyncSGDClassifier(alpha=ALPHA * X.shape[0] / sw.sum(), **params),
                    X[repeat], y[repeat])
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, atol=1e-4)


def test_dask_weights_reach_the_in_memory_optimum():
    X, rng = _sparse(n=2000, d=60, seed=7)
    Xd = X.toarray()
    y = X @ rng.normal(size=X.shape[1]) + 0.1 * rng.normal(size=X.shape[0])
    sw = rng.uniform(0.0, 3.0, size=X.shape[0])
    params = dict(alpha=ALPHA, tol=1e-7, max_iter=300, random_state=0)
    mem = _fit(AsyncSGDRegressor(**params), Xd, y, sample_weight=sw)
    dX, dy = da.from_array(Xd, chunks=(500, -1)), da.from_array(y, chunks=500)
    for weights in (da.from_array(sw, chunks=400), sw):  # dask, or in memory beside dask X
        got = _fit(AsyncSGDRegressor(**params), dX, dy, sample_weight=weights)
        np.testing.assert_allclose(got.coef_, mem.coef_, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_weighted_dask_fit_on_process_workers(process_client):
    X, rng = _sparse(n=2000, d=60, seed=8)
    y = np.where(X @ rng.normal(size=X.shape[1]) > 0, "yes", "no")
    sw = rng.uniform(0.5, 2.0, size=X.shape[0])
    n = X.shape[0]
    dX = da.from_array(X.toarray(), chunks=(500, -1))
    with process_client.as_current():
        clf = _fit(AsyncSGDClassifier(loss="log_loss", alpha=ALPHA, class_weight="balanced",
                                      tol=1e-6, max_iter=300, random_state=0),
                   dX, da.from_array(y, chunks=500), sample_weight=da.from_array(sw, 500))
    counts = {c: np.sum(y == c) for c in ("no", "yes")}
    W = sw * np.array([n / (2 * counts[c]) for c in y])
    ref = LogisticRegression(C=1 / (ALPHA * n), tol=1e-12, max_iter=20000).fit(
        X, y, sample_weight=W)
    f_star = _log_objective(ref.coef_[0], ref.intercept_[0], X, y == "yes", W, ALPHA)
    got = _log_objective(clf.coef_[0], clf.intercept_[0], X, y == "yes", W, ALPHA)
    assert (got - f_star) / f_star <= 1e-3


def test_early_stopping_splits_the_weights_and_scores_with_them():
    X, rng = _sparse(n=2000, d=60, seed=9)
    y = (X @ rng.normal(size=X.shape[1]) > 0).astype(int)
    sw = rng.uniform(0.0, 2.0, size=X.shape[0])
    clf = AsyncSGDClassifier(loss="log_loss", early_stopping=True, max_iter=20,
                             random_state=0).fit(X, y, sample_weight=sw)
    assert clf.history_["validation_score"].between(0, 1).all()
    lopsided = np.zeros(X.shape[0])
    lopsided[:5] = 1.0  # five weighted rows: the held-out tenth is all zero
    with pytest.raises(ValueError, match="validation set are all zero"):
        AsyncSGDClassifier(early_stopping=True, validation_fraction=0.01,
                           random_state=0).fit(X, y, sample_weight=lopsided)


@pytest.mark.parametrize(("weights", "error", "match"), [
    (lambda n: -np.ones(n), ValueError, "negative"),
    (lambda n: np.full(n, np.nan), ValueError, "NaN"),
    (lambda n: np.zeros(n), ValueError, "zero for every sample"),
    (lambda n: np.ones(n + 1), ValueError, r"sample_weight has shape \(\d+,\)"),
    (lambda n: np.ones((n, 2)), ValueError, "one weight per sample"),
    (lambda n: np.array(["a"] * n), TypeError, "numeric weights"),
])
def test_bad_sample_weight_is_named_before_any_fit(weights, error, match):
    X, rng = _sparse(n=100, d=10, seed=10)
    y = rng.integers(0, 2, size=100)
    with pytest.raises(error, match=match):
        AsyncSGDClassifier().fit(X, y, sample_weight=weights(100))
    with pytest.raises(error, match=match):
        AsyncSGDClassifier().fit(da.from_array(X.toarray(), chunks=50),
                                 da.from_array(y, chunks=50),
                                 sample_weight=da.from_array(weights(100)))


@pytest.mark.parametrize(("class_weight", "match"), [
    ({0: 1.0, 7: 2.0}, r"names \[7\], which are not classes"),
    ({0: -1.0}, "finite and >= 0"),
])
def test_bad_class_weight_is_named(class_weight, match):
    X, rng = _sparse(n=100, d=10, seed=11)
    y = rng.integers(0, 2, size=100)
    with pytest.raises(ValueError, match=match):
        AsyncSGDClassifier(class_weight=class_weight).fit(X, y)
