"""scikit-learn estimators: ``AsyncSGDClassifier`` and ``AsyncSGDRegressor``.

They minimise, as scikit-learn's ``SGDClassifier``/``SGDRegressor`` do,
``mean(loss) + alpha * R(w)`` with ``R`` the L2, L1 or elastic-net penalty,
but ``fit`` runs on a Dask cluster: coefficient blocks live in actors, worker
loops sweep the data where it lives (see :mod:`dask_asyncopt.solvers`).
"""

import functools
import logging
from numbers import Integral, Real

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_feature_names, check_is_fitted, validate_data

from ..data import inputs
from ..objective.losses import (
    CLASSIFICATION_LOSSES,
    REGRESSION_LOSSES,
    SMOOTHNESS,
    loss_derivative,
)
from ..objective.penalties import PENALTIES, ElasticNet
from ..objective.rules import AMSGradRule
from ..objective.schedules import SCHEDULES, optimal_t0
from ..progress import FitProgress
from ..solvers import (
    SOLVERS,
    SVRG,
    HeldOut,
    KeptStore,
    LinearProblem,
    Schedule,
    Settings,
    Validation,
    fit_linear,
    session,
)

_SPARSE_FORMATS = ["csr", "csc", "coo"]

logger = logging.getLogger("dask_asyncopt")



def _classes_of(y):
    """The sorted classes of a 1-d label vector.

    Small non-negative integer labels (the common 0/1 case) are counted in
    one pass instead of sorted twice (scikit-learn's target check and
    ``np.unique``, a visible share of a large fit); such labels are always
    valid classes, anything else goes through scikit-learn's check.
    """
    if y.dtype.kind in "iub" and y.size and 0 <= y.min() and y.max() < 2**16:
        return np.flatnonzero(np.bincount(y.astype(np.intp, copy=False))).astype(y.dtype)
    try:
        check_classification_targets(y)
        return np.unique(y)
    except TypeError as exc:  # labels of types that do not compare (str and int)
        kinds = sorted({type(v).__name__ for v in np.ravel(y)})
        raise TypeError(
            f"y mixes labels of types {', '.join(kinds)}, which cannot be ordered into "
            "classes; give every label the same type (e.g. y.astype(str))") from exc


def _classification_targets(y, sample_weight=None, *, classes, class_weight=None):
    """``+1``/``-1`` per one-vs-rest output (one output for two classes) and the
    rows' weights per output, ``None`` when every weight is 1.

    As scikit-learn's SGD: a row's weight is its ``sample_weight`` times a class
    weight (``class_weight``, one per class): with two classes that of its own
    class; in one-vs-rest output ``k`` that of class ``k`` for its positive
    rows and 1 for the rest.
    """
    binary = len(classes) == 2
    if binary:
        Y = np.where(y == classes[1], 1.0, -1.0)[:, None]
    else:
        Y = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
    if sample_weight is None and class_weight is None:
        return Y, None
    W = np.ones_like(Y)
    if class_weight is not None:
        if binary:
            W[:, 0] = class_weight[(Y[:, 0] > 0).astype(np.intp)]
        else:
            W = np.where(Y > 0, class_weight[None, :], 1.0)
    if sample_weight is not None:
        W *= sample_weight[:, None]
    return Y, W


def _regression_targets(y, sample_weight=None):
    """Targets as one output, and the rows' weights (``None``: all 1)."""
    y = np.asarray(y, dtype=np.float64)
    if not np.isfinite(y).all():
        raise ValueError("Input y contains NaN or infinity")
    if sample_weight is None:
        return y[:, None], None
    return y[:, None], sample_weight[:, None].copy()


def _check_labels(y, classes):
    """Labels outside the classes given to ``partial_fit`` are an error, not
    negatives of every class."""
    known = np.isin(y, classes)
    if not known.all():
        unknown = np.unique(np.asarray(y)[~known])[:5].tolist()
        raise ValueError(f"y has labels {unknown} that are not in classes "
                         f"{np.asarray(classes).tolist()} given on the first call to "
                         "partial_fit; name every label there, or call fit")


def _known_targets(y, sample_weight=None, *, targets):
    _check_labels(y, targets.keywords["classes"])
    return targets(y, sample_weight)


