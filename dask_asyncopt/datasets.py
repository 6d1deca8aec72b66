"""Synthetic data sets with known structure, for examples, tests and benchmarks."""

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state


def make_sparse_classification(n_samples=100_000, n_features=100_000, nnz_per_row=20,
                               n_informative=0.2, noise=1.0, n_classes=2,
                               random_state=None):
    """Click-through-like sparse binary features with a noisy linear label model.

    Each row has ``nnz_per_row`` hashed features drawn uniformly (duplicates
    merged), valued ``1 / sqrt(nnz_per_row)`` so rows have unit norm.  A random
    share ``n_informative`` of the features carries weight; labels are the
    arg-max of the linear scores plus logistic noise of scale ``noise``, so
    the classes are not separable.

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of rows.
    n_features : int, default=100_000
        Number of (hashed) feature columns.
    nnz_per_row : int, default=20
        Features drawn per row; a row has fewer non-zeros when draws collide.
    n_informative : float
        Share of features with a non-zero true weight.
    noise : float
        Scale of the logistic noise on the scores.
    n_classes : int, default=2
        Number of classes, labelled ``0 .. n_classes - 1``.
    random_state : int, RandomState instance or None, default=None
        Seed of the features, weights and noise.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (n_samples, n_features)
        Features, each row of unit L2 norm.
    y : ndarray of shape (n_samples,)
        Integer class labels.

    Examples
    --------
    >>> from dask_asyncopt.datasets import make_sparse_classification
    >>> X, y = make_sparse_classification(1000, 500, random_state=0)
    >>> X.shape, sorted(set(y.tolist()))
    ((1000, 500), [0, 1])
    """
    rng = check_random_state(random_state)
    rows = np.repeat(np.arange(n_samples), nnz_per_row)
    cols = rng.randint(0, n_features, size=n_samples * nnz_per_row)
    vals = np.full(n_samples * nnz_per_row, 1.0 / np.sqrt(nnz_per_row))
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n_samples, n_features))
    X.sum_duplicates()
    W = rng.normal(size=(n_features, n_classes)) * 3.0
    W *= rng.random_sample((n_features, 1)) < n_informative
    scores = X @ W + noise * rng.logistic(size=(n_samples, n_classes))
    if n_classes == 2:
        y = (scores[:, 1] > scores[:, 0]).astype(np.int64)
    else:
        y = scores.argmax(axis=1)
    return X, y
