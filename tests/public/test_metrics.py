"""Ranking and rating metrics against hand-computed values."""

import math

import numpy as np
import pytest

from dask_asyncopt.metrics import ndcg_at_k, precision_at_k, rmse


def test_rmse():
    assert rmse([1, 2, 3, 4], [1, 2, 3, 6]) == pytest.approx(1.0)
    assert rmse(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="NaN or infinity"):
        rmse([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="has 2 values but y_pred has 3"):
        rmse([1, 2], [1, 2, 3])


def test_precision_at_k():
    relevant = [{1, 2, 3}, {9}, set()]  # the third user has none: left out
    recommended = [[1, 4, 2, 5], [8, 7, 6, 5], [1, 2, 3, 4]]
    # user 0: 2 of the top 3 relevant; user 1: 0 of 3
    assert precision_at_k(relevant, recommended, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert precision_at_k(relevant, recommended, 1) == pytest.approx(0.5)
    # a list shorter than k counts its missing places as misses
    assert precision_at_k([{1}], [[1]], 4) == pytest.approx(0.25)


def test_ndcg_at_k():
    d = [1 / math.log2(j + 2) for j in range(4)]
    relevant = [{1, 2}, {3}]
    recommended = np.array([[2, 7, 1, 5], [3, 0, 0, 0]])
    user0 = (d[0] + d[2]) / (d[0] + d[1])
    assert ndcg_at_k(relevant, recommended, 4) == pytest.approx((user0 + 1.0) / 2)
    assert ndcg_at_k([{5}], [[1, 2, 3]], 3) == 0.0
    assert ndcg_at_k([{1, 2, 3}], [[1, 2, 3]], 3) == pytest.approx(1.0)


def test_ranking_errors():
    with pytest.raises(ValueError, match="no user has a relevant item"):
        precision_at_k([set()], [[1, 2]], 2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k([{1}], [[1]], 0)
    with pytest.raises(ValueError, match="one entry per user"):
        ndcg_at_k([{1}, {2}], [[1]], 1)
