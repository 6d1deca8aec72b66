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


def _power_law_weights(n, exponent, cap, rng):
    """Zipf-like activity ``(1 + rank) ** -exponent`` over a random ranking,
    normalised to sum to 1, each share capped at ``cap`` (the excess is spread
    over the others so that no id is asked for more pairs than exist)."""
    w = (1.0 + rng.permutation(n)) ** -float(exponent)
    w /= w.sum()
    for _ in range(50):
        over = w > cap
        if not over.any():
            break
        excess = (w[over] - cap).sum()
        w[over] = cap
        w[~over] += excess * w[~over] / w[~over].sum()
    return w


def make_ratings(n_users=10_000, n_items=5_000, n_ratings=500_000, rank=10, noise=0.5,
                 activity_exponent=0.8, mean=3.5, bias_scale=0.3, signal_scale=0.8,
                 missing_not_at_random=0.0, return_truth=False, random_state=None):
    """Explicit ratings from a low-rank model with biases and known noise.

    Ratings are ``mean + b_u + c_i + <p_u, q_i> + noise * e`` with standard
    normal ``e``, biases ``N(0, bias_scale**2)`` and rank-``rank`` factors with
    entries ``N(0, signal_scale / sqrt(rank))``, so that the interaction
    ``<p_u, q_i>`` has standard deviation ``signal_scale``.  Ratings are real
    numbers (not rounded): the Bayes error of a perfect model is ``noise``.

    Which pairs are observed follows power-law activity: user ``u`` (item
    ``i``) is drawn with probability proportional to ``(1 + rank_u) **
    -activity_exponent`` over a random ranking of the ids, capped so no id
    asks for more than half of the other side; duplicates are redrawn.  With
    ``missing_not_at_random = s > 0`` a drawn pair is kept with probability
    ``exp(s * (z - max z))`` where ``z`` is its standardised interaction:
    users rate what they like more often (for ranking tests).

    Parameters
    ----------
    n_users, n_items, n_ratings : int, default=10_000, 5_000, 500_000
        Sizes; ``n_ratings`` distinct (user, item) pairs are returned.
    rank : int, default=10
        Rank of the interaction.
    noise : float, default=0.5
        Standard deviation of the rating noise (the noise floor of RMSE).
    activity_exponent : float, default=0.8
        Power-law exponent of user and item activity (0: uniform).
    mean, bias_scale, signal_scale : float, default=3.5, 0.3, 0.8
        Global mean, bias standard deviation, interaction standard deviation.
    missing_not_at_random : float, default=0.0
        Strength of the preference-driven selection (0: missing at random).
    return_truth : bool, default=False
        Also return the generating parameters.
    random_state : int, RandomState instance or None, default=None
        Seed of the factors, biases, activity ranking, pairs and noise; an int
        makes the data reproducible.

    Returns
    -------
    X : ndarray of shape (n_ratings, 2), int64
        ``[user id, item id]`` pairs, ids in ``range(n_users)``, ``range(n_items)``.
    y : ndarray of shape (n_ratings,)
        Ratings.
    truth : dict, only with ``return_truth``
        ``user_factors``, ``item_factors``, ``user_bias``, ``item_bias``,
        ``mean`` and ``noise``.

    Examples
    --------
    >>> from dask_asyncopt.datasets import make_ratings
    >>> X, y = make_ratings(200, 100, 2_000, random_state=0)
    >>> X.shape, y.shape, X.dtype.kind
    ((2000, 2), (2000,), 'i')
    """
    if n_ratings > n_users * n_items // 2:
        raise ValueError(
            f"n_ratings={n_ratings} is more than half of the {n_users * n_items} "
            "(user, item) cells; lower n_ratings or raise n_users/n_items")
    rng = check_random_state(random_state)
    scale = signal_scale / np.sqrt(np.sqrt(rank))  # <p, q> has sd signal_scale
    P = rng.normal(scale=scale, size=(n_users, rank))
    Q = rng.normal(scale=scale, size=(n_items, rank))
    bu = rng.normal(scale=bias_scale, size=n_users)
    bi = rng.normal(scale=bias_scale, size=n_items)
    wu = _power_law_weights(n_users, activity_exponent, 0.5 * n_items / n_ratings, rng)
    wi = _power_law_weights(n_items, activity_exponent, 0.5 * n_users / n_ratings, rng)
    seen = np.empty(0, dtype=np.int64)
    while seen.shape[0] < n_ratings:
        need = n_ratings - seen.shape[0]
        draw = int(need * 1.3) + 16
        u = rng.choice(n_users, size=draw, p=wu)
        i = rng.choice(n_items, size=draw, p=wi)
        if missing_not_at_random > 0:
            z = np.einsum("nk,nk->n", P[u], Q[i]) / signal_scale
            keep = rng.random_sample(draw) < np.exp(missing_not_at_random * (z - 4.0))
            u, i = u[keep], i[keep]
        cells = u.astype(np.int64) * n_items + i
        # keep the first draw of each new cell, in draw order (reproducible)
        _, first = np.unique(cells, return_index=True)
        cells = cells[np.sort(first)]
        cells = cells[~np.isin(cells, seen)]
        seen = np.concatenate([seen, cells[:need]])
    users, items = np.divmod(seen, n_items)
    X = np.column_stack([users, items]).astype(np.int64)
    y = (mean + bu[users] + bi[items] + np.einsum("nk,nk->n", P[users], Q[items])
         + noise * rng.normal(size=n_ratings))
    if not return_truth:
        return X, y
    truth = {"user_factors": P, "item_factors": Q, "user_bias": bu, "item_bias": bi,
             "mean": mean, "noise": noise}
    return X, y, truth
