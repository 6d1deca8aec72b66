"""``MatrixFactorization``: explicit-rating recommender trained on Dask.

The model is ``mu + b_u + c_i + <p_u, q_i>`` (global mean, user and item
biases, user and item factors) fitted to squared loss with L2 on factors and
biases (separate strengths, paid per rating as in Funk/Koren SGD and LIBMF).
``fit`` keeps user and item factor blocks in Dask actors and runs one worker
loop per Dask worker thread over stratified rating blocks (DSGD/NOMAD style, see
:mod:`dask_asyncopt.solvers.mf`).

Ids: any hashable values (integers, floats, strings, tuples, a mix), compared
as Python compares them (``1 == 1.0``).  ``fit`` maps the distinct ids with a
hash table (``pandas.factorize``) to rows ``0..n-1`` of the factor matrices:
sorted when they are mutually comparable, else in order of first appearance;
ids that a warm start or ``partial_fit`` adds get the next rows.
``user_ids_[row]`` is the id of a row and ``user_index_`` (a
``pandas.Index``) the row of an id; likewise for items.  A missing id (NaN,
None) is an error naming its column.  An id ``fit`` never saw is *unknown*:
its prediction falls back to the global mean plus the bias of the other side
if that one is known; ``similar_items``/``similar_users`` raise a
``KeyError`` naming it (it has no factors to compare).

Data from a Dask collection stays on the workers: the partitions are read
where they fall, only their distinct ids and a few sums reach the client, and
each worker loop gathers its users' ratings from the other workers (see
:func:`~dask_asyncopt.solvers.mf.place_rating_parts`).
"""

import math
from numbers import Integral, Real

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..data import inputs
from ..progress import FitProgress
from ..solvers import ITEM_SIDES, FactorProblem, Settings, fit_factors, session

#: step of ``eta0=None``: LIBMF's AdaGrad step, and AMSGrad's measured default
_DEFAULT_ETA0 = {"sgd": 0.1, "amsgrad": 0.003}

#: column names a DataFrame of ratings may use (else its columns are taken in order)
_NAMES = ("user", "item", "rating")


# ------------------------------------------------------------------ inputs
def _frame_positions(columns, n, name="X"):
    """Positions of the user and item (``n=2``) or user, item and rating (``n=3``)
    columns of a DataFrame: the columns named ``user``, ``item`` (``rating``) if it
    has them, else its ``n`` columns in order."""
    labels = list(columns)
    wanted = _NAMES[:n]
    if all(sum(1 for c in labels if isinstance(c, str) and c == w) == 1 for w in wanted):
        return [labels.index(w) for w in wanted]
    if len(labels) == n:
        return list(range(n))
    if n == 3:
        raise ValueError(
            f"{name} without y must be a DataFrame of 3 columns (user id, item id, rating) "
            f"or one with columns named 'user', 'item' and 'rating'; got {len(labels)} "
            f"columns {labels[:8]}")
    raise ValueError(
        f"{name} must have shape (n_ratings, 2): one [user id, item id] pair per row (a "
        f"DataFrame: 2 columns, or columns named 'user' and 'item'); got {len(labels)} "
        f"columns {labels[:8]}")


def _checked_ids(values, what, where):
    """One column of ids; a missing id (NaN, None, NA) is an error naming the column."""
    missing = np.asarray(pd.isna(values))
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"{where} contains a missing {what} id (NaN or None) at row {row}; every "
            f"rating needs a {what} id: drop or fill those rows")
    return values


def _values(column):
    """A Series' values: numpy columns as numpy arrays, extension columns (strings,
    Int64, categories) as they are."""
    return (column.array if pd.api.types.is_extension_array_dtype(column.dtype)
            else column.to_numpy())


def _frame_ids(X, position, what, name):
    return _checked_ids(_values(X.iloc[:, position]), what,
                        f"{name}'s {what} column {X.columns[position]!r}")


def _pairs(X, name="X"):
    """``(user ids, item ids)`` of in-memory pairs ``X``: an ``(n, 2)`` array, a
    sequence of pairs or a DataFrame (module docstring); clear errors."""
    if sp.issparse(X) or inputs.is_pydata_sparse(X):
        raise TypeError(
            f"{name} is a sparse matrix, but with y given {name} must be (user id, item "
            "id) pairs; pass the users x items rating matrix alone as fit(R)")
    if isinstance(X, (list, tuple)) and len(X):
        frame = pd.DataFrame(list(X))  # python rows: each column keeps its own types
        if frame.shape[1] != 2:
            raise ValueError(
                f"{name} must have shape (n_ratings, 2): one [user id, item id] pair per "
                f"row; got shape {frame.shape}")
        X = frame
    if isinstance(X, pd.DataFrame):
        users, items = _frame_positions(X.columns, 2, name)
        return _frame_ids(X, users, "user", name), _frame_ids(X, items, "item", name)
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n_ratings, 2): one [user id, item id] pair per row; "
            f"got shape {X.shape}")
    return (_checked_ids(X[:, 0], "user", f"{name}'s user column (column 0)"),
            _checked_ids(X[:, 1], "item", f"{name}'s item column (column 1)"))


def _as_ratings(y, n, name="y"):
    if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        numeric = pd.api.types.is_numeric_dtype(y.dtype)
        y = y.to_numpy(dtype=np.float64, na_value=np.nan) if numeric else y.to_numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional (one rating per pair), got shape "
                         f"{y.shape}")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numeric ratings, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if y.shape[0] != n:
        raise ValueError(f"X has {n} pairs but {name} has {y.shape[0]} ratings")
    if not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinity; remove those ratings before "
                         "fitting")
    return y


