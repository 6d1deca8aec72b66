"""scikit-learn's estimator checks for MatrixFactorization.

Most generic checks feed random float features with 1-10 columns: ``X`` of a
recommender is ``(user id, item id)`` pairs, so those checks cannot apply and
must stop at our input validation.  The test runs *every* check and asserts
(a) the set of failing checks is exactly the one listed below and (b) each of
them failed at the id-pair validation (its message), so a check that starts
failing for another reason, or starts passing, fails this test.
"""

import re

import pytest
from sklearn.utils.estimator_checks import check_estimator

from dask_asyncopt import MatrixFactorization

from ..conftest import cluster_is_clean

pytestmark = pytest.mark.slow  # every scikit-learn check

SHAPE = r"X must have shape \(n_ratings, 2\)"
_FEATURES = "random float features with 1-10 columns, not (user id, item id) pairs"

NOT_APPLICABLE = {
    "check_fit_score_takes_y": (_FEATURES, SHAPE),
    "check_dont_overwrite_parameters": (_FEATURES, SHAPE),
    "check_n_features_in_after_fitting": (_FEATURES, SHAPE),
    "check_estimators_dtypes": (_FEATURES, SHAPE),
    "check_complex_data": (_FEATURES + "; the shape is checked before the dtype", SHAPE),
    "check_dtype_object": (_FEATURES, SHAPE),
    "check_estimators_empty_data_messages": (
        "expects scikit-learn's '0 feature(s)' message; ours names the (n, 2) shape",
        SHAPE),
    "check_pipeline_consistency": (_FEATURES, SHAPE),
    "check_estimators_nan_inf": (
        "NaN in 3+ feature columns: the shape is checked first (NaN ids and NaN ratings "
        "are rejected: tests/estimators/test_recommender.py)", r"check for NaN and inf in fit"),
    "check_estimator_sparse_tag": (
        "sparse X with y is a feature matrix; our sparse input is fit(R) without y",
        r"input_tags.sparse=True might not be consistent"),
    "check_estimators_pickle": (_FEATURES + " (pickling is tested on ratings)", SHAPE),
    "check_f_contiguous_array_estimator": (_FEATURES, SHAPE),
    "check_regressors_train": (_FEATURES, SHAPE),
    "check_regressor_data_not_an_array": (_FEATURES, SHAPE),
    "check_regressors_no_decision_function": (_FEATURES, SHAPE),
    "check_supervised_y_2d": (_FEATURES, SHAPE),
    "check_regressors_int": (_FEATURES, SHAPE),
    "check_non_transformer_estimators_n_iter": (_FEATURES, SHAPE),
    "check_methods_sample_order_invariance": (_FEATURES, SHAPE),
    "check_methods_subset_invariance": (_FEATURES, SHAPE),
    "check_fit2d_1sample": ("expects a '1 sample' message for a (1, 10) feature matrix",
                            SHAPE),
    "check_fit2d_1feature": ("expects a '1 feature' message for a (10, 1) matrix", SHAPE),
    "check_dict_unchanged": (_FEATURES, SHAPE),
    "check_fit2d_predict1d": (_FEATURES, SHAPE),
    "check_positive_only_tag_during_fit": (
        "iris features (4 columns) are not (user id, item id) pairs; negative ids "
        "themselves are valid labels (tests/estimators/test_recommender.py); scikit-learn "
        "reports the shape error as a failure to accept negative input",
        r"(?s)raised ValueError unexpectedly\. This happens when passing negative input.*"
        r"\(from ValueError: X must have shape \(n_ratings, 2\)"),
}


def test_sklearn_checks(client):
    est = MatrixFactorization(solver="sync", n_factors=2, max_iter=3, random_state=0)
    results = check_estimator(est, on_fail=None)
    failed = {}
    for r in results:
        if r["status"] == "failed":
            exc = r["exception"]
            cause = f" (from {type(exc.__cause__).__name__}: {exc.__cause__})" if (
                exc.__cause__ is not None) else ""
            failed.setdefault(r["check_name"], []).append(str(exc) + cause)
    assert set(failed) == set(NOT_APPLICABLE)
    for name, messages in failed.items():
        pattern = NOT_APPLICABLE[name][1]
        assert all(re.search(pattern, m) for m in messages), (name, messages)
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert len(passed) >= 15, passed
    assert cluster_is_clean(client)
