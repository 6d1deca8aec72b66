"""Synthetic data sets (``datasets.py``): shapes, the documented structure, seeds."""

import numpy as np
import pytest

from dask_asyncopt.datasets import make_ratings, make_sparse_classification


@pytest.mark.parametrize("n_classes", [2, 4])
def test_sparse_classification(n_classes):
    X, y = make_sparse_classification(3000, 400, nnz_per_row=10, n_classes=n_classes,
                                      random_state=0)
    assert X.format == "csr" and X.shape == (3000, 400) and y.shape == (3000,)
    assert set(np.unique(y)) == set(range(n_classes))
    row_nnz = np.diff(X.indptr)
    assert row_nnz.max() == 10 and row_nnz.min() >= 5  # collisions merge a few draws
    # every row's features are 1/sqrt(10), summed where draws collided
    assert np.isin(np.round(X.data * np.sqrt(10), 9), [1.0, 2.0, 3.0]).all()
    X2, y2 = make_sparse_classification(3000, 400, nnz_per_row=10, n_classes=n_classes,
                                        random_state=0)
    assert (X2 != X).nnz == 0 and np.array_equal(y2, y)  # an int seed reproduces
    X3, _ = make_sparse_classification(3000, 400, nnz_per_row=10, random_state=1)
    assert (X3 != X).nnz > 0


def test_sparse_classification_labels_follow_a_linear_model():
    """Noisy but learnable: a linear model separates far better than chance."""
    from sklearn.linear_model import LogisticRegression

    X, y = make_sparse_classification(4000, 200, random_state=3)
    assert 0.2 < y.mean() < 0.8
    score = LogisticRegression(max_iter=500).fit(X[:3000], y[:3000]).score(X[3000:], y[3000:])
    majority = max(y[3000:].mean(), 1 - y[3000:].mean())
    assert score > majority + 0.05
    _, y_clean = make_sparse_classification(4000, 200, noise=0.0, random_state=3)
    assert LogisticRegression(C=100, max_iter=2000).fit(X, y_clean).score(X, y_clean) > 0.95


def test_ratings_shape_ids_and_reproducibility():
    X, y = make_ratings(300, 200, 5_000, random_state=0)
    assert X.shape == (5_000, 2) and X.dtype == np.int64 and y.shape == (5_000,)
    assert X[:, 0].min() >= 0 and X[:, 0].max() < 300 and X[:, 1].max() < 200
    assert np.unique(X[:, 0] * 200 + X[:, 1]).shape[0] == 5_000  # distinct pairs
    X2, y2 = make_ratings(300, 200, 5_000, random_state=0)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    # power-law activity: the busiest users rate far more than the median one
    per_user = np.bincount(X[:, 0], minlength=300)
    assert per_user.max() > 4 * np.median(per_user)
    with pytest.raises(ValueError, match="more than half"):
        make_ratings(10, 10, 60)


def test_ratings_are_the_documented_model_plus_noise():
    X, y, truth = make_ratings(400, 300, 20_000, noise=0.5, return_truth=True,
                               random_state=1)
    u, i = X[:, 0], X[:, 1]
    model = (truth["mean"] + truth["user_bias"][u] + truth["item_bias"][i]
             + np.einsum("nk,nk->n", truth["user_factors"][u], truth["item_factors"][i]))
    residual = y - model
    interaction = np.einsum("nk,nk->n", truth["user_factors"][u], truth["item_factors"][i])
    assert abs(residual.mean()) < 0.02 and residual.std() == pytest.approx(0.5, rel=0.03)
    assert truth["noise"] == 0.5 and truth["mean"] == 3.5
    # users rate what they like more often when missing not at random
    Xm, _, tm = make_ratings(400, 300, 5_000, missing_not_at_random=0.5, return_truth=True,
                             random_state=1)
    liked = np.einsum("nk,nk->n", tm["user_factors"][Xm[:, 0]], tm["item_factors"][Xm[:, 1]])
    assert liked.mean() > 0.15 > abs(interaction.mean())


@pytest.mark.xfail(strict=True, reason=(
    "make_ratings draws factor entries with sd signal_scale / rank**0.25, which gives "
    "<p_u, q_i> the standard deviation signal_scale**2 (0.64 for the default 0.8), not "
    "signal_scale as documented; left as is: changing the generator changes every "
    "data set built from it, the golden reference fits included"))
def test_ratings_interaction_has_the_documented_scale():
    X, _, truth = make_ratings(400, 300, 20_000, return_truth=True, random_state=1)
    interaction = np.einsum("nk,nk->n", truth["user_factors"][X[:, 0]],
                            truth["item_factors"][X[:, 1]])
    assert interaction.std() == pytest.approx(0.8, rel=0.1)  # signal_scale