def _from_matrix(R):
    """Stored entries of a users x items sparse matrix as ids and ratings."""
    R = inputs.to_scipy(R)
    if not sp.issparse(R):
        raise TypeError(
            "fit(X) without y needs a scipy.sparse or pydata sparse users x items rating "
            "matrix, or a pandas DataFrame of (user id, item id, rating) columns; for "
            "(user id, item id) pairs pass the ratings too: fit(X, y)")
    if R.ndim != 2:
        raise ValueError(f"R must be 2-dimensional, got {R.ndim} dimensions")
    R = sp.coo_matrix(R)
    R.sum_duplicates()
    users, items = R.row.astype(np.int64), R.col.astype(np.int64)
    return users, items, _as_ratings(R.data, users.shape[0])


def _rating_columns(X, y, name="X"):
    """``(user ids, item ids, ratings)`` of in-memory input: pairs ``X`` with
    ratings ``y``; with ``y=None`` a DataFrame of (user, item, rating) columns or a
    sparse users x items matrix."""
    if y is None:
        if isinstance(X, pd.DataFrame):
            users, items, ratings = _frame_positions(X.columns, 3, name)
            return (_frame_ids(X, users, "user", name), _frame_ids(X, items, "item", name),
                    _as_ratings(X.iloc[:, ratings], X.shape[0],
                                f"{name}'s rating column {X.columns[ratings]!r}"))
        return _from_matrix(X)
    users, items = _pairs(X, name)
    return users, items, _as_ratings(y, users.shape[0])


# --------------------------------------------------------------------- ids
def _as_array(ids):
    """Ids (an Index, ndarray or pandas array) as a numpy array (object for strings)."""
    return ids.to_numpy() if hasattr(ids, "to_numpy") else np.asarray(ids)


def _factorize(values, what="user", where="X"):
    """``(row of each value, distinct ids by row)``: a hash table gives the distinct
    ids in order of first appearance (integer ids in a narrow range: marking them,
    :func:`_factorize_dense`, same result); rows follow their sorted order when they
    are mutually comparable (Python's ``<``), else that order of appearance."""
    dense = _factorize_dense(values)
    if dense is not None:
        return dense
    try:
        codes, ids = pd.factorize(values)
    except TypeError as exc:
        raise TypeError(f"{where} holds {what} ids that are not hashable ({exc}); ids "
                        "must be numbers, strings, tuples or other hashable values") from exc
    ids = _as_array(ids)
    try:
        order = np.argsort(ids, kind="stable")
    except TypeError:  # not mutually comparable (a string and a number, say)
        return codes.astype(np.int64), ids
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0])
    return rank[codes], ids[order]


def _factorize_dense(values):
    """:func:`_factorize` of integer ids spanning a range at most about the number
    of values (ids ``0..n-1``, say), by marking the ids present: linear time, no
    hash table and no sort of the distinct ids (hashing ten million ids was most of
    a large fit's id mapping).  ``None`` for other ids."""
    if not (isinstance(values, np.ndarray) and values.dtype.kind in "iu" and values.size):
        return None
    low, high = int(values.min()), int(values.max())
    if high - low > 2 * values.shape[0] + 1024 or high > np.iinfo(np.int64).max:
        return None
    offsets = values.astype(np.int64) - low
    present = np.zeros(high - low + 1, dtype=bool)
    present[offsets] = True
    rows = np.cumsum(present, dtype=np.int64) - 1
    return rows[offsets], (np.flatnonzero(present) + low).astype(values.dtype)


def _index(ids):
    return pd.Index(ids, tupleize_cols=False)


def _extend(index, values, what):
    """``(index with the new ids of values appended, row of each value)``."""
    rows = index.get_indexer(values).astype(np.int64)
    new = rows < 0
    if new.any():
        codes, ids = _factorize(values[new], what)
        rows[new] = len(index) + codes
        extra = _index(ids)
        if extra.dtype != index.dtype:  # no numeric promotion: int ids stay exact
            index, extra = index.astype(object), extra.astype(object)
        index = index.append(extra)
    return index, rows


def _distinct(values):
    return _as_array(pd.unique(values))


def _lookup(index, values):
    """Rows of ``values`` in ``index``; -1 where unknown."""
    return index.get_indexer(values).astype(np.int64)


def _as_ids(ids, name):
    """A 1-d array of query ids (a scalar is one id; a tuple or list is a sequence)."""
    if isinstance(ids, (pd.Series, pd.Index)):
        ids = _values(ids)
    elif isinstance(ids, (list, tuple)):
        ids = _as_array(_index(list(ids)))
    else:
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids[None]
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a 1-d sequence of ids, got shape {ids.shape}")
    return _checked_ids(ids, name[:-4], name)


# ------------------------------------------------------------ dask inputs
def _held_mask(n, seed, fraction, part):
    """Held-out ratings of a dask part: each with probability ``fraction``."""
    if not fraction:
        return None
    return np.random.default_rng([seed, part]).random(n) < fraction


def _part_columns(x, y, part):
    """:func:`_rating_columns` of one partition (runs on a worker)."""
    try:
        return _rating_columns(x, y)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{exc} (partition {part} of the dask input)") from None


def _part_stats(part, seed, fraction, j):
    """Distinct ids, training ratings and their sum of one partition (on a worker)."""
    users, items, ratings = part
    held = _held_mask(ratings.shape[0], seed, fraction, j)
    train = ratings if held is None else ratings[~held]
    return (_distinct(users), _distinct(items), int(train.shape[0]), float(train.sum()),
            0 if held is None else int(held.sum()))


def _merge_stats(*stats):
    """One result for all partitions: their distinct ids in :func:`_factorize`'s
    order, ratings to train on and their sum, ratings held out."""
    users = np.concatenate([s[0] for s in stats]) if stats else np.zeros(0, np.int64)
    items = np.concatenate([s[1] for s in stats]) if stats else np.zeros(0, np.int64)
    return (_factorize(users, "user")[1], _factorize(items, "item")[1],
            sum(s[2] for s in stats), math.fsum(s[3] for s in stats), sum(s[4] for s in stats))


