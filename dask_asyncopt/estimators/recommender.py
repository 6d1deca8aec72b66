"""``MatrixFactorization``: explicit-rating recommender trained on Dask.

The model is ``mu + b_u + c_i + <p_u, q_i>`` (global mean, user and item
biases, user and item factors) fitted to squared loss with L2 on factors and
biases (separate strengths, paid per rating as in Funk/Koren SGD and LIBMF).
``fit`` keeps user and item factor blocks in Dask actors and runs one worker
loop per Dask worker over stratified rating blocks (DSGD/NOMAD style, see
:mod:`dask_asyncopt.solvers.mf`).

Ids: any non-negative integers (they need not be contiguous).  ``fit`` maps
the distinct user ids it sees, sorted, to rows ``0..n-1`` of the factor
matrices (``user_ids_[row]`` is the id of a row) and likewise for items;
``predict``/``recommend``/``similar_items`` map ids back with a binary
search.  An id ``fit`` never saw is *unknown*: its prediction falls back to
the global mean plus the bias of the other side if that one is known.
"""

import math
from numbers import Integral, Real

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..data import inputs
from ..progress import FitProgress
from ..solvers import ITEM_SIDES, FactorProblem, Settings, fit_factors, session

#: step of ``eta0=None``: LIBMF's AdaGrad step, and AMSGrad's measured default
_DEFAULT_ETA0 = {"sgd": 0.1, "amsgrad": 0.003}


# ------------------------------------------------------------------ inputs
def _as_id_pairs(X, name="X"):
    """``X`` as an ``(n, 2)`` int64 array of ``[user id, item id]``; clear errors."""
    if inputs.is_dask(X):
        X = X.compute()  # ids are remapped and regrouped on the client (a shuffle)
    if isinstance(X, (pd.DataFrame, pd.Series)):
        X = X.to_numpy()
    if sp.issparse(X) or inputs.is_pydata_sparse(X):
        raise TypeError(
            f"{name} is a sparse matrix, but with y given {name} must be (user id, item "
            "id) pairs; pass the users x items rating matrix alone as fit(R)")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n_ratings, 2): one [user id, item id] pair per row; "
            f"got shape {X.shape}")
    if X.dtype.kind == "b" or X.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integer ids, got dtype {X.dtype}")
    if X.dtype.kind == "f":
        if not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinity; ids must be integers")
        if (X != np.round(X)).any():
            raise ValueError(
                f"{name} contains fractional ids; ids must be whole numbers (cast with "
                "astype(int) if they are integers stored as floats)")
    if X.size and X.min() < 0:
        raise ValueError(f"{name} contains negative ids; ids must be >= 0")
    if X.dtype.kind == "u" and X.size and X.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} contains ids above 2**63 - 1")
    return X.astype(np.int64)


def _as_ratings(y, n):
    if inputs.is_dask(y):
        y = y.compute()
    if isinstance(y, (pd.DataFrame, pd.Series)):
        y = y.to_numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be 1-dimensional (one rating per pair), got shape "
                         f"{y.shape}")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must hold numeric ratings, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if y.shape[0] != n:
        raise ValueError(f"X has {n} pairs but y has {y.shape[0]} ratings")
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; remove those ratings before fitting")
    return y


def _from_matrix(R):
    """Stored entries of a users x items sparse matrix as pairs and ratings."""
    R = inputs.to_scipy(R)
    if not sp.issparse(R):
        raise TypeError(
            "fit(R) without y needs a scipy.sparse or pydata sparse users x items rating "
            "matrix; for (user id, item id) pairs pass the ratings too: fit(X, y)")
    if R.ndim != 2:
        raise ValueError(f"R must be 2-dimensional, got {R.ndim} dimensions")
    R = sp.coo_matrix(R)
    R.sum_duplicates()
    X = np.column_stack([R.row, R.col]).astype(np.int64)
    return X, _as_ratings(R.data, X.shape[0])


def _lookup(ids, known):
    """Rows of ``ids`` in the sorted array ``known``; -1 where unknown."""
    pos = np.searchsorted(known, ids)
    pos = np.minimum(pos, max(known.shape[0] - 1, 0))
    found = known.shape[0] > 0
    hit = (known[pos] == ids) if found else np.zeros(ids.shape, dtype=bool)
    return np.where(hit, pos, -1)


def _as_ids(ids, name):
    ids = np.asarray(ids)
    if ids.ndim == 0:
        ids = ids[None]
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a 1-d sequence of ids, got shape {ids.shape}")
    return _as_id_pairs(np.column_stack([ids, ids]), name)[:, 0]


