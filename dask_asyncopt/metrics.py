"""Metrics of rating prediction and ranking, one definition each.

* :func:`rmse` — root mean squared error of predicted ratings.
* :func:`precision_at_k` — share of the top ``k`` recommendations that are
  relevant, averaged over users with at least one relevant item.
* :func:`ndcg_at_k` — normalised discounted cumulative gain with binary
  relevance and the ``log2(rank + 1)`` discount, averaged over users with at
  least one relevant item.

Users with no relevant item are left out of both ranking averages (their
precision and NDCG are undefined, not 0); if no user has one, a
``ValueError`` says so (no ``nan`` is returned).
"""

import numpy as np


def rmse(y_true, y_pred):
    """Root mean squared error ``sqrt(mean((y_true - y_pred) ** 2))``.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Observed ratings.
    y_pred : array-like of shape (n,)
        Predicted ratings, in the same order.

    Returns
    -------
    float
        The root mean squared error (in rating units).

    Examples
    --------
    >>> from dask_asyncopt.metrics import rmse
    >>> rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    1.1547005383792515
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} values but y_pred has "
                         f"{y_pred.shape[0]}")
    if y_true.shape[0] == 0:
        raise ValueError("rmse needs at least one rating")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("y_true or y_pred contains NaN or infinity")
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def _ranking_inputs(relevant, recommended, k):
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    recommended = [np.asarray(r).ravel() for r in recommended]
    relevant = [set(np.asarray(list(r) if isinstance(r, (set, frozenset)) else r)
                    .ravel().tolist()) for r in relevant]
    if len(relevant) != len(recommended):
        raise ValueError(f"relevant has {len(relevant)} users but recommended has "
                         f"{len(recommended)}; give one entry per user in both")
    users = [u for u, rel in enumerate(relevant) if rel]
    if not users:
        raise ValueError("no user has a relevant item: precision@k and NDCG@k are "
                         "undefined")
    return relevant, recommended, users


def precision_at_k(relevant, recommended, k):
    """Mean over users of ``|top k recommended ∩ relevant| / k``.

    Parameters
    ----------
    relevant : sequence of array-like or set
        Relevant item ids of each user (e.g. held-out items rated highly).
    recommended : sequence of array-like, or 2-d array
        Recommended item ids of each user, best first.  A list shorter than
        ``k`` counts its missing places as not relevant.
    k : int
        Number of top recommendations per user that are scored.

    Returns
    -------
    float
        Averaged over the users with at least one relevant item.

    Examples
    --------
    >>> from dask_asyncopt.metrics import precision_at_k
    >>> precision_at_k([{1, 2}, {5}], [[1, 3], [4, 5]], k=2)
    0.5
    """
    relevant, recommended, users = _ranking_inputs(relevant, recommended, k)
    hits = [sum(1 for item in recommended[u][:k].tolist() if item in relevant[u])
            for u in users]
    return float(np.mean(hits) / k)


def ndcg_at_k(relevant, recommended, k):
    """Mean over users of ``DCG@k / IDCG@k`` with binary relevance.

    ``DCG@k = sum_{j=1..k} rel_j / log2(j + 1)`` over the top ``k``
    recommendations (``rel_j`` is 1 if the item at rank ``j`` is relevant);
    ``IDCG@k`` is the DCG of a perfect list: ``min(k, |relevant|)`` hits first.

    Parameters
    ----------
    relevant : sequence of array-like or set
        Relevant item ids of each user.
    recommended : sequence of array-like, or 2-d array
        Recommended item ids of each user, best first.
    k : int
        Number of top recommendations per user that are scored.

    Returns
    -------
    float
        In ``[0, 1]``, averaged over the users with at least one relevant item.

    Examples
    --------
    >>> from dask_asyncopt.metrics import ndcg_at_k
    >>> round(ndcg_at_k([{2}], [[1, 2, 3]], k=3), 4)
    0.6309
    """
    relevant, recommended, users = _ranking_inputs(relevant, recommended, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for u in users:
        top = recommended[u][:k].tolist()
        dcg = sum(discount[j] for j, item in enumerate(top) if item in relevant[u])
        idcg = discount[:min(k, len(relevant[u]))].sum()
        scores.append(dcg / idcg)
    return float(np.mean(scores))