def _map_part(part, indexes, seed, fraction, j, held):
    """Training (or, ``held``, held-out) ratings of a partition with ids mapped to
    rows (on a worker)."""
    users, items, ratings = part
    mask = _held_mask(ratings.shape[0], seed, fraction, j)
    if mask is not None:
        keep = mask if held else ~mask
        users, items, ratings = users[keep], items[keep], ratings[keep]
    return (_lookup(indexes[0], users), _lookup(indexes[1], items),
            np.ascontiguousarray(ratings))


def _dask_parts(X, y):
    """One ``Delayed`` per partition computing to ``(user ids, item ids, ratings)``
    (checked on the worker); the layout is checked here, from the metadata."""
    if y is None:
        if not hasattr(X, "columns"):
            raise TypeError(
                "fit(X) without y needs a DataFrame of (user id, item id, rating) columns; "
                "for a dask array of (user id, item id) pairs pass the ratings too")
        _frame_positions(X.columns, 3)
        return [dask.delayed(_part_columns)(x, None, j) for j, x in enumerate(X.to_delayed())]
    if not (inputs.is_dask(X) and inputs.is_dask(y)):
        raise TypeError("X and y must both be dask collections or both in memory; "
                        "convert the other with dask.array.from_array")
    if hasattr(X, "columns") and not hasattr(y, "chunks"):
        _frame_positions(X.columns, 2)
        if X.npartitions != y.npartitions:
            raise ValueError(
                f"X has {X.npartitions} partitions and y {y.npartitions}: they must be "
                "aligned; pass one DataFrame of (user, item, rating) columns as fit(X)")
        xs, ys = X.to_delayed(), y.to_delayed()
    else:
        X, y = inputs.dask_to_arrays(X=X, y=y)
        if X.ndim != 2 or X.shape[1] != 2:
            raise ValueError(
                "X must have shape (n_ratings, 2): one [user id, item id] pair per row; "
                f"got shape {X.shape}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} pairs but y has {y.shape[0]} ratings")
        X = X.rechunk({1: -1}) if X.numblocks[1] > 1 else X
        y = y.rechunk({0: X.chunks[0]})
        xs, ys = X.to_delayed().ravel(), y.to_delayed().ravel()
    return [dask.delayed(_part_columns)(x, yp, j)
            for j, (x, yp) in enumerate(zip(xs, ys, strict=True))]