def _class_weights(class_weight, classes, counts=None):
    """One weight per class (``None``: all 1), from a dict or ``"balanced"``
    (``n_samples / (n_classes * count)``, from the unweighted ``counts``, as
    scikit-learn's SGD)."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):  # "balanced"
        counts = np.asarray(counts, dtype=np.float64)
        return counts.sum() / (len(classes) * counts)
    missing = [c for c in class_weight if c not in set(classes.tolist())]
    if missing:
        raise ValueError(
            f"class_weight names {missing}, which are not classes of y (classes: "
            f"{classes.tolist()}); key class_weight by the labels in y")
    weights = np.array([class_weight.get(c, 1.0) for c in classes.tolist()], dtype=float)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"class_weight has weights {weights.tolist()}; class weights must "
                         "be finite and >= 0")
    return weights


class _BaseAsyncSGD(BaseEstimator):
    """Shared parameters, validation and fit logic."""

    _losses = {}

    _parameter_constraints = {
        "penalty": [StrOptions({name for name in PENALTIES if name is not None}), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, None, None, closed="neither"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [StrOptions(set(SCHEDULES))],
        "eta0": [Interval(Real, 0, None, closed="left")],
        "power_t": [Interval(Real, None, None, closed="neither")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "solver": [StrOptions(set(SOLVERS))],
        "optimizer": [StrOptions({"sgd", "amsgrad"})],
        "beta1": [Interval(Real, 0, 1, closed="left")],
        "beta2": [Interval(Real, 0, 1, closed="left")],
        "adam_epsilon": [Interval(Real, 0, None, closed="neither")],
        "variance_reduction": [StrOptions({"auto", "svrg"}), None],
        "n_blocks": [Interval(Integral, 1, None, closed="left"), None],
        "max_staleness": [Interval(Integral, 0, None, closed="left"), None],
        "n_workers": [Interval(Integral, 1, None, closed="left"), None],
        "timeout": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, loss, *, penalty="l2", alpha=1e-4, l1_ratio=0.15, fit_intercept=True,
                 max_iter=1000, tol=1e-3, n_iter_no_change=5, epsilon=0.1,
                 learning_rate="optimal", eta0=0.0, power_t=0.5, batch_size="auto",
                 solver="asyb", optimizer="sgd", beta1=0.9, beta2=0.999, adam_epsilon=1e-8,
                 variance_reduction="auto", n_blocks=None, max_staleness=None,
                 n_workers=None, timeout=120.0, random_state=None, verbose=0,
                 warm_start=False, early_stopping=False,
                 validation_fraction=0.1):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.epsilon = epsilon
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.batch_size = batch_size
        self.solver = solver
        self.optimizer = optimizer
        self.beta1 = beta1
        self.beta2 = beta2
        self.adam_epsilon = adam_epsilon
        self.variance_reduction = variance_reduction
        self.n_blocks = n_blocks
        self.max_staleness = max_staleness
        self.n_workers = n_workers
        self.timeout = timeout
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        # Asynchronous solvers apply updates in arrival order: two fits differ.
        tags.non_deterministic = self.solver != "sync"
        return tags

    # ----------------------------------------------------------------- checks
    def _uses_svrg(self, partial=False):
        """Whether ``fit`` runs proximal SVRG (smooth losses) or plain SGD
        (always in ``partial_fit``: a stream has no full gradient to anchor)."""
        if self.variance_reduction is None or partial:
            return False
        smooth = self._losses[self.loss] in SMOOTHNESS
        if self.variance_reduction == "svrg" and not smooth:
            raise ValueError(
                f"variance_reduction='svrg' needs a smooth loss; loss={self.loss!r} is not "
                f"differentiable; use variance_reduction=None or one of "
                f"{sorted(k for k, v in self._losses.items() if v in SMOOTHNESS)}")
        return smooth

    def _check_params(self, partial=False):
        if self.learning_rate in ("constant", "invscaling", "adaptive") and self.eta0 <= 0:
            raise ValueError(
                f"eta0 must be > 0 with learning_rate={self.learning_rate!r}; "
                "set eta0 (e.g. eta0=0.01) or use learning_rate='optimal'")
        if self._uses_svrg(partial) or self.optimizer == "amsgrad":
            return  # no per-sample schedule: no schedule constraints
        if self.learning_rate == "optimal" and self.alpha == 0:
            raise ValueError(
                "alpha must be > 0 with learning_rate='optimal' (its step is "
                "1 / (alpha * t)); set alpha > 0 or choose another learning_rate")

    def _validate_in_memory(self, X, y, reset=True):
        X = inputs.to_scipy(X)
        return validate_data(self, X, y, accept_sparse="csr", dtype=np.float64,
                             order="C", reset=reset, y_numeric=not self._is_classifier)

    # -------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the linear model by asynchronous parallel proximal SGD on Dask.

        Parameters
        ----------
        X : {array-like, sparse matrix, sparse.COO/GCXS, dask array/dataframe} of \
                shape (n_samples, n_features)
            Training data.  Dask collections stay on the workers.
        y : array-like or dask array/series of shape (n_samples,)
            Target values.
        coef_init, intercept_init : ndarray, optional
            Starting coefficients, as ``coef_`` and ``intercept_``.
        sample_weight : array-like or dask array/series of shape (n_samples,), \
                default=None
            Weight of each sample's loss (finite, >= 0, not all 0; None: all
            1).  As in scikit-learn's SGD, the fit minimises
            ``sum_i(sample_weight_i * loss_i) / n_samples + alpha * R(w)``
            (times the class weights for the classifier): weights of mean 2
            count the data twice as much against the penalty as none.
            Repeating sample ``i`` ``sample_weight[i]`` times is therefore the
            same fit only when the weights average 1 (otherwise scale
            ``alpha`` by ``n_samples / sum(sample_weight)``).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        self._check_params()
        self._release_kept()  # a new fit: the blocks kept by partial_fit go
        progress = FitProgress(self.verbose, total=self.max_iter,
                               desc=f"{type(self).__name__}({self.solver})")
        with session() as client, progress:
            return self._fit(client, X, y, coef_init, intercept_init, sample_weight,
                             progress)

    def _partial(self, X, y, classes=None, sample_weight=None):
        """``partial_fit`` of both estimators (see their docstrings)."""
        self._check_params(partial=True)
        first = not hasattr(self, "coef_")
        if self._is_classifier:
            self._partial_classes(classes, first)
        with session() as client:
            return self._fit(client, X, y, None, None, sample_weight, partial=True)

    def _release_kept(self):
        kept = self.__dict__.pop("_kept", None)
        if kept is not None:
            kept.release()

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_kept", None)  # actors belong to this process's client
        return state

    def _fit(self, client, X, y, coef_init, intercept_init, sample_weight=None,
             callback=None, partial=False):
        rng = np.random.default_rng(
            self.random_state if not isinstance(self.random_state, np.random.RandomState)
            else self.random_state.randint(2**31))
        reset = not (partial and hasattr(self, "coef_"))
        if inputs.is_dask(X) or inputs.is_dask(y):
            X, y, sw, encode = self._describe_dask(X, y, sample_weight, reset, partial)
            data = (X, y, sw, encode)
            n_samples = X.shape[0]
        else:
            X, y = self._validate_in_memory(X, y, reset=reset)
            inputs.check_magnitude(X)
            n_samples = X.shape[0]
            sw = inputs.check_sample_weight(sample_weight, n_samples)
        if n_samples == 0:
            raise ValueError("X has 0 samples; at least 1 is required")
        validation = None
        if self.early_stopping and not partial:
            if inputs.is_dask(X):
                validation = self._hold_out_dask(X, rng)
            else:
                X, y, sw, validation = self._hold_out(X, y, sw, rng)
        if not inputs.is_dask(X):
            data = (X, *self._encoder(y, partial)(y, sw), None)
        problem = self._problem(sp.issparse(X) or _has_sparse_chunks(X), partial)
        kept = None
        if partial:
            # one pass of the plain update rule, from where the last call ended,
            # on the blocks it kept on the cluster when they still serve
            kept = self.__dict__.setdefault("_kept", KeptStore())
            init = None if reset else self._initial_coefficients(
                self.coef_, self.intercept_, problem.n_outputs)
            t_start = 0 if reset else int(self.t_)
        else:
            init = self._initial_coefficients(coef_init, intercept_init, problem.n_outputs)
            t_start = int(self.t_) if init is not None and self.warm_start and hasattr(
                self, "t_") else 0
        settings = Settings(
            solver=self.solver, n_blocks=self.n_blocks, n_workers=self.n_workers,
            batch_size=None if self.batch_size == "auto" else self.batch_size,
            max_staleness=self.max_staleness, max_iter=1 if partial else self.max_iter,
            tol=None if partial else self.tol, n_iter_no_change=self.n_iter_no_change,
            timeout=self.timeout, callback=callback,
            checkpoint_every=dask.config.get("asyncopt.checkpoint-every", 1),
            validation=validation)
        moments = None
        if init is not None and (partial or self.warm_start) and coef_init is None:
            moments = self._last_moments(problem)
        result = fit_linear(client, data, problem, settings, rng, init, t_start, kept, moments)
        self._moments = result.moments
        full = result.model
        intercept = full[problem.n_features] if problem.fit_intercept else np.zeros(
            problem.n_outputs)
        self.coef_ = np.ascontiguousarray(full[:problem.n_features].T)
        self.intercept_ = intercept.copy()
        self.n_iter_ = result.n_iter
        self.t_ = float(result.t)
        # A restart after a lost worker adds a row with an ``event`` column.
        history = pd.DataFrame(result.history)
        if partial and not reset:  # one row per call: epochs count the passes
            history["epoch"] += len(self.history_)
            history = pd.concat([self.history_, history], ignore_index=True)
        self.history_ = history
        return self

    def _hold_out(self, X, y, sw, rng):
        """Split off ``validation_fraction`` of the rows (stratified for classifiers,
        as scikit-learn's SGD does); return the training rows (and weights) and
        the held-out score (accuracy, or R^2 for regressors, weighted by the
        held-out rows' ``sw``) of full coefficient arrays, which early stopping
        watches."""
        stratify = y if self._is_classifier else None
        n = y.shape[0]
        n_val = int(np.ceil(self.validation_fraction * n))
        n_classes = len(np.unique(y)) if self._is_classifier else 1
        if n - n_val < n_classes or n_val < n_classes:
            need = f"{n_classes} (one per class)" if self._is_classifier else "1"
            raise ValueError(
                f"validation_fraction={self.validation_fraction} holds out {n_val} of {n} "
                f"samples, leaving {n - n_val} to train on; both parts need at least "
                f"{need}: choose a validation_fraction between {n_classes / n:.3g} and "
                f"{1 - n_classes / n:.3g}, use more data, or set early_stopping=False")
        weights = () if sw is None else (sw,)
        try:
            X, X_val, y, y_val, *sw_parts = train_test_split(
                X, y, *weights, test_size=self.validation_fraction, stratify=stratify,
                random_state=int(rng.integers(2**31)))
        except ValueError as exc:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} cannot split the {n} "
                f"samples by class ({exc}); every class needs a sample in each part: use "
                "more data, another validation_fraction, or early_stopping=False") from exc
        sw, sw_val = sw_parts or (None, None)
        if sw is not None and not (sw_val > 0).any():
            raise ValueError(
                "the sample weights of the validation set are all zero, so it cannot "
                "score the fit: use another random_state or validation_fraction, or "
                "early_stopping=False")
        if sw is not None and not (sw > 0).any():
            raise ValueError(
                "the sample weights of the training rows are all zero (every weighted "
                "sample was held out for validation): use another random_state or "
                "validation_fraction, or early_stopping=False")
        n_features, fit_intercept = self.n_features_in_, self.fit_intercept

        def score(full):
            decision = safe_sparse_dot(X_val, full[:n_features])
            if fit_intercept:
                decision = decision + full[n_features]
            return self._score_decision(decision, y_val, sw_val)

        return X, y, sw, Validation(score, "validation_score", watch=True)

    def _hold_out_dask(self, X, rng):
        """The validation set of dask collections: about ``validation_fraction``
        of each row chunk's rows, held out and scored on the workers (for
        classifiers stratified within each chunk; see
        :class:`~dask_asyncopt.solvers.HeldOut`)."""
        n, fraction = X.shape[0], self.validation_fraction
        spec = HeldOut(fraction, int(rng.integers(2**31)), *self._held_out_scoring(),
                       stratify=self._is_classifier)
        if sum(spec.counts(X.chunks[0])) == 0:
            raise ValueError(
                f"validation_fraction={fraction} holds out 0 of the {n} samples (each row "
                "chunk of X holds out that share of its rows, keeping one to train on): "
                "raise validation_fraction, use larger row chunks, or set "
                "early_stopping=False")
        return Validation(spec, "validation_score", watch=True)

    def _describe_dask(self, X, y, sample_weight, reset=True, partial=False):
        """Dask ``X``, ``y`` and weights (``None``) checked from their metadata
        and one pass over ``y`` and the weights, and the function that encodes
        their chunks on the workers."""
        if not (inputs.is_dask(X) and inputs.is_dask(y)):
            raise TypeError("X and y must both be dask collections or both in memory; "
                            "convert the other with dask.array.from_array")
        _check_dask_feature_names(self, X, reset)
        X, y, dask_weights = inputs.dask_to_arrays(
            X=X, y=y, sample_weight=sample_weight if inputs.is_dask(sample_weight) else None)
        if dask_weights is not None:
            sample_weight = dask_weights
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X has dtype {X.dtype}; numeric data is required")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        if X.shape[0] == 0:
            raise ValueError("X has 0 samples; at least 1 is required")
        if X.shape[1] == 0:
            raise ValueError("X has 0 features; at least 1 is required")
        if reset:
            self.n_features_in_ = int(X.shape[1])
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        sw = inputs.check_dask_sample_weight(sample_weight, X.chunks[0])
        stats = () if sw is None else inputs.weight_stats(sw)
        encode, stats = self._encode_dask(y, stats, partial)
        if sw is not None:
            inputs.check_weight_values(*stats)
        return X, y, sw, encode

    def _problem(self, sparse_input, partial=False):
        """The solvers' problem for these parameters: the one place they are mapped
        (``partial``: for ``partial_fit``, without variance reduction)."""
        penalty = ElasticNet.named(self.penalty, self.alpha, self.l1_ratio)
        code = self._losses[self.loss]
        t0 = 0.0
        if self.learning_rate == "optimal" and penalty.alpha > 0:
            t0 = optimal_t0(penalty.alpha,
                            lambda p: abs(loss_derivative(code, p, 1.0, self.epsilon)))
        svrg = None
        if self._uses_svrg(partial):
            svrg = SVRG(SMOOTHNESS[code],
                        self.eta0 if self.learning_rate == "constant" else None)
        rule = None
        if self.optimizer == "amsgrad":
            rule = AMSGradRule(self.eta0 if self.eta0 > 0 else AMSGradRule.default_lr,
                               beta1=self.beta1, beta2=self.beta2, eps=self.adam_epsilon)
        return LinearProblem(
            n_features=self.n_features_in_, n_outputs=self._n_outputs(), loss=code,
            penalty=penalty, fit_intercept=self.fit_intercept,
            schedule=Schedule(SCHEDULES[self.learning_rate], self.eta0, self.power_t, t0),
            epsilon=self.epsilon,
            # scikit-learn's convention: on sparse data the intercept moves 100x slower,
            # as it is updated by every sample while each feature is by few
            intercept_decay=0.01 if sparse_input else 1.0, svrg=svrg, rule=rule)

    def _last_moments(self, problem):
        """The update rule's moments the last fit ended with, when this fit uses a
        rule on a model of the same shape (a warm start or ``partial_fit``
        continues them; a given ``coef_init`` starts them afresh)."""
        moments = getattr(self, "_moments", None)
        if problem.rule is None or moments is None or moments[0].shape != (
                problem.n_coords, problem.n_outputs):
            return None
        return moments

    def _initial_coefficients(self, coef_init, intercept_init, n_outputs):
        if coef_init is None and self.warm_start and hasattr(self, "coef_"):
            coef_init, intercept_init = self.coef_, self.intercept_
        if coef_init is None:
            return None
        coef = np.asarray(coef_init, dtype=np.float64)
        want = (n_outputs, self.n_features_in_)
        if coef.size != want[0] * want[1]:
            raise ValueError(
                f"coef_init has shape {coef.shape}; this fit needs {want}: one row per "
                "output (class), one column per feature of X")
        coef = coef.reshape(want)
        if not np.isfinite(coef).all():
            raise ValueError("coef_init contains NaN or infinity; pass finite starting "
                             "coefficients (or none)")
        full = coef.T
        if self.fit_intercept:
            icpt = np.zeros(n_outputs)
            if intercept_init is not None:
                icpt = np.asarray(intercept_init, dtype=np.float64)
                if icpt.size != n_outputs:
                    raise ValueError(
                        f"intercept_init has shape {icpt.shape}; this fit needs "
                        f"({n_outputs},): one intercept per output")
                icpt = icpt.reshape(n_outputs)
                if not np.isfinite(icpt).all():
                    raise ValueError("intercept_init contains NaN or infinity; pass "
                                     "finite starting intercepts (or none)")
            full = np.vstack([full, icpt[None, :]])
        return np.ascontiguousarray(full)

    # ---------------------------------------------------------------- predict
    def _decision(self, X):
        check_is_fitted(self)
        if inputs.is_dask(X):
            _check_dask_feature_names(self, X, reset=False)
            X = inputs.dask_to_array(X, "X")
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} "
                                 f"is expecting {self.n_features_in_} features as input")
            X = X.rechunk({1: -1}) if X.numblocks[1] > 1 else X
            n_out = len(self.intercept_)
            return X.map_blocks(self._decision_block, dtype=np.float64,
                                chunks=(X.chunks[0], (n_out,)))
        X = validate_data(self, inputs.to_scipy(X), accept_sparse=_SPARSE_FORMATS,
                          reset=False)
        return self._decision_block(X)

    def _decision_block(self, X):
        """Decision values of one chunk (a dask chunk is checked here, on its worker,
        as in-memory input is by ``validate_data``)."""
        X = inputs.to_scipy(X)
        inputs.check_finite_part(X)
        coef = self.coef_.reshape(len(self.intercept_), -1)
        return np.asarray(safe_sparse_dot(X, coef.T, dense_output=True)) + self.intercept_


def _weights(w, n):
    return np.ones(n) if w is None else np.asarray(w, dtype=np.float64).ravel()


def _all_zero_weights():
    return ValueError(
        "the sample weights of the validation rows are all zero, so they cannot score "
        "the fit: use another random_state or validation_fraction, or "
        "early_stopping=False")


def _accuracy_sums(decision, y, w, classes):
    """Weighted correct labels and weight of one held-out chunk (on a worker)."""
    labels = (classes[(decision[:, 0] > 0).astype(int)] if decision.shape[1] == 1 else
              classes[decision.argmax(axis=1)])
    y = np.ravel(y)
    w = _weights(w, y.shape[0])
    return float(w @ (labels == y)), float(w.sum())


def _accuracy(sums):
    """scikit-learn's weighted accuracy from the chunks' :func:`_accuracy_sums`."""
    correct, total = (sum(s[i] for s in sums) for i in range(2))
    if total == 0:
        raise _all_zero_weights()
    return correct / total


def _r2_sums(decision, y, w):
    """One held-out chunk's weight, weighted mean and sum of squared deviations
    of ``y``, and weighted squared residuals (on a worker)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    w = _weights(w, y.shape[0])
    weight = float(w.sum())
    mean = float(w @ y) / weight if weight else 0.0
    return (weight, mean, float(w @ np.square(y - mean)),
            float(w @ np.square(y - decision[:, 0])))


def _r2(sums):
    """scikit-learn's weighted R^2 from the chunks' :func:`_r2_sums`; their
    deviations are merged pairwise (Chan et al.), not from sums of squares,
    which cancel for targets far from 0."""
    weight = mean = deviations = residuals = 0.0
    for w, m, d, r in sums:
        residuals += r
        if w == 0:
            continue
        total = weight + w
        delta = m - mean
        deviations += d + delta * delta * weight * w / total
        mean += delta * w / total
        weight = total
    if weight == 0:
        raise _all_zero_weights()
    if deviations == 0:  # as scikit-learn's r2_score (force_finite)
        return 1.0 if residuals == 0 else 0.0
    return 1.0 - residuals / deviations


def _check_dask_feature_names(estimator, X, reset):
    """scikit-learn's ``feature_names_in_`` check (set it, or compare with it) for a
    dask ``X``, on its metadata: a dask DataFrame's is an empty pandas frame with
    its columns, so nothing is computed.  Without it a fit on a dask DataFrame kept
    no names, and columns given in another order at predict time went unnoticed."""
    _check_feature_names(estimator, getattr(X, "_meta", None), reset=reset)


def _has_sparse_chunks(X):
    meta = getattr(X, "_meta", None)
    return meta is not None and (sp.issparse(meta) or inputs.is_pydata_sparse(meta))


def _map_lazy(scores, func, dtype, n_columns=None):
    """Apply a row-wise ``func`` to dask ``scores`` (n, K) lazily."""
    if n_columns is None:
        return scores.map_blocks(func, dtype=dtype, drop_axis=1)
    return scores.map_blocks(func, dtype=dtype, chunks=(scores.chunks[0], (n_columns,)))


class AsyncSGDClassifier(ClassifierMixin, _BaseAsyncSGD):
    """Linear classifier trained by asynchronous parallel proximal SGD on Dask.

    The model is ``SGDClassifier``'s (one-vs-rest for more than two classes);
    ``fit`` splits the coefficients into blocks held by Dask actors and runs
    one worker loop per Dask worker thread (AsyB-ProxSGD) or a synchronous
    baseline.

    Parameters
    ----------
    loss : {"log_loss", "hinge", "modified_huber", "squared_hinge"}, default="hinge"
        Loss per sample.  ``predict_proba`` needs "log_loss" or "modified_huber".
    penalty : {"l2", "l1", "elasticnet"} or None, default="l2"
        Regulariser, applied by the blocks' proximal steps.
    alpha : float, default=1e-4
        Regularisation strength; also sets the "optimal" learning rate.
    l1_ratio : float, default=0.15
        Share of L1 in the elastic net.
    fit_intercept : bool, default=True
        Whether to fit an (unpenalised) intercept.
    max_iter : int, default=1000
        Maximum epochs; an epoch is ``n_samples`` samples processed in total by all
        workers.
    tol : float or None, default=1e-3
        Accuracy at which the fit stops.  Variance-reduced fits
        (``optimizer="sgd"``, smooth losses: the default) under a penalty
        (``alpha > 0``) stop at the first epoch at which the relative gap to the optimum,
        ``(F - F*) / F*``, is at most ``tol``: proven by a duality gap from
        the epoch's exact snapshot (``history_["gap_bound"] <= tol``), or
        estimated from the exact objectives' rate of decrease
        (``history_["gap_estimate"] <= tol / 2``), whatever the ``solver``
        (``"adpsgd"``: at the replicas' average); see the user guide, "When
        a fit stops".  Other fits (plain SGD, ``"amsgrad"``, ``alpha=0``,
        ``early_stopping``) use scikit-learn's rule: stop when the objective
        (or validation score) has not improved by ``tol`` for
        ``n_iter_no_change`` epochs.  ``None``: run ``max_iter`` epochs.
    n_iter_no_change : int, default=5
        Epochs without improvement before stopping (scikit-learn's rule; for
        the fits stopped on their gap, the safety net: epochs that improved
        the objective by less than ``tol / 100`` of it).
    epsilon : float, default=0.1
        Unused by classification losses (kept for scikit-learn symmetry).
    learning_rate : {"optimal", "constant", "invscaling", "adaptive"}, default="optimal"
        Per-sample step schedule, as in scikit-learn, with ``t`` the global sample
        count.
    eta0 : float, default=0.0
        Initial step for "constant", "invscaling" and "adaptive".
    power_t : float, default=0.5
        Exponent of the "invscaling" schedule.
    batch_size : int or "auto", default="auto"
        Rows per pull/sweep/push exchange; "auto" aims at ~260k non-zeros per
        exchange so compute dwarfs the actor round trip.  At most a worker
        loop's rows: a larger value makes one exchange of all of them per epoch
        (no warning; it is independent of a dask ``X``'s chunks).
    solver : {"asyb", "sync", "adpsgd"}, default="asyb"
        "asyb": AsyB-ProxSGD, asynchronous.  "sync": a barrier per round,
        deterministic for an int ``random_state``.  "adpsgd": AD-PSGD, one
        model replica per worker loop averaged pairwise with peers, no server
        (``history_`` adds ``consensus_distance``); ``max_staleness`` does not
        apply.
    optimizer : {"sgd", "amsgrad"}, default="sgd"
        Update rule applied to the gradient estimates.  "sgd": each worker loop
        runs per-sample steps on its pulled copy and pushes the difference.
        "amsgrad": asynchronous AMSGrad (APAM): loops push minibatch gradients
        (computed at the pulled weights; with ``batch_size="auto"`` 32 rows
        each, 4 per exchange, and on shards of over 4,096 rows about 32
        exchanges per epoch per loop, rows per gradient and gradients per
        exchange both growing as the square root of the exchange's size; one
        per exchange with ``max_staleness``) and every block applies them in order
        with AMSGrad state ``m, v, vhat`` kept next to its coordinates, the
        penalty as a proximal step in the ``sqrt(vhat)`` metric.  On sparse
        data each coordinate runs AMSGrad on the gradients that touch it,
        reweighted as the sparse SVRG steps are, so a step costs only the
        coordinates it touches and the zeros of an L1 optimum stay exactly
        zero.  Its step is ``eta0`` if > 0, else 0.03; with variance
        reduction it is constant, halved when an epoch raises the objective,
        and a stall of the objective ends the fit (as with "sgd"); without it
        the step decays as ``1 / sqrt(epoch)`` and a stall first divides it
        by 5 (at most twice).  ``learning_rate`` and ``power_t`` are
        not used.  With ``solver="adpsgd"`` every replica keeps its own AMSGrad
        state and its loop applies the gradients to it; gossip and the
        epoch-end consensus average the coefficients, not the moments.
    beta1, beta2 : float, default=0.9, 0.999
        AMSGrad's decay rates of the first and second moment estimates.
    adam_epsilon : float, default=1e-8
        AMSGrad's ``epsilon`` (added to ``sqrt(vhat)``); ``epsilon`` is the
        losses' parameter.
    variance_reduction : {"auto", "svrg"} or None, default="auto"
        "svrg": proximal SVRG.  After every epoch a snapshot pass over the data
        stores each row's loss derivative and sums the full gradient in the
        blocks; steps then use ``(dloss(now) - dloss(snapshot)) x + full
        gradient``, reweighted per coordinate so that each step touches only
        the row's non-zeros, with the penalty's prox reweighted the same way.
        Its noise vanishes at the optimum, so it converges to the exact
        optimum.  Steps are preconditioned per coordinate by ``1 / sqrt`` of
        its column's sum of squares and normalised per row to ``1 / (2L)``,
        ``L`` the loss's curvature bound (halved whenever an epoch raises the
        objective); ``learning_rate="constant"`` takes ``eta0`` for every
        coordinate instead.  ``history_`` reports the exact objective after
        each epoch.  Needs a smooth loss.  "auto": "svrg" for smooth losses (log_loss,
        modified_huber, squared_hinge, squared_error, huber,
        squared_epsilon_insensitive), plain proximal SGD with the
        ``learning_rate`` schedule for hinge and epsilon_insensitive.
        None: always plain SGD.
    n_blocks : int, default=None
        Number of coefficient blocks (actors); default one per Dask worker.  At
        most one per coordinate (features + intercept): a larger value is
        clipped to that, with a ``UserWarning`` naming both numbers (the
        default silently).  Not used by ``solver="adpsgd"`` (a ``UserWarning``
        if set).
    max_staleness : int, default=None
        Bound on the versions a push may lag behind (None: measured,
        unbounded).  ``solver="asyb"`` only: with ``"sync"`` or ``"adpsgd"`` it
        is ignored, with a ``UserWarning``.
    n_workers : int, default=None
        Number of worker loops; default one per Dask worker thread (a worker
        started with ``--nthreads 4`` runs four; the loops' kernels release the
        GIL).  At most one per row of ``X`` and one per row chunk of a dask
        ``X``: a larger value is clipped, with a ``UserWarning`` naming both
        numbers (the default silently).  More loops than the workers' threads
        run, sharing threads, with a ``UserWarning``.
    timeout : float, default=120
        Seconds any single exchange may take before the fit fails; also how
        long a worker loop waits at the end of an epoch for the slowest loop,
        and then for the driver (history row, ``callback``, checkpoint).
    random_state : int, RandomState instance or None, default=None
        Seed of the shuffle and the data split between worker loops.
    verbose : int, default=0
        0: silent.  1: a ``tqdm.auto`` progress bar over epochs (objective,
        block updates/s, staleness).  2 or more: the bar and one ``INFO`` line
        per epoch on the ``dask_asyncopt`` logger (see
        :class:`~dask_asyncopt.progress.FitProgress`).
    warm_start : bool, default=False
        Start from the previous fit's coefficients and continue its schedule
        (``optimizer="amsgrad"``: and its moments ``m, v, vhat``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified by class), score the
        model on them after every epoch (``history_["validation_score"]``:
        accuracy, R^2 for the regressor) and stop when that score has not
        improved by ``tol`` for ``n_iter_no_change`` epochs, as scikit-learn's
        SGD does.  With dask collections, that share of each row chunk's rows
        (stratified by class within the chunk) is held out on its worker and
        scored there.
    validation_fraction : float, default=0.1
        Share of the rows held out when ``early_stopping`` is set.
    class_weight : dict, "balanced" or None, default=None
        Weight of each class's samples, multiplying ``sample_weight``, as in
        scikit-learn's SGD: ``{label: weight}`` (classes not named weigh 1) or
        "balanced", ``n_samples / (n_classes * np.bincount(y))``.  With more
        than two classes, one-vs-rest output ``k`` weighs its positive samples
        by class ``k``'s weight and the others by 1.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Epochs run.
    t_ : float
        Samples processed.
    history_ : pandas.DataFrame
        One row per epoch: time, samples, block updates, loss, objective,
        staleness mean/max, compute fraction.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of a pandas or dask DataFrame ``X`` (string names only); a
        DataFrame with other names or order at predict time is an error.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_asyncopt import AsyncSGDClassifier
    >>> X = np.array([[-1.0, -1.0], [-2.0, -1.0], [1.0, 1.0], [2.0, 1.0]] * 10)
    >>> y = np.array([0, 0, 1, 1] * 10)
    >>> clf = AsyncSGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    >>> clf.predict([[-0.8, -1.0]])
    array([0])
    """

    _losses = CLASSIFICATION_LOSSES
    _is_classifier = True
    _parameter_constraints = {
        **_BaseAsyncSGD._parameter_constraints,
        "loss": [StrOptions(set(CLASSIFICATION_LOSSES))],
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(self, loss="hinge", *, penalty="l2", alpha=1e-4, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, n_iter_no_change=5,
                 epsilon=0.1, learning_rate="optimal", eta0=0.0, power_t=0.5,
                 batch_size="auto", solver="asyb", optimizer="sgd", beta1=0.9,
                 beta2=0.999, adam_epsilon=1e-8, variance_reduction="auto", n_blocks=None,
                 max_staleness=None, n_workers=None, timeout=120.0, random_state=None,
                 verbose=0, warm_start=False, early_stopping=False,
                 validation_fraction=0.1, class_weight=None):
        self.class_weight = class_weight
        super().__init__(
            loss, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
            fit_intercept=fit_intercept, max_iter=max_iter, tol=tol,
            n_iter_no_change=n_iter_no_change, epsilon=epsilon,
            learning_rate=learning_rate, eta0=eta0, power_t=power_t,
            batch_size=batch_size, solver=solver, optimizer=optimizer, beta1=beta1,
            beta2=beta2, adam_epsilon=adam_epsilon, variance_reduction=variance_reduction,
            n_blocks=n_blocks,
            max_staleness=max_staleness, n_workers=n_workers, timeout=timeout,
            random_state=random_state, verbose=verbose, warm_start=warm_start,
            early_stopping=early_stopping, validation_fraction=validation_fraction)

    def _n_outputs(self):
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _set_classes(self, classes):
        if self.warm_start and hasattr(self, "classes_") and not np.array_equal(
                classes, self.classes_):
            raise ValueError("warm_start needs the same classes as the previous fit")
        if len(classes) < 2:
            raise ValueError(
                f"The number of classes has to be greater than one; got {len(classes)} "
                "class: y must contain samples of at least two classes")
        self.classes_ = classes

    def _targets(self, classes, counts=None):
        """Set the classes; the function that turns labels and sample weights
        into the solvers' targets and weights."""
        self._set_classes(classes)
        return functools.partial(
            _classification_targets, classes=self.classes_,
            class_weight=_class_weights(self.class_weight, self.classes_, counts))

    def _encoder(self, y, partial=False):
        if partial:
            return self._partial_targets()
        classes = _classes_of(y)
        counts = None
        if isinstance(self.class_weight, str):  # "balanced"
            counts = np.bincount(np.searchsorted(classes, y), minlength=len(classes))
        return self._targets(classes, counts)

    def _partial_targets(self):
        """Targets of a ``partial_fit`` call: the classes are fixed (first call)
        and each chunk's labels are checked against them where it is."""
        targets = self._targets(self.classes_)
        return functools.partial(_known_targets, targets=targets)

    def _partial_classes(self, classes, first):
        """scikit-learn's rules for ``classes`` in ``partial_fit``."""
        if isinstance(self.class_weight, str):
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit (one batch does not "
                "show the class frequencies); pass class_weight=sklearn.utils."
                "compute_class_weight('balanced', classes=classes, y=y) with y a large "
                "enough sample of the training labels, as a dict")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit: "
                             "every label the stream can hold, e.g. classes=np.unique(y)")
        if classes is None:
            return
        classes = _classes_of(np.asarray(classes))
        if first:
            self._set_classes(classes)
        elif not np.array_equal(classes, self.classes_):
            raise ValueError(f"classes={classes.tolist()} is not the same as on the first "
                             f"call to partial_fit ({self.classes_.tolist()}); call fit to "
                             "start over with other classes")

    def _encode_dask(self, y, stats, partial=False):
        import dask
        import dask.array as da

        if partial:
            return self._partial_targets(), dask.compute(stats)[0]
        balanced = isinstance(self.class_weight, str)
        # one pass over the labels on the workers: classes (with counts for
        # "balanced"), NaN labels, and the weights' statistics
        found = da.unique(y, return_counts=balanced)
        has_nan = da.isnan(y).any() if y.dtype.kind == "f" else False
        found, has_nan, stats = dask.compute(found, has_nan, stats)
        if has_nan:
            raise ValueError("Input y contains NaN; remove or label those samples "
                             "before fitting")
        classes, counts = found if balanced else (found, None)
        classes = _classes_of(np.asarray(classes))  # validates the label types
        return self._targets(classes, counts), stats

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One pass of asynchronous proximal SGD over the given samples, on Dask.

        As scikit-learn's ``SGDClassifier.partial_fit``: one pass over ``X``
        (``max_iter``, ``tol``, ``early_stopping`` do not apply), the step
        schedule going on from the samples of earlier calls (``t_``).  The
        optimizer's plain rule runs, as variance reduction needs a fixed data
        set: "sgd" takes per-sample steps with the ``learning_rate`` schedule;
        "amsgrad" pushes minibatch gradients and its moments carry over between
        calls (it first reads the batch once more for the column statistics its
        penalty and step scales need).

        The coefficient blocks (AD-PSGD: the replicas) stay on the cluster
        between calls: the next call on the same cluster with the same
        parameters, starting from the ``coef_`` the last one left, continues on
        them without rebuilding them; otherwise it starts anew from ``coef_``.
        ``fit``, a failed call and the estimator's deletion release them;
        pickles and clones do not carry them.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            This call's training samples, as in :meth:`fit`.
        y : array-like or dask array of shape (n_samples,)
            Their labels.
        classes : array-like of shape (n_classes,), default=None
            Every label the stream holds; required on the first call, and if
            given later the same.  Labels of ``y`` outside it are an error.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            As in :meth:`fit`.  ``class_weight`` must be a dict or None here.

        Returns
        -------
        self : object
            The estimator, updated by one pass over ``X``.
        """
        return self._partial(X, y, classes, sample_weight)

    def decision_function(self, X):
        """Signed distance to the separating hyperplane(s).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray or dask array of shape (n_samples,) or (n_samples, n_classes)
            ``X @ coef_.T + intercept_``; one column per class for more than two
            classes.  Lazy for a dask input.
        """
        scores = self._decision(X)
        if scores.shape[1] == 1:
            return _map_lazy(scores, np.ravel, np.float64) if inputs.is_dask(
                scores) else scores.ravel()
        return scores

    def predict(self, X):
        """Predicted class of each sample.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray or dask array of shape (n_samples,)
            Labels from ``classes_``.  Lazy for a dask input.
        """
        scores = self._decision(X)
        if inputs.is_dask(scores):
            return _map_lazy(scores, self._labels, self.classes_.dtype)
        return self._labels(scores)

    def _score_decision(self, scores, y, sample_weight=None):
        return accuracy_score(y, self._labels(scores), sample_weight=sample_weight)

    def _held_out_scoring(self):
        return functools.partial(_accuracy_sums, classes=self.classes_), _accuracy

    def _labels(self, scores):
        if scores.shape[1] == 1:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[scores.argmax(axis=1)]

    def _has_proba(self):
        return self.loss in ("log_loss", "modified_huber")

    @available_if(_has_proba)
    def predict_proba(self, X):
        """Class probabilities (``log_loss`` and ``modified_huber`` only).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray or dask array of shape (n_samples, n_classes)
        """
        scores = self._decision(X)
        if inputs.is_dask(scores):
            return _map_lazy(scores, self._proba, np.float64, len(self.classes_))
        return self._proba(scores)

    def _proba(self, scores):
        if self.loss == "log_loss":
            p = 1.0 / (1.0 + np.exp(-np.clip(scores, -500, 500)))
        else:  # modified_huber, as scikit-learn
            p = (np.clip(scores, -1, 1) + 1) / 2.0
        if p.shape[1] == 1:
            return np.hstack([1 - p, p])
        total = p.sum(axis=1, keepdims=True)
        uniform = total[:, 0] == 0
        total[uniform] = 1.0
        p = p / total
        p[uniform] = 1.0 / p.shape[1]
        return p

    @available_if(_has_proba)
    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray or dask array of shape (n_samples, n_classes)
        """
        proba = self.predict_proba(X)
        return np.log(proba)


class AsyncSGDRegressor(RegressorMixin, _BaseAsyncSGD):
    """Linear regressor trained by asynchronous parallel proximal SGD on Dask.

    The model is ``SGDRegressor``'s; see :class:`AsyncSGDClassifier` for the
    parameters shared by both.

    Parameters
    ----------
    loss : {"squared_error", "huber", "epsilon_insensitive", \
            "squared_epsilon_insensitive"}, default="squared_error"
    penalty, alpha, l1_ratio, fit_intercept, max_iter, tol, n_iter_no_change :
        As :class:`AsyncSGDClassifier`.
    epsilon : float, default=0.1
        Width of the insensitive zone, or the Huber threshold.
    learning_rate : str, default="invscaling"
        Step schedule, as :class:`AsyncSGDClassifier` (with another default).
    eta0 : float, default=0.01
        Initial step.
    power_t : float, default=0.25
        Exponent of the "invscaling" schedule.
    batch_size, solver, optimizer, beta1, beta2, adam_epsilon, variance_reduction, \
n_blocks, max_staleness, n_workers, timeout, random_state, verbose, warm_start, \
early_stopping, validation_fraction :
        As :class:`AsyncSGDClassifier`.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : ndarray of shape (1,)
    n_iter_ : int
    t_ : float
    history_ : pandas.DataFrame
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of a pandas or dask DataFrame ``X`` (string names only); a
        DataFrame with other names or order at predict time is an error.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_asyncopt import AsyncSGDRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = X @ [1.0, -2.0, 0.5] + 1.0
    >>> reg = AsyncSGDRegressor(random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.99)
    True
    """

    _losses = REGRESSION_LOSSES
    _is_classifier = False
    _parameter_constraints = {
        **_BaseAsyncSGD._parameter_constraints,
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
    }

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=1e-4, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, n_iter_no_change=5,
                 epsilon=0.1, learning_rate="invscaling", eta0=0.01, power_t=0.25,
                 batch_size="auto", solver="asyb", optimizer="sgd", beta1=0.9,
                 beta2=0.999, adam_epsilon=1e-8, variance_reduction="auto", n_blocks=None,
                 max_staleness=None, n_workers=None, timeout=120.0, random_state=None,
                 verbose=0, warm_start=False, early_stopping=False,
                 validation_fraction=0.1):
        super().__init__(
            loss, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
            fit_intercept=fit_intercept, max_iter=max_iter, tol=tol,
            n_iter_no_change=n_iter_no_change, epsilon=epsilon,
            learning_rate=learning_rate, eta0=eta0, power_t=power_t,
            batch_size=batch_size, solver=solver, optimizer=optimizer, beta1=beta1,
            beta2=beta2, adam_epsilon=adam_epsilon, variance_reduction=variance_reduction,
            n_blocks=n_blocks,
            max_staleness=max_staleness, n_workers=n_workers, timeout=timeout,
            random_state=random_state, verbose=verbose, warm_start=warm_start,
            early_stopping=early_stopping, validation_fraction=validation_fraction)

    def _n_outputs(self):
        return 1

    def _score_decision(self, scores, y, sample_weight=None):
        return r2_score(y, np.asarray(scores)[:, 0], sample_weight=sample_weight)

    def _held_out_scoring(self):
        return _r2_sums, _r2

    def _encoder(self, y, partial=False):
        return _regression_targets

    def _fit(self, *args, **kwargs):
        super()._fit(*args, **kwargs)
        self.coef_ = self.coef_.ravel()  # (n_features,), as SGDRegressor
        return self

    def _encode_dask(self, y, stats, partial=False):
        import dask

        return _regression_targets, dask.compute(stats)[0]

    def _decision(self, X):
        scores = super()._decision(X)
        return _map_lazy(scores, np.ravel, np.float64) if inputs.is_dask(
            scores) else scores.ravel()

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One pass of asynchronous proximal SGD over the given samples, on Dask.

        As :meth:`AsyncSGDClassifier.partial_fit` (without ``classes``).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            This call's training samples, as in :meth:`fit`.
        y : array-like or dask array of shape (n_samples,)
            Their target values.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            As in :meth:`fit`.

        Returns
        -------
        self : object
            The estimator, updated by one pass over ``X``.
        """
        return self._partial(X, y, sample_weight=sample_weight)

    def predict(self, X):
        """Predicted target of each sample.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray or dask array of shape (n_samples,)
            ``X @ coef_ + intercept_``.  Lazy for a dask input.
        """
        return self._decision(X)
