"""Property-based input checks (hypothesis): any array either fits or fails clearly.

For random shapes and values (including NaN/inf, constant columns, a single
class, empty arrays) every estimator either fits and predicts finite values of
the right shape, or raises ``ValueError``/``TypeError`` whose message names the
problem; the cluster is clean afterwards either way.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor, MatrixFactorization

from ..conftest import cluster_is_clean

CASES = settings(max_examples=20, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
values = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
MESSAGES = ("NaN", "infinity", "sample", "feature", "class", "2D", "numeric", "id", "rating")


def _clear(exc):
    return any(m.lower() in str(exc).lower() for m in MESSAGES)


@pytest.mark.slow  # 20 random cases, each a fit
@CASES
@given(X=arrays(np.float64, st.tuples(st.integers(0, 12), st.integers(0, 4)), elements=values),
       labels=st.lists(st.integers(0, 2), min_size=0, max_size=12),
       regress=st.booleans())
def test_linear_models_fit_or_fail_clearly(client, X, labels, regress):
    n = X.shape[0]
    y = np.resize(np.asarray(labels or [0], dtype=float), n)
    est = (AsyncSGDRegressor if regress else AsyncSGDClassifier)(max_iter=2, tol=None)
    try:
        est.fit(X, y)
    except (ValueError, TypeError) as exc:
        assert _clear(exc), repr(exc)
    else:
        pred = est.predict(X)
        assert pred.shape == (n,)
        if regress:
            assert np.isfinite(pred).all()
    assert cluster_is_clean(client)


@pytest.mark.slow  # 20 random cases, each a fit
@CASES
@given(ids=arrays(np.float64, st.tuples(st.integers(0, 10), st.integers(1, 3)),
                  elements=st.one_of(st.integers(-2, 6).map(float),
                                     st.sampled_from([0.5, np.nan]))),
       ratings=st.lists(st.one_of(st.floats(1, 5), st.just(np.nan)), max_size=10))
def test_matrix_factorization_fits_or_fails_clearly(client, ids, ratings):
    n = ids.shape[0]
    y = np.resize(np.asarray(ratings or [3.0]), n)
    est = MatrixFactorization(n_factors=2, max_iter=2)
    try:
        est.fit(ids, y)
    except (ValueError, TypeError) as exc:
        assert _clear(exc), repr(exc)
    else:
        assert np.isfinite(est.predict(ids)).all()
    assert cluster_is_clean(client)


@pytest.mark.parametrize("estimator", [AsyncSGDClassifier, AsyncSGDRegressor])
def test_property_suite_sees_real_failures(client, estimator):
    """The property tests would catch an estimator that accepted NaN silently."""
    with pytest.raises(ValueError, match="NaN"):
        estimator(max_iter=1).fit(np.array([[np.nan], [1.0]]), np.array([0.0, 1.0]))