class MatrixFactorization(RegressorMixin, BaseEstimator):
    """Biased matrix factorisation trained by asynchronous stratified SGD on Dask.

    Predicts ``mu + b_u + c_i + <p_u, q_i>``; minimises the squared error
    plus ``reg_factors/2 * (|p_u|^2 + |q_i|^2) + reg_biases/2 * (b_u^2 +
    c_i^2)`` per rating.  ``fit`` places user factor blocks (one per worker
    loop) and item factor blocks (``n_blocks``) in Dask actors; each loop
    owns the ratings of its users and checks item blocks out one at a time,
    running a Numba per-rating SGD kernel over the stratum.

    Ids are any hashable values (integers, floats, strings, tuples, a mix);
    ``fit`` maps them to rows and keeps the mapping (``user_ids_``,
    ``user_index_``), so ``predict``, ``recommend`` and the ``similar_*``
    methods take and return the raw ids.

    Parameters
    ----------
    n_factors : int, default=32
        Rank of the factors.
    reg_factors : float, default=0.04
        L2 strength on factors, per rating.
    reg_biases : float, default=0.05
        L2 strength on biases, per rating.
    learning_rate : {"adagrad", "constant"}, default="adagrad"
        Step rule of ``optimizer="sgd"`` (ignored with ``"amsgrad"``).
        ``"adagrad"``: per-row adaptive steps ``eta0 / sqrt(G_row)`` (LIBMF's
        schedule), robust without tuning.  ``"constant"``: plain SGD with
        ``eta0 / sqrt(epoch)``.
    eta0 : float or None, default=None
        Initial step.  ``None``: 0.1 with ``optimizer="sgd"``, 0.003 with
        ``optimizer="amsgrad"`` (measured defaults that work without tuning).
    init_scale : float, default=0.01
        Factors start ``N(0, (init_scale / sqrt(n_factors))**2)``, biases at 0.
        A small start regularises: measured on ``make_ratings`` 0.01 beat 0.1
        and 0.3 (test RMSE 0.612 vs 0.617 and 0.628).
    max_iter : int, default=20
        Epochs (each rating is visited once per epoch).
    tol : float or None, default=1e-4
        With ``early_stopping``: stop when the validation RMSE has not improved
        by ``tol`` for ``n_iter_no_change`` epochs.  ``None``: never stop early.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the ratings, report their RMSE per
        epoch, stop early and keep the best epoch's model.
    validation_fraction : float, default=0.1
        Share of the ratings held out with ``early_stopping`` (drawn with
        ``random_state``; from a dask collection each rating is held out with
        this probability, on its worker).
    n_iter_no_change : int, default=3
        Epochs without an improvement of ``tol`` in validation RMSE before
        ``early_stopping`` stops the fit.
    rating_range : tuple (low, high) or None, default=None
        Clip predictions (``predict``, ``score``, ``recommend``'s scores) to
        ``[low, high]``, the scale of the ratings (``(1, 5)`` for stars).
        Training is unaffected.  ``None``: no clipping.
    warm_start : bool, default=False
        ``fit`` continues from the previous fit instead of starting afresh: the
        factors, biases and step state (AdaGrad's accumulators, AMSGrad's
        moments, the epoch count of ``learning_rate="constant"``) go on, and
        ``global_mean_`` stays the first fit's.  Ids not seen before get new
        rows, started as a fresh fit's.  ``n_factors`` must not change; a
        change of ``optimizer`` or ``learning_rate`` restarts the step state.
        ``partial_fit`` always continues.
    solver : {"asyb", "sync", "adpsgd"}, default="asyb"
        ``"asyb"``: loops take any free item block (no barrier).  ``"sync"``:
        DSGD's fixed rotation (deterministic for an int ``random_state``).
        ``"adpsgd"``: every loop keeps a replica of all item rows and averages
        it pairwise with another loop's after each item block (AD-PSGD; no
        block is ever checked out); the replicas are averaged after each
        epoch (the history's ``consensus_distance``).
    optimizer : {"sgd", "amsgrad"}, default="sgd"
        ``"sgd"``: per-rating SGD with the steps of ``learning_rate``.
        ``"amsgrad"``: per-rating AMSGrad with step ``eta0``; the moments ``m, v,
        vhat`` of every factor and bias are stored with its row (they travel
        with an item block and are in every checkpoint).  A rating updates the
        moments of the user row and item row it touches only (lazy / "sparse"
        Adam: each row runs AMSGrad on its own stream of gradients).
    beta1 : float, default=0.9
        AMSGrad's first-moment decay (``optimizer="amsgrad"`` only).
    beta2 : float, default=0.999
        AMSGrad's second-moment decay (``optimizer="amsgrad"`` only).
    adam_epsilon : float, default=1e-8
        Added to ``sqrt(vhat)`` in AMSGrad's denominator (``optimizer="amsgrad"``
        only).
    n_blocks : int or None, default=None
        Item blocks; ``None``: twice the number of worker loops.  At most one
        per item: a larger value is clipped, with a ``UserWarning`` naming both
        numbers.  Fewer blocks than loops works, but with ``solver="asyb"`` or
        ``"sync"`` only ``n_blocks`` loops can hold a block at a time (a
        ``UserWarning``).
    n_workers : int or None, default=None
        Worker loops; ``None``: one per Dask worker thread.  At most one per
        user: a larger value is clipped, with a ``UserWarning`` naming both
        numbers (the default silently).  More loops than the workers' threads
        run, sharing threads, with a ``UserWarning``.
    timeout : float, default=120.0
        Longest wait for any single exchange before the fit fails.
    random_state : int, RandomState instance or None, default=None
        Seed of the initial factors, the stratification, the validation split and
        the loops' rating order.  With ``solver="sync"`` an int makes fits
        repeatable.
    verbose : int, default=0
        0: silent.  1: a ``tqdm.auto`` progress bar over epochs (train RMSE,
        validation RMSE with ``early_stopping``, item-block updates per second).
        2 or more: the bar and one ``INFO`` line per epoch on the
        ``dask_asyncopt`` logger (see :class:`~dask_asyncopt.progress.FitProgress`).

    Attributes
    ----------
    user_ids_, item_ids_ : ndarray
        The raw ids by row: row ``r`` of the factors is id ``user_ids_[r]``
        (``item_ids_[r]``).  After a fresh fit the ids are sorted when they
        are mutually comparable, else in order of first appearance; a warm
        start or ``partial_fit`` appends the ids it adds.
    user_index_, item_index_ : pandas.Index
        The same ids as a hash table: ``user_index_.get_loc(id)`` is the row of
        an id (``KeyError`` if unknown), ``user_index_.get_indexer(ids)`` the
        rows of many (-1 for an unknown id).
    user_factors_, item_factors_ : ndarray of shape (n_users, n_factors), (n_items, n_factors)
    user_bias_, item_bias_ : ndarray of shape (n_users,), (n_items,)
    global_mean_ : float
        Mean training rating of the first fit (kept by warm starts and
        ``partial_fit``: the biases are learnt around it).
    history_ : pandas.DataFrame
        Per epoch: time, train RMSE (progressive: each rating's error before its
        update), validation RMSE (with ``early_stopping``), staleness, compute and
        wait fractions of the loops.  Warm starts and ``partial_fit`` append
        their epochs, numbered on.
    n_iter_ : int
        Epochs run, warm starts and ``partial_fit`` calls included.
    best_epoch_ : int
        Epoch whose model was kept (the last one without ``early_stopping``).

    Notes
    -----
    Unknown ids: ``predict`` of a pair whose user (item) ``fit`` never saw
    is ``global_mean_`` plus the item's (user's) bias, or ``global_mean_``
    when both are unknown; ``recommend`` to an unknown user ranks the items
    by that prediction (their bias).  ``similar_items`` and ``similar_users``
    raise a ``KeyError`` naming an unknown id: it has no factors, so no
    similarity; filter the queries with ``item_index_.get_indexer(ids) >= 0``.

    Examples
    --------
    >>> from dask_asyncopt import MatrixFactorization
    >>> from dask_asyncopt.datasets import make_ratings
    >>> X, y = make_ratings(300, 200, 6_000, random_state=0)
    >>> mf = MatrixFactorization(n_factors=8, max_iter=5, random_state=0).fit(X, y)
    >>> mf.predict(X[:3]).shape
    (3,)
    >>> items, scores = mf.recommend([0, 1], n=5)
    >>> items.shape
    (2, 5)
    >>> ams = MatrixFactorization(n_factors=8, max_iter=5, optimizer="amsgrad",
    ...                           random_state=0).fit(X, y)
    >>> bool(ams.history_["train_rmse"].iloc[-1] < ams.history_["train_rmse"].iloc[0])
    True

    Any hashable ids, a DataFrame of (user, item, rating) columns, clipped
    predictions, and new ratings folded in:

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"user": [f"u{u}" for u in X[:, 0]],
    ...                       "item": [f"i{i}" for i in X[:, 1]], "rating": y})
    >>> mf = MatrixFactorization(n_factors=8, max_iter=3, rating_range=(1, 5),
    ...                          random_state=0).fit(frame)
    >>> str(mf.user_ids_[0]), int(mf.user_index_.get_loc("u0"))
    ('u0', 0)
    >>> p = mf.predict([["u0", "i7"], ["newcomer", "i7"]])
    >>> bool(p[1] == mf.global_mean_ + mf.item_bias_[mf.item_index_.get_loc("i7")])
    True
    >>> _ = mf.partial_fit(pd.DataFrame({"user": ["newcomer"], "item": ["i7"],
    ...                                  "rating": [5.0]}))
    >>> len(mf.user_ids_) == frame["user"].nunique() + 1, mf.n_iter_
    (True, 4)
    """

    _parameter_constraints = {
        "n_factors": [Interval(Integral, 1, None, closed="left")],
        "reg_factors": [Interval(Real, 0, None, closed="left")],
        "reg_biases": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [StrOptions({"adagrad", "constant"})],
        "eta0": [Interval(Real, 0, None, closed="neither"), None],
        "init_scale": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "rating_range": [tuple, list, np.ndarray, None],
        "warm_start": ["boolean"],
        "solver": [StrOptions(set(ITEM_SIDES))],
        "optimizer": [StrOptions({"sgd", "amsgrad"})],
        "beta1": [Interval(Real, 0, 1, closed="left")],
        "beta2": [Interval(Real, 0, 1, closed="left")],
        "adam_epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_blocks": [Interval(Integral, 1, None, closed="left"), None],
        "n_workers": [Interval(Integral, 1, None, closed="left"), None],
        "timeout": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, n_factors=32, *, reg_factors=0.04, reg_biases=0.05,
                 learning_rate="adagrad", eta0=None, init_scale=0.01, max_iter=20, tol=1e-4,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=3,
                 rating_range=None, warm_start=False, solver="asyb", optimizer="sgd",
                 beta1=0.9, beta2=0.999, adam_epsilon=1e-8, n_blocks=None, n_workers=None,
                 timeout=120.0, random_state=None, verbose=0):
        self.n_factors = n_factors
        self.reg_factors = reg_factors
        self.reg_biases = reg_biases
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.init_scale = init_scale
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.rating_range = rating_range
        self.warm_start = warm_start
        self.solver = solver
        self.optimizer = optimizer
        self.beta1 = beta1
        self.beta2 = beta2
        self.adam_epsilon = adam_epsilon
        self.n_blocks = n_blocks
        self.n_workers = n_workers
        self.timeout = timeout
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # fit(R) with a users x items matrix
        tags.input_tags.two_d_array = True
        tags.input_tags.string = True  # ids may be strings
        tags.target_tags.required = False  # y is optional with fit(R) or fit(frame)
        tags.non_deterministic = self.solver != "sync"
        return tags

    def __setstate__(self, state):
        super().__setstate__(state)
        for side in ("user", "item"):  # a model pickled before the index attributes
            if hasattr(self, f"{side}_ids_") and not hasattr(self, f"{side}_index_"):
                setattr(self, f"{side}_index_", _index(getattr(self, f"{side}_ids_")))

    # --------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the factors by asynchronous stratified SGD on Dask.

        Parameters
        ----------
        X : array-like, pandas/dask DataFrame or dask array of shape (n_ratings, 2), \