class MatrixFactorization(RegressorMixin, BaseEstimator):
    """Biased matrix factorisation trained by asynchronous stratified SGD on Dask.

    Predicts ``mu + b_u + c_i + <p_u, q_i>``; minimises the squared error
    plus ``reg_factors/2 * (|p_u|^2 + |q_i|^2) + reg_biases/2 * (b_u^2 +
    c_i^2)`` per rating.  ``fit`` places user factor blocks (one per worker
    loop) and item factor blocks (``n_blocks``) in Dask actors; each loop
    owns the ratings of its users and checks item blocks out one at a time,
    running a Numba per-rating SGD kernel over the stratum.

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
        ``random_state``).
    n_iter_no_change : int, default=3
        Epochs without an improvement of ``tol`` in validation RMSE before
        ``early_stopping`` stops the fit.
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
        Worker loops; ``None``: one per Dask worker.  At most one per user: a
        larger value is clipped, with a ``UserWarning`` naming both numbers (the
        default silently).  More loops than Dask workers run, sharing workers,
        with a ``UserWarning``.
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
        Sorted distinct ids seen by ``fit``; row ``r`` of the factors is id
        ``user_ids_[r]`` (``item_ids_[r]``).
    user_factors_, item_factors_ : ndarray of shape (n_users, n_factors), (n_items, n_factors)
    user_bias_, item_bias_ : ndarray of shape (n_users,), (n_items,)
    global_mean_ : float
    history_ : pandas.DataFrame
        Per epoch: time, train RMSE (progressive: each rating's error before its
        update), validation RMSE (with ``early_stopping``), staleness, compute and
        wait fractions of the loops.
    n_iter_ : int
    best_epoch_ : int
        Epoch whose model was kept (the last one without ``early_stopping``).

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
                 solver="asyb", optimizer="sgd", beta1=0.9, beta2=0.999, adam_epsilon=1e-8,
                 n_blocks=None, n_workers=None, timeout=120.0, random_state=None,
                 verbose=0):
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
        tags.input_tags.positive_only = True  # ids are non-negative integers
        tags.target_tags.required = False  # y is optional with fit(R)
        tags.non_deterministic = self.solver != "sync"
        return tags

    # --------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the factors by asynchronous stratified SGD on Dask.

        Parameters
        ----------
        X : array-like, pandas/dask DataFrame or dask array of shape (n_ratings, 2), \
                or sparse matrix of shape (n_users, n_items)
            ``[user id, item id]`` pairs (non-negative integers) with ``y`` given;
            or, with ``y=None``, a scipy.sparse / pydata sparse rating matrix whose
            stored entries (explicit zeros included) are the ratings.  Dask inputs
            are computed to the client: ids are remapped and the ratings regrouped
            into strata there, then shipped to the workers.
        y : array-like or dask array/series of shape (n_ratings,), optional
            Ratings (finite numbers).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        if y is None:
            pairs, ratings = _from_matrix(X)
        else:
            pairs = _as_id_pairs(X)
            ratings = _as_ratings(y, pairs.shape[0])
        if pairs.shape[0] == 0:
            raise ValueError("X has 0 ratings; at least 1 is required")
        progress = FitProgress(self.verbose, total=self.max_iter,
                               desc=f"{type(self).__name__}({self.solver})")
        with session() as client, progress:
            return self._fit(client, pairs, ratings, progress)

    def _fit(self, client, pairs, ratings, callback=None):
        seed = self.random_state
        if isinstance(seed, np.random.RandomState):
            seed = seed.randint(2**31)
        rng = np.random.default_rng(seed)
        user_ids, users = np.unique(pairs[:, 0], return_inverse=True)
        item_ids, items = np.unique(pairs[:, 1], return_inverse=True)
        users = users.ravel()
        items = items.ravel()
        held_out = None
        train = np.arange(ratings.shape[0])
        if self.early_stopping:
            n_valid = int(math.ceil(self.validation_fraction * ratings.shape[0]))
            if n_valid >= ratings.shape[0]:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} leaves no training "
                    f"rating out of {ratings.shape[0]}; lower it or set early_stopping=False")
            perm = rng.permutation(ratings.shape[0])
            train = np.sort(perm[n_valid:])
            held = perm[:n_valid]
            held_out = (users[held], items[held], ratings[held])
        mu = float(ratings[train].mean())
        problem = FactorProblem(
            n_factors=self.n_factors, reg_factors=float(self.reg_factors),
            reg_biases=float(self.reg_biases),
            eta0=float(_DEFAULT_ETA0[self.optimizer] if self.eta0 is None else self.eta0),
            rule="amsgrad" if self.optimizer == "amsgrad" else self.learning_rate,
            init_scale=float(self.init_scale),
            adam=(float(self.beta1), float(self.beta2), float(self.adam_epsilon)))
        settings = Settings(
            solver=self.solver, n_blocks=self.n_blocks, n_workers=self.n_workers,
            max_iter=self.max_iter, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            timeout=self.timeout, callback=callback,
            checkpoint_every=dask.config.get("asyncopt.checkpoint-every", 1))
        result = fit_factors(client, (users[train], items[train], ratings[train]),
                             (user_ids.shape[0], item_ids.shape[0]), mu, problem, settings,
                             rng, held_out)
        k = self.n_factors
        U, V = result.model
        self.user_ids_ = user_ids
        self.item_ids_ = item_ids
        self.user_factors_ = np.ascontiguousarray(U[:, :k])
        self.user_bias_ = U[:, k].copy()
        self.item_factors_ = np.ascontiguousarray(V[:, :k])
        self.item_bias_ = V[:, k].copy()
        self.global_mean_ = mu
        self.history_ = pd.DataFrame(result.history)
        self.n_iter_ = result.n_iter
        self.best_epoch_ = result.best_epoch
        # training pairs by row, for recommend(exclude_seen=True)
        self._seen = sp.csr_matrix(
            (np.ones(users.shape[0], dtype=bool), (users, items)),
            shape=(user_ids.shape[0], item_ids.shape[0]))
        self.n_features_in_ = 2
        return self

    # ----------------------------------------------------------------- serving
    def predict(self, X):
        """Predicted rating of each (user id, item id) pair.

        Unknown ids fall back to the global mean plus the known side's bias.

        Parameters
        ----------
        X : array-like, pandas/dask DataFrame or dask array of shape (n_pairs, 2)
            ``[user id, item id]`` pairs.  A dask input gives a lazy result.

        Returns
        -------
        y : ndarray or dask array of shape (n_pairs,)
            Predicted ratings ``mu + b_u + c_i + <p_u, q_i>``.
        """
        check_is_fitted(self)
        if inputs.is_dask(X):
            X = inputs.dask_to_array(X, "X")
            if X.ndim != 2 or X.shape[1] != 2:
                raise ValueError(f"X must have shape (n_pairs, 2), got {X.shape}")
            X = X.rechunk({1: -1}) if X.numblocks[1] > 1 else X
            return X.map_blocks(self._predict_block, dtype=np.float64, drop_axis=1)
        return self._predict_block(X)

    def _predict_block(self, X):
        """``mu + b_u + c_i + <p_u, q_i>``; an unknown id contributes nothing (a cold
        start falls back on the best part of the model known)."""
        pairs = _as_id_pairs(X)
        users = _lookup(pairs[:, 0], self.user_ids_)
        items = _lookup(pairs[:, 1], self.item_ids_)
        out = np.full(pairs.shape[0], self.global_mean_)
        known_u, known_i = users >= 0, items >= 0
        out[known_u] += self.user_bias_[users[known_u]]
        out[known_i] += self.item_bias_[items[known_i]]
        both = known_u & known_i
        out[both] += np.einsum("ij,ij->i", self.user_factors_[users[both]],
                               self.item_factors_[items[both]])
        return out

    def recommend(self, user_ids, n=10, exclude_seen=True):
        """Top-``n`` items for each user by predicted rating.

        Parameters
        ----------
        user_ids : array-like of shape (n_users,)
            Ids of the users to recommend to (an unknown id is allowed).
        n : int, default=10
            Items per user; lowered to the number of items every requested user
            has not seen (with ``exclude_seen``) so that every row is full.
        exclude_seen : bool, default=True
            Leave out the items each user rated in ``fit``.

        Returns
        -------
        item_ids : ndarray of shape (n_users, n)
            Best first.  An unknown user gets the items with the largest bias.
        scores : ndarray of shape (n_users, n)
            Predicted ratings.

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
        rows = _lookup(_as_ids(user_ids, "user_ids"), self.user_ids_)
        scores = self.global_mean_ + np.broadcast_to(
            self.item_bias_, (rows.shape[0], self.item_ids_.shape[0])).copy()
        known = rows >= 0
        scores[known] += (self.user_bias_[rows[known]][:, None]
                          + self.user_factors_[rows[known]] @ self.item_factors_.T)
        n_eff = min(n, self.item_ids_.shape[0])
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
            Ids of the items whose neighbours are wanted (an unknown id is allowed).
        n : int, default=5
            Neighbours per item (the item itself excluded); at most
            ``n_items - 1``.

        Returns
        -------
        item_ids : ndarray of shape (n_queries, n)
            Best first.  An unknown item has no factors: it gets the items with
            the largest bias, with similarity 0.
        similarities : ndarray of shape (n_queries, n)
            Cosine similarities in ``[-1, 1]``.

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
        if not (isinstance(n, (Integral, np.integer)) and n >= 1):
            raise ValueError(f"n must be a positive integer, got {n!r}")
        rows = _lookup(_as_ids(item_ids, "item_ids"), self.item_ids_)
        n_items = self.item_ids_.shape[0]
        n_eff = min(n, n_items - 1)
        if n_eff < 1:
            raise ValueError("the model knows a single item: it has no neighbours")
        norms = np.linalg.norm(self.item_factors_, axis=1)
        unit = self.item_factors_ / np.maximum(norms, 1e-12)[:, None]
        sims = np.zeros((rows.shape[0], n_items))
        known = rows >= 0
        sims[known] = unit[rows[known]] @ unit.T
        # rank by similarity, ties (all of an unknown item's row) by item bias
        key = sims + 1e-9 * np.tanh(self.item_bias_)[None, :]
        key[np.flatnonzero(known), rows[known]] = -np.inf
        top = np.argpartition(-key, n_eff - 1, axis=1)[:, :n_eff]
        order = np.argsort(-np.take_along_axis(key, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return self.item_ids_[top], np.clip(np.take_along_axis(sims, top, axis=1), -1, 1)

