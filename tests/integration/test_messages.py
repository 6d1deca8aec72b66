"""Every message of the hostile-data list names the parameter or input at fault and
the fix (one test each), and Dask collections get the checks in-memory data gets,
on the workers."""

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor, MatrixFactorization
from dask_asyncopt.datasets import make_ratings

from ..conftest import cluster_is_clean

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 3))
y = (X[:, 0] > 0).astype(int)


def test_nan_in_coef_init(client):
    with pytest.raises(ValueError, match="coef_init contains NaN or infinity; pass finite"):
        AsyncSGDClassifier(max_iter=2).fit(X, y, coef_init=np.array([[np.nan, 0.0, 0.0]]))
    assert cluster_is_clean(client)


def test_intercept_init_of_the_wrong_shape(client):
    with pytest.raises(ValueError, match=r"intercept_init has shape \(3,\); this fit needs "
                                         r"\(1,\): one intercept per output"):
        AsyncSGDClassifier(max_iter=2).fit(X, y, coef_init=np.zeros((1, 3)),
                                           intercept_init=np.zeros(3))


def test_coef_init_of_the_wrong_shape(client):
    with pytest.raises(ValueError, match=r"coef_init has shape \(2, 3\); this fit needs "
                                         r"\(1, 3\)"):
        AsyncSGDClassifier(max_iter=2).fit(X, y, coef_init=np.zeros((2, 3)))


@pytest.mark.parametrize("estimator", [AsyncSGDClassifier, AsyncSGDRegressor])
def test_validation_fraction_too_large(estimator, client):
    with pytest.raises(ValueError, match=r"validation_fraction=0.99 holds out 60 of 60 "
                                         r"samples.*choose a validation_fraction between"):
        estimator(early_stopping=True, validation_fraction=0.99, max_iter=2).fit(X, y)


def test_labels_of_mixed_types(client):
    labels = np.array(["a", 1] * 30, dtype=object)
    with pytest.raises(TypeError, match="y mixes labels of types int, str.*same type"):
        AsyncSGDClassifier(max_iter=2).fit(X, labels)


def test_empty_dask_input(client):
    Xd = da.from_array(np.empty((0, 3)), chunks=(1, 3))
    yd = da.from_array(np.empty(0), chunks=1)
    with pytest.raises(ValueError, match="X has 0 samples; at least 1 is required"):
        AsyncSGDClassifier(max_iter=2).fit(Xd, yd)
    # no columns: refused as in memory, not a fit of no coefficients
    with pytest.raises(ValueError, match="X has 0 features; at least 1 is required"):
        AsyncSGDClassifier(max_iter=2).fit(da.zeros((60, 0), chunks=(20, 0)),
                                           da.from_array(y, chunks=20))


def test_decreasing_indptr(client):
    Xs = sp.csr_matrix(X)
    Xs.indptr[10] = Xs.indptr[12]
    with pytest.raises(ValueError, match="indptr decreases at position 11"):
        AsyncSGDClassifier(max_iter=2).fit(Xs, y)


def test_a_model_the_cluster_cannot_hold(client):
    """A store wider than the workers' memory is refused up front.  (With plain
    SGD or SVRG these rows would be fitted on the 60 columns they use; an update
    rule keeps state for every coefficient, so its store has the full width.)"""
    wide = sp.csr_matrix((np.ones(60), (np.arange(60), np.arange(60) * 2**25)),
                         shape=(60, 2**31 + 5))
    with pytest.raises(MemoryError, match=r"2,147,483,654 coefficients.*GiB on the cluster.*"
                                          "hash the features into fewer columns"):
        AsyncSGDClassifier(max_iter=2, optimizer="amsgrad").fit(wide, y)
    assert cluster_is_clean(client)


def test_diverging_adagrad_factorisation_is_not_told_to_use_adagrad(client):
    Xr, r = make_ratings(100, 80, 2000, random_state=0)
    with pytest.raises(FloatingPointError) as info:
        MatrixFactorization(n_factors=4, eta0=1e8, max_iter=3, random_state=0).fit(Xr, r)
    assert "lower eta0" in str(info.value) and "adagrad" not in str(info.value)
    assert cluster_is_clean(client)


def test_nan_label_in_a_dask_chunk(client):
    yf = y.astype(float)
    yf[45] = np.nan
    Xd, yd = da.from_array(X, chunks=(20, 3)), da.from_array(yf, chunks=20)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        AsyncSGDClassifier(max_iter=2).fit(Xd, yd)
    with pytest.raises(ValueError, match="NaN"):
        AsyncSGDRegressor(max_iter=2).fit(Xd, yd)
    assert cluster_is_clean(client)


def test_nan_feature_in_a_dask_chunk_at_predict_time(client):
    est = AsyncSGDClassifier(loss="log_loss", max_iter=2, random_state=0).fit(X, y)
    Xn = X.copy()
    Xn[50, 1] = np.nan
    Xd = da.from_array(Xn, chunks=(20, 3))
    for method in (est.predict, est.predict_proba, est.decision_function):
        with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
            method(Xd).compute()