pandas/dask DataFrame of shape (n_ratings, 3), or sparse matrix of shape (n_users, n_items)
            With ``y``: ``[user id, item id]`` pairs (any hashable ids; a
            DataFrame's columns named ``user`` and ``item``, else its two columns in
            order).  Without ``y``: a DataFrame of ``user``, ``item`` and ``rating``
            columns (by those names, else its three columns in order), or a
            scipy.sparse / pydata sparse rating matrix whose stored entries
            (explicit zeros included) are the ratings, rows and columns the ids.
            A dask collection stays on the workers: only its distinct ids reach the
            client, and the ratings are regrouped into strata worker to worker.
        y : array-like or dask array/series of shape (n_ratings,), optional
            Ratings (finite numbers).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        continuing = self.warm_start and hasattr(self, "user_factors_")
        return self._run(X, y, self.max_iter, continuing, self.early_stopping)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One epoch over these ratings, continuing from the current model.

        As scikit-learn's ``partial_fit``: one pass over the data given.  The
        first call (on an unfitted model) starts the model and sets
        ``global_mean_`` from its ratings; later calls keep ``global_mean_``,
        continue the factors, biases and step state, and give ids they add new
        rows (started as a fresh fit's).  ``early_stopping`` and ``max_iter``
        are ignored.

        Parameters
        ----------
        X : array-like, DataFrame, dask collection or sparse matrix
            As :meth:`fit`'s ``X``.
        y : array-like or dask array/series of shape (n_ratings,), optional
            As :meth:`fit`'s ``y``.

        Returns
        -------
        self : object
            Updated estimator.
        """
        return self._run(X, y, 1, hasattr(self, "user_factors_"), False)

    def _run(self, X, y, epochs, continuing, early_stopping):
        if continuing and self.user_factors_.shape[1] != self.n_factors:
            raise ValueError(
                f"the fitted model has {self.user_factors_.shape[1]} factors but "
                f"n_factors={self.n_factors}: a warm start or partial_fit continues the "
                "same factors; set warm_start=False to fit afresh")
        clip = self._clip_range()
        data = None
        if not (inputs.is_dask(X) or inputs.is_dask(y)):
            data = _rating_columns(X, y)
            if data[2].shape[0] == 0:
                raise ValueError("X has 0 ratings; at least 1 is required")
        done = int(self.n_iter_) if continuing else 0
        progress = FitProgress(self.verbose, total=epochs,
                               desc=f"{type(self).__name__}({self.solver})")
        with session() as client, progress:
            self._fit(client, X, y, data, epochs, done, continuing, early_stopping,
                      progress)
        self._clip = clip
        return self

    def _clip_range(self):
        if self.rating_range is None:
            return None
        try:
            low, high = (float(v) for v in self.rating_range)
        except (TypeError, ValueError):
            low = high = math.nan
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"rating_range must be None or (low, high) with finite "
                             f"low < high; got {self.rating_range!r}")
        return low, high

    def _fit(self, client, X, y, data, epochs, done, continuing, early_stopping,
             callback=None):
        seed = self.random_state
        if isinstance(seed, np.random.RandomState):
            seed = seed.randint(2**31)
        rng = np.random.default_rng(seed)
        if data is None:
            ids, (train, held_out), mu = self._place_dask(client, X, y, continuing,
                                                          early_stopping, rng)
            seen = None
        else:
            ids, (train, held_out), mu = self._place_in_memory(data, continuing,
                                                               early_stopping, rng)
            seen = self._seen_pairs(train, held_out, ids, continuing)
        (user_index, user_ids), (item_index, item_ids) = ids
        rule = "amsgrad" if self.optimizer == "amsgrad" else self.learning_rate
        problem = FactorProblem(
            n_factors=self.n_factors, reg_factors=float(self.reg_factors),
            reg_biases=float(self.reg_biases),
            eta0=float(_DEFAULT_ETA0[self.optimizer] if self.eta0 is None else self.eta0),
            rule=rule, init_scale=float(self.init_scale),
            adam=(float(self.beta1), float(self.beta2), float(self.adam_epsilon)))
        settings = Settings(
            solver=self.solver, n_blocks=self.n_blocks, n_workers=self.n_workers,
            max_iter=done + epochs, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            timeout=self.timeout, callback=callback, first_epoch=done + 1,
            checkpoint_every=dask.config.get("asyncopt.checkpoint-every", 1))
        init = self._packed_rows(rule) if continuing else None
        result = fit_factors(client, train, (len(user_ids), len(item_ids)), mu, problem,
                             settings, rng, held_out, init)
        k = self.n_factors
        U, V = result.model
        history = pd.DataFrame(result.history)
        if continuing:
            history = pd.concat([self.history_, history], ignore_index=True)
        self.user_ids_, self.user_index_ = user_ids, user_index
        self.item_ids_, self.item_index_ = item_ids, item_index
        self.user_factors_ = np.ascontiguousarray(U[:, :k])
        self.user_bias_ = U[:, k].copy()
        self.item_factors_ = np.ascontiguousarray(V[:, :k])
        self.item_bias_ = V[:, k].copy()
        # the step state (AdaGrad's G, AMSGrad's moments), for warm starts
        self._state = (np.ascontiguousarray(U[:, k + 1:]), np.ascontiguousarray(V[:, k + 1:]),
                       rule)
        self.global_mean_ = mu
        self.history_ = history
        self.n_iter_ = result.n_iter
        self.best_epoch_ = result.best_epoch
        self._seen = seen  # rated pairs by row, for recommend(exclude_seen=True)
        self.n_features_in_ = 2
        return self

    def _packed_rows(self, rule):
        """The fitted rows packed as the solver's ``init``: factors, bias and the step
        state if it is the current rule's."""
        state_u, state_v, state_rule = getattr(self, "_state", (None, None, None))
        sides = ((self.user_factors_, self.user_bias_, state_u),
                 (self.item_factors_, self.item_bias_, state_v))
        return tuple(np.column_stack([F, b] + ([S] if state_rule == rule else []))
                     for F, b, S in sides)

    def _place_in_memory(self, data, continuing, early_stopping, rng):
        users, items, ratings = data
        if continuing:
            user_index, users = _extend(self.user_index_, users, "user")
            item_index, items = _extend(self.item_index_, items, "item")
            user_ids, item_ids = _as_array(user_index), _as_array(item_index)
        else:
            users, user_ids = _factorize(users, "user")
            items, item_ids = _factorize(items, "item")
            user_index, item_index = _index(user_ids), _index(item_ids)
        held_out = None
        train = np.arange(ratings.shape[0])
        if early_stopping:
            n_valid = int(math.ceil(self.validation_fraction * ratings.shape[0]))
            if n_valid >= ratings.shape[0]:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} leaves no training "
                    f"rating out of {ratings.shape[0]}; lower it or set early_stopping=False")
            perm = rng.permutation(ratings.shape[0])
            train = np.sort(perm[n_valid:])
            held = perm[:n_valid]
            held_out = (users[held], items[held], ratings[held])
        mu = self.global_mean_ if continuing else float(ratings[train].mean())
        ids = ((user_index, user_ids), (item_index, item_ids))
        return ids, ((users[train], items[train], ratings[train]), held_out), mu

    def _place_dask(self, client, X, y, continuing, early_stopping, rng):
        """The id mapping and the parts of a dask collection, left on the workers:
        one pass computes each partition's distinct ids and sums and merges them on
        a worker (the client receives the merged ids); the parts that
        :func:`~dask_asyncopt.solvers.fit_factors` computes map the ids on the
        workers."""
        parts = _dask_parts(X, y)
        fraction = float(self.validation_fraction) if early_stopping else 0.0
        seed = int(rng.integers(2**31)) if early_stopping else 0
        merged = client.compute(dask.delayed(_merge_stats)(
            *[dask.delayed(_part_stats)(p, seed, fraction, j) for j, p in enumerate(parts)]))
        try:
            users, items, n_train, total, n_held = merged.result()
        finally:
            merged.release()
        if n_train + n_held == 0:
            raise ValueError("X has 0 ratings; at least 1 is required")
        if n_train == 0:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves no training rating "
                f"out of {n_held}; lower it or set early_stopping=False")
        if continuing:
            user_index = _extend(self.user_index_, users, "user")[0]
            item_index = _extend(self.item_index_, items, "item")[0]
            mu = self.global_mean_
        else:
            user_index, item_index = _index(users), _index(items)
            mu = total / n_train
        indexes = dask.delayed((user_index, item_index), traverse=False)
        train = [dask.delayed(_map_part)(p, indexes, seed, fraction, j, False)
                 for j, p in enumerate(parts)]
        held_out = [dask.delayed(_map_part)(p, indexes, seed, fraction, j, True)
                    for j, p in enumerate(parts)] if n_held else None
        ids = ((user_index, _as_array(user_index)), (item_index, _as_array(item_index)))
        return ids, (train, held_out), mu

    def _seen_pairs(self, train, held_out, ids, continuing):
        """Rated pairs by row (training and held-out ratings), merged with the
        previous fit's on a warm start; ``None`` when unknown (a dask fit)."""
        shape = (len(ids[0][1]), len(ids[1][1]))
        users, items = train[0], train[1]
        if held_out is not None:
            users = np.concatenate([users, held_out[0]])
            items = np.concatenate([items, held_out[1]])
        seen = sp.csr_matrix((np.ones(users.shape[0], dtype=bool), (users, items)),
                             shape=shape)
        if continuing:
            if self._seen is None:
                return None
            old = self._seen.tocoo()
            seen = seen + sp.csr_matrix((old.data, (old.row, old.col)), shape=shape)
        return seen

    # ----------------------------------------------------------------- serving
    def predict(self, X):
        """Predicted rating of each (user id, item id) pair.

        An unknown user (item) gets the global mean plus the item's (user's)
        bias; predictions are clipped to ``rating_range`` if it is set.

        Parameters
        ----------
        X : array-like, pandas/dask DataFrame or dask array of shape (n_pairs, 2)
            ``[user id, item id]`` pairs (a DataFrame's ``user`` and ``item``
            columns if it has them).  A dask input gives a lazy result.

        Returns
        -------
        y : ndarray or dask array of shape (n_pairs,)
            Predicted ratings ``mu + b_u + c_i + <p_u, q_i>``.
        """
        check_is_fitted(self)
        if inputs.is_dask(X):
            if hasattr(X, "columns"):
                X = X.iloc[:, _frame_positions(X.columns, 2)]
            X = inputs.dask_to_array(X, "X")
            if X.ndim != 2 or X.shape[1] != 2:
                raise ValueError(f"X must have shape (n_pairs, 2), got {X.shape}")
            X = X.rechunk({1: -1}) if X.numblocks[1] > 1 else X
            return X.map_blocks(self._predict_block, dtype=np.float64, drop_axis=1)
        return self._predict_block(X)

    def score(self, X, y=None, sample_weight=None):
        """Coefficient of determination (R^2) of the predicted ratings.

        Takes the ratings as :meth:`fit` does, so that a model fitted on a
        DataFrame of ratings, ``fit(frame)``, is scored on one, ``score(frame)``:
        the default scorer of ``GridSearchCV`` and ``cross_val_score`` calls
        ``score(X_test, None)`` when ``fit`` had no ``y``.  (scikit-learn's named
        scorers, ``scoring="neg_root_mean_squared_error"`` say, need ``y``: pass the
        pairs and the ratings apart, ``frame[["user", "item"]], frame["rating"]``.)

        Parameters
        ----------
        X : array-like, DataFrame, dask collection or sparse matrix
            As :meth:`fit`'s ``X``: pairs with ``y``; without it a DataFrame of
            user, item and rating columns or a users x items rating matrix.
        y : array-like of shape (n_ratings,), optional
            Ratings of the pairs ``X``.
        sample_weight : array-like of shape (n_ratings,), optional
            Weights of the ratings.

        Returns
        -------
        score : float
            R^2 of ``predict`` (clipped to ``rating_range`` if set) against the
            ratings.
        """
        if y is not None:
            return super().score(X, y, sample_weight=sample_weight)
        check_is_fitted(self)
        if inputs.is_dask(X):
            if not hasattr(X, "columns"):
                raise ValueError(
                    "score without y needs a DataFrame of (user id, item id, rating) "
                    "columns; pass a dask array of pairs with its ratings as y")
            users, items, ratings = _frame_positions(X.columns, 3)
            X, y = X.iloc[:, [users, items]], X.iloc[:, ratings]
            return super().score(X, y, sample_weight=sample_weight)
        users, items, ratings = _rating_columns(X, None)
        return r2_score(ratings, self._predict_ids(users, items),
                        sample_weight=sample_weight)

    def _predict_block(self, X):
        """:meth:`_predict_ids` of in-memory pairs ``X``."""
        return self._predict_ids(*_pairs(X))

    def _predict_ids(self, user_ids, item_ids):
        """``mu + b_u + c_i + <p_u, q_i>``; an unknown id contributes nothing (a cold
        start falls back on the best part of the model known)."""
        users = _lookup(self.user_index_, user_ids)
        items = _lookup(self.item_index_, item_ids)
        out = np.full(users.shape[0], self.global_mean_)
        known_u, known_i = users >= 0, items >= 0
        out[known_u] += self.user_bias_[users[known_u]]
        out[known_i] += self.item_bias_[items[known_i]]
        both = known_u & known_i
        out[both] += np.einsum("ij,ij->i", self.user_factors_[users[both]],
                               self.item_factors_[items[both]])
        return self._clipped(out)

    def _clipped(self, scores):
        clip = getattr(self, "_clip", None)
        return scores if clip is None else np.clip(scores, *clip, out=scores)

    def recommend(self, user_ids, n=10, exclude_seen=True):
        """Top-``n`` items for each user by predicted rating.

        Parameters
        ----------
        user_ids : array-like of shape (n_users,)
            Ids of the users to recommend to (an unknown id is allowed: it gets
            the items with the largest bias).
        n : int, default=10
            Items per user; lowered to the number of items every requested user
            has not seen (with ``exclude_seen``) so that every row is full.
        exclude_seen : bool, default=True
            Leave out the items each user rated in ``fit`` (and ``partial_fit``).
            A model fitted on a dask collection does not hold its rated pairs
            (they stayed on the workers): it needs ``exclude_seen=False``.

        Returns
        -------
        item_ids : ndarray of shape (n_users, n)
            Best first.  An unknown user gets the items with the largest bias.
        scores : ndarray of shape (n_users, n)
            Predicted ratings (clipped to ``rating_range`` if it is set).

        Examples
        --------
        >>> from dask_asyncopt import MatrixFactorization
        >>> from dask_asyncopt.datasets import make_ratings
        >>> X, y = make_ratings(300, 200, 6_000, random_state=0)
        >>> mf = MatrixFactorization(n_factors=8, max_iter=3, random_state=0).fit(X, y)
        >>> items, scores = mf.recommend([3, 7], n=10)
        >>> items.shape, bool((scores[:, :-1] >= scores[:, 1:]).all())
        ((2, 10), True)
        """
        check_is_fitted(self)
        if not (isinstance(n, (Integral, np.integer)) and n >= 1):
            raise ValueError(f"n must be a positive integer, got {n!r}")
        rows = _lookup(self.user_index_, _as_ids(user_ids, "user_ids"))
        scores = self.global_mean_ + np.broadcast_to(
            self.item_bias_, (rows.shape[0], self.item_ids_.shape[0])).copy()
        known = rows >= 0
        scores[known] += (self.user_bias_[rows[known]][:, None]
                          + self.user_factors_[rows[known]] @ self.item_factors_.T)
        scores = self._clipped(scores)
        n_eff = min(n, self.item_ids_.shape[0])
        if exclude_seen and self._seen is None:
            raise ValueError(
                "this model was fitted on a dask collection, whose rated pairs stayed on "
                "the workers: recommend cannot leave them out; pass exclude_seen=False "
                "(and filter the items yourself if needed)")
        if exclude_seen and known.any():
            seen = self._seen[rows[known]]
            n_eff = min(n_eff, self.item_ids_.shape[0] - int(seen.sum(axis=1).max()))
            sub = scores[known]
            r, c = seen.nonzero()
            sub[r, c] = -np.inf
            scores[known] = sub
        if n_eff < 1:
            raise ValueError("a requested user has rated every item: nothing is left to "
                             "recommend; use exclude_seen=False")
        top = np.argpartition(-scores, n_eff - 1, axis=1)[:, :n_eff]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return self.item_ids_[top], np.take_along_axis(top_scores, order, axis=1)

    def similar_items(self, item_ids, n=5):
        """Most similar items by cosine similarity of item factors.

        Parameters
        ----------
        item_ids : array-like of shape (n_queries,)
            Ids of the items whose neighbours are wanted.
        n : int, default=5
            Neighbours per item (the item itself excluded); at most
            ``n_items - 1``.

        Returns
        -------
        item_ids : ndarray of shape (n_queries, n)
            Best first.
        similarities : ndarray of shape (n_queries, n)
            Cosine similarities in ``[-1, 1]``.

        Raises
        ------
        KeyError
            An item id ``fit`` never saw: it has no factors to compare (check
            ``item_index_.get_indexer(ids) >= 0`` first).

        Examples
        --------
        >>> from dask_asyncopt import MatrixFactorization
        >>> from dask_asyncopt.datasets import make_ratings
        >>> X, y = make_ratings(300, 200, 6_000, random_state=0)
        >>> mf = MatrixFactorization(n_factors=8, max_iter=3, random_state=0).fit(X, y)
        >>> neighbours, sims = mf.similar_items([42], n=5)
        >>> neighbours.shape, bool(42 not in neighbours)
        ((1, 5), True)
        """
        check_is_fitted(self)
        return _similar(self.item_index_, self.item_ids_, self.item_factors_,
                        self.item_bias_, _as_ids(item_ids, "item_ids"), n, "item")

    def similar_users(self, user_ids, n=5):
        """Most similar users by cosine similarity of user factors.

        Parameters
        ----------
        user_ids : array-like of shape (n_queries,)
            Ids of the users whose neighbours are wanted.
        n : int, default=5
            Neighbours per user (the user itself excluded); at most
            ``n_users - 1``.

        Returns
        -------
        user_ids : ndarray of shape (n_queries, n)
            Best first.
        similarities : ndarray of shape (n_queries, n)
            Cosine similarities in ``[-1, 1]``.

        Raises
        ------
        KeyError
            A user id ``fit`` never saw: it has no factors to compare (check
            ``user_index_.get_indexer(ids) >= 0`` first).

        Examples
        --------
        >>> from dask_asyncopt import MatrixFactorization
        >>> from dask_asyncopt.datasets import make_ratings
        >>> X, y = make_ratings(300, 200, 6_000, random_state=0)
        >>> mf = MatrixFactorization(n_factors=8, max_iter=3, random_state=0).fit(X, y)
        >>> neighbours, sims = mf.similar_users([7], n=3)
        >>> neighbours.shape, bool(7 not in neighbours)
        ((1, 3), True)
        """
        check_is_fitted(self)
        return _similar(self.user_index_, self.user_ids_, self.user_factors_,
                        self.user_bias_, _as_ids(user_ids, "user_ids"), n, "user")


def _similar(index, ids, factors, bias, queries, n, what):
    """Top-``n`` neighbours of ``queries`` by cosine of their factor rows."""
    if not (isinstance(n, (Integral, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rows = _lookup(index, queries)
    if (rows < 0).any():
        unknown = [queries[i].item() if isinstance(queries[i], np.generic) else queries[i]
                   for i in np.flatnonzero(rows < 0)[:5]]
        raise KeyError(
            f"unknown {what} id(s) {', '.join(map(repr, unknown))}: fit saw no rating of "
            f"them, so they have no factors to compare; keep the ids with "
            f"{what}_index_.get_indexer(ids) >= 0")
    n_eff = min(n, ids.shape[0] - 1)
    if n_eff < 1:
        raise ValueError(f"the model knows a single {what}: it has no neighbours")
    norms = np.linalg.norm(factors, axis=1)
    unit = factors / np.maximum(norms, 1e-12)[:, None]
    sims = unit[rows] @ unit.T
    # rank by similarity, ties by bias
    key = sims + 1e-9 * np.tanh(bias)[None, :]
    key[np.arange(rows.shape[0]), rows] = -np.inf
    top = np.argpartition(-key, n_eff - 1, axis=1)[:, :n_eff]
    order = np.argsort(-np.take_along_axis(key, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return ids[top], np.clip(np.take_along_axis(sims, top, axis=1), -1, 1)
