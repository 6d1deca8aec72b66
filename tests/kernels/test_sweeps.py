"""Numba sweeps of the worker loops (``kernels/sweeps.py``) against plain Python
references built on ``tests/reference.py``: per-sample SGD, loss sums, the
snapshot pass and the sparse proximal SVRG sweeps."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt.data.shards import NO_WEIGHTS
from dask_asyncopt.kernels import sweeps
from dask_asyncopt.objective import losses, schedules

from ..reference import clipped_dloss, ref_loss, ref_prox, ref_sweep

ALL_LOSSES = {**losses.CLASSIFICATION_LOSSES, **losses.REGRESSION_LOSSES}
SCHEDULE_NAMES = {schedules.CONSTANT: "constant", schedules.OPTIMAL: "optimal",
                  schedules.INVSCALING: "invscaling", schedules.ADAPTIVE: "adaptive"}

ETA0, ALPHA, T0, POWER_T, EPSILON, DECAY = 0.05, 0.02, 60.0, 0.4, 0.3, 0.3


def make_params(l1_ratio, eta0=ETA0, alpha=ALPHA):
    """The sweeps' parameter vector (laid out by the ``P_*`` constants)."""
    params = np.zeros(sweeps.N_PARAMS)
    params[sweeps.P_ETA0] = eta0
    params[sweeps.P_ALPHA] = alpha
    params[sweeps.P_L1_RATIO] = l1_ratio
    params[sweeps.P_T0] = T0
    params[sweeps.P_POWER_T] = POWER_T
    params[sweeps.P_EPSILON] = EPSILON
    params[sweeps.P_INTERCEPT_DECAY] = DECAY
    return params


def named_params(l1_ratio, eta0=ETA0, alpha=ALPHA):
    """The same parameters by name, for the reference."""
    return {"eta0": eta0, "alpha": alpha, "l1_ratio": l1_ratio, "t0": T0, "power_t": POWER_T,
            "epsilon": EPSILON, "decay": DECAY}


def make_problem(rng, name, K, intercept, n_rows=30, n_local=12):
    """Dense X (column ``intercept`` all-zero) with ~35 % non-zeros, targets, weights."""
    n_cols = n_local + (1 if intercept >= 0 else 0)
    X = rng.normal(size=(n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < 0.35)
    X[3] = 0.0  # an empty row
    if intercept >= 0:
        X[:, intercept] = 0.0
    if name in losses.CLASSIFICATION_LOSSES:
        Y = np.where(rng.random((n_rows, K)) < 0.5, -1.0, 1.0)
    else:
        Y = rng.normal(scale=2.0, size=(n_rows, K))
    w = rng.normal(scale=0.3, size=(n_cols, K))
    rows = np.concatenate([rng.permutation(n_rows), rng.integers(0, n_rows, 8)])
    return X, Y, w, rows.astype(np.int64)


SWEEP_CASES = [(name, sched, K)
               for name in ("log_loss", "squared_error", "huber", "modified_huber")
               for sched in (schedules.CONSTANT, schedules.OPTIMAL, schedules.INVSCALING)
               for K in (1, 3)]


def _check_sweep(got, got_w, want):
    loss_sum, D, S, w = want
    np.testing.assert_allclose(got, (loss_sum, D, S), rtol=1e-10)
    np.testing.assert_allclose(got_w, w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("with_intercept", [False, True])
@pytest.mark.parametrize("name,schedule,K", SWEEP_CASES)
def test_sweep_csr(name, schedule, K, with_intercept):
    rng = np.random.default_rng([schedule, K, len(name), with_intercept])
    intercept = 4 if with_intercept else -1
    X, Y, w0, rows = make_problem(rng, name, K, intercept)
    params = make_params(l1_ratio=0.35)
    Xc = sp.csr_matrix(X)
    assert intercept not in Xc.indices
    w = w0.copy()
    got = sweeps.sweep_csr(Xc.indptr, Xc.indices, Xc.data, Y, NO_WEIGHTS, rows, w, intercept,
                            ALL_LOSSES[name], schedule, params, 7, 3)
    want = ref_sweep(X, Y, rows, w0, intercept, name, SCHEDULE_NAMES[schedule],
                     named_params(0.35), 7, 3)
    _check_sweep(got, w, want)
    assert not np.allclose(w, w0)  # the sweep moved the weights
    if with_intercept:
        assert not np.allclose(w[intercept], w0[intercept])


@pytest.mark.parametrize("with_intercept", [False, True])
@pytest.mark.parametrize("name,schedule,K", SWEEP_CASES)
def test_sweep_dense(name, schedule, K, with_intercept):
    rng = np.random.default_rng([schedule, K, len(name), with_intercept, 1])
    X, Y, w0, rows = make_problem(rng, name, K, -1)
    if with_intercept:  # as the dense chunks: a column of ones stands for the intercept
        X = np.insert(X, 5, 1.0, axis=1)
        w0 = np.insert(w0, 5, rng.normal(size=K), axis=0)
    params = make_params(l1_ratio=0.8)
    w = w0.copy()
    got = sweeps.sweep_dense(np.ascontiguousarray(X), Y, NO_WEIGHTS, rows, w, -1, ALL_LOSSES[name],
                              schedule, params, 11, 2)
    want = ref_sweep(X, Y, rows, w0, -1, name, SCHEDULE_NAMES[schedule], named_params(0.8),
                     11, 2)
    _check_sweep(got, w, want)
    assert not np.allclose(w, w0)


@pytest.mark.parametrize("K", [1, 3])
def test_sweep_dense_ones_column_equals_csr_intercept_without_decay(K):
    """With intercept_decay = 1, a column of ones is the CSR sweep's intercept."""
    rng = np.random.default_rng(5)
    X, Y, w0, rows = make_problem(rng, "log_loss", K, 2)
    params = make_params(l1_ratio=0.5)
    params[sweeps.P_INTERCEPT_DECAY] = 1.0
    Xc = sp.csr_matrix(X)
    w_csr = w0.copy()
    r_csr = sweeps.sweep_csr(Xc.indptr, Xc.indices, Xc.data, Y, NO_WEIGHTS, rows, w_csr, 2,
                              losses.LOG_LOSS, schedules.INVSCALING, params, 1, 1)
    Xd = X.copy()
    Xd[:, 2] = 1.0
    w_dense = w0.copy()
    r_dense = sweeps.sweep_dense(Xd, Y, NO_WEIGHTS, rows, w_dense, -1, losses.LOG_LOSS,
                                  schedules.INVSCALING, params, 1, 1)
    np.testing.assert_allclose(r_dense, r_csr, rtol=1e-10)
    np.testing.assert_allclose(w_dense, w_csr, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("sweep", ["csr", "dense"])
def test_sweep_clips_derivative(sweep):
    """A huge residual's derivative is clipped to +-1e12 before the step."""
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    Y = np.array([[1e20], [-1e20]])
    rows = np.array([0, 1], dtype=np.int64)
    params = make_params(l1_ratio=0.0, eta0=1e-3, alpha=0.0)
    w = np.zeros((2, 1))
    if sweep == "csr":
        Xc = sp.csr_matrix(X)
        loss_sum, d, s = sweeps.sweep_csr(Xc.indptr, Xc.indices, Xc.data, Y, NO_WEIGHTS,
                                          rows, w, -1,
                                           losses.SQUARED_ERROR, schedules.CONSTANT,
                                           params, 1, 1)
    else:
        loss_sum, d, s = sweeps.sweep_dense(X, Y, NO_WEIGHTS, rows, w, -1, losses.SQUARED_ERROR,
                                             schedules.CONSTANT, params, 1, 1)
    np.testing.assert_allclose(w[:, 0], [1e-3 * 1e12, -1e-3 * 1e12 * 2.0], rtol=1e-14)
    assert loss_sum == pytest.approx(1e40)
    assert (d, s) == (1.0, 0.0)


# --------------------------------------------------------------------------
# Loss sums
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
@pytest.mark.parametrize("K", [1, 3])
def test_loss_sums(name, K):
    rng = np.random.default_rng([len(name), K])
    n, f = 25, 9
    X = rng.normal(size=(n, f)) * (rng.random((n, f)) < 0.4)
    if name in losses.CLASSIFICATION_LOSSES:
        Y = np.where(rng.random((n, K)) < 0.5, -1.0, 1.0)
    else:
        Y = rng.normal(scale=2.0, size=(n, K))
    coef = rng.normal(size=(f, K))
    intercept = rng.normal(size=K)
    P = X @ coef + intercept
    want = ref_loss(name, P, Y, EPSILON).sum()
    assert want > 0.0
    Xc = sp.csr_matrix(X)
    got_csr = sweeps.loss_sum_csr(Xc.indptr, Xc.indices, Xc.data, Y, NO_WEIGHTS, coef, intercept,
                                   ALL_LOSSES[name], EPSILON)
    got_dense = sweeps.loss_sum_dense(X, Y, NO_WEIGHTS, coef, intercept, ALL_LOSSES[name], EPSILON)
    np.testing.assert_allclose(got_csr, want, rtol=1e-10)
    np.testing.assert_allclose(got_dense, want, rtol=1e-10)


# --------------------------------------------------------------------------
# Variance-reduced (SVRG) kernels
# --------------------------------------------------------------------------
def ref_snapshot(X, Y, w, intercept, name, eps):
    """Row derivatives at ``w``, gradient sum, loss sum, largest squared row norm."""
    K = w.shape[1]
    dsnap = np.zeros(Y.shape)
    grad = np.zeros_like(w)
    loss_sum = 0.0
    for r in range(X.shape[0]):
        for k in range(K):
            p = X[r] @ w[:, k] + (w[intercept, k] if intercept >= 0 else 0.0)
            loss_sum += float(ref_loss(name, p, Y[r, k], eps))
            dsnap[r, k] = clipped_dloss(name, p, Y[r, k], eps)
            grad[:, k] += dsnap[r, k] * X[r]
            if intercept >= 0:
                grad[intercept, k] += dsnap[r, k]
    return loss_sum, float((X ** 2).sum(axis=1).max()), dsnap, grad


def ref_svrg_sweep(X, Y, rows, w, intercept, dsnap, drift, pen_scale, name, eps, eta, alpha,
                   l1_ratio, precond, normalise):
    """Plain-Python sparse prox-SVRG: only the row's non-zeros move.  Coordinate
    j of row r steps eta c_j / sum_i c_i x_ri^2 (``normalise``; the intercept a
    column of ones), else eta c_j, with ``c = precond``."""
    w = w.copy()
    K = w.shape[1]
    loss_sum = 0.0
    for r in rows:
        support = np.flatnonzero(X[r])
        steps = eta * precond
        if normalise:
            norm = precond[support] @ X[r, support] ** 2
            if intercept >= 0:
                norm += precond[intercept]
            steps = steps / norm if norm > 0 else np.zeros(w.shape[0])  # empty row
        p = X[r] @ w + (w[intercept] if intercept >= 0 else 0.0)
        g = np.empty(K)
        for k in range(K):
            loss_sum += float(ref_loss(name, p[k], Y[r, k], eps))
            g[k] = clipped_dloss(name, p[k], Y[r, k], eps)
            g[k] -= dsnap[r, k]
        for j in support:
            for k in range(K):
                v = w[j, k] - steps[j] * (g[k] * X[r, j] + drift[j, k])
                w[j, k] = ref_prox(v, steps[j], alpha, l1_ratio, pen_scale[j])
        if intercept >= 0:
            w[intercept] -= steps[intercept] * (g + drift[intercept])
    return loss_sum, w


def _pack(w, drift, pen_scale, precond):
    """The SVRG sweeps' layout: weights | drift | penalty scale | preconditioner."""
    return np.hstack([w, drift, pen_scale[:, None], precond[:, None]])


SVRG_CASES = [(name, K, l1) for name in ("log_loss", "squared_error", "modified_huber")
              for K in (1, 3) for l1 in (0.0, 0.5, 1.0)]


@pytest.mark.parametrize("with_intercept", [False, True])
@pytest.mark.parametrize("name,K,l1_ratio", SVRG_CASES)
def test_snapshot_csr_and_dense(name, K, l1_ratio, with_intercept):
    rng = np.random.default_rng(11)
    intercept = 12 if with_intercept else -1
    X, Y, w, _ = make_problem(rng, name, K, intercept)
    want_loss, want_norm, want_d, want_g = ref_snapshot(X, Y, w, intercept, name, EPSILON)
    code = ALL_LOSSES[name]
    Xs = sp.csr_matrix(X)

    def side_by_side(w):  # the kernels' layout: weights | gradient sum (garbage in it)
        return np.hstack([w, np.full_like(w, np.nan)])

    def check(wg, dsnap, got, want):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(dsnap, want[2], rtol=1e-12)
        np.testing.assert_allclose(wg[:, K:], want[3], rtol=1e-12, atol=1e-14)

    wg, dsnap = side_by_side(w), np.full(Y.shape, np.nan)
    wg[:, K:] = 0.0
    got = sweeps.snapshot_csr(Xs.indptr, Xs.indices, Xs.data, Y, NO_WEIGHTS, wg, intercept, code,
                               EPSILON, dsnap)
    check(wg, dsnap, got, (want_loss, want_norm, want_d, want_g))
    np.testing.assert_allclose(got[1], want_norm, rtol=1e-12)
    np.testing.assert_array_equal(wg[:, :K], w)  # the weights are only read
    # At w = 0 without reading w (garbage in it): the snapshot of zeros.
    want0 = ref_snapshot(X, Y, np.zeros_like(w), intercept, name, EPSILON)
    wg, dsnap = side_by_side(np.full_like(w, np.nan)), np.full(Y.shape, np.nan)
    wg[:, K:] = 0.0
    got = sweeps.snapshot_csr(Xs.indptr, Xs.indices, Xs.data, Y, NO_WEIGHTS, wg, intercept, code,
                               EPSILON, dsnap, True)
    check(wg, dsnap, got, want0)
    # Dense: the intercept is an explicit column of ones.
    Xd = X.copy()
    if with_intercept:
        Xd[:, intercept] = 1.0
    wg, dsnap = side_by_side(w), np.full(Y.shape, np.nan)
    wg[:, K:] = 0.0
    got = sweeps.snapshot_dense(Xd, Y, NO_WEIGHTS, wg, code, EPSILON, dsnap)
    check(wg, dsnap, got, (want_loss, None, want_d, want_g))


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("with_intercept", [False, True])
@pytest.mark.parametrize("name,K,l1_ratio", SVRG_CASES)
def test_sweep_svrg_csr_and_dense(name, K, l1_ratio, with_intercept, normalise):
    rng = np.random.default_rng(12)
    intercept = 12 if with_intercept else -1
    X, Y, w, rows = make_problem(rng, name, K, intercept)
    n_cols = w.shape[0]
    dsnap = rng.normal(scale=0.5, size=Y.shape)
    drift = rng.normal(scale=0.1, size=w.shape)
    pen_scale = rng.uniform(1.0, 4.0, size=n_cols)
    if with_intercept:
        pen_scale[intercept] = 0.0
    precond = rng.uniform(0.2, 2.0, size=n_cols)
    eta, alpha = (0.5 if normalise else 0.07), 0.3
    want_loss, want_w = ref_svrg_sweep(X, Y, rows, w, intercept, dsnap, drift, pen_scale,
                                       name, EPSILON, eta, alpha, l1_ratio, precond, normalise)
    code = ALL_LOSSES[name]
    Xs = sp.csr_matrix(X)
    packed = _pack(w, drift, pen_scale, precond)
    got = sweeps.sweep_csr_svrg(Xs.indptr, Xs.indices, Xs.data, Y, NO_WEIGHTS,
                                rows, packed, intercept,
                                 dsnap, code, EPSILON, eta, alpha, l1_ratio, True, normalise)
    got_w = packed[:, :K]
    np.testing.assert_allclose(got, want_loss, rtol=1e-12)
    np.testing.assert_allclose(got_w, want_w, rtol=1e-10, atol=1e-14)
    # without the loss: the same steps, no loss
    packed_nl = _pack(w, drift, pen_scale, precond)
    assert sweeps.sweep_csr_svrg(Xs.indptr, Xs.indices, Xs.data, Y, NO_WEIGHTS, rows, packed_nl,
                                  intercept, dsnap, code, EPSILON, eta, alpha, l1_ratio,
                                  False, normalise) == 0.0
    np.testing.assert_array_equal(packed_nl, packed)
    np.testing.assert_array_equal(packed[:, K:], _pack(w, drift, pen_scale, precond)[:, K:])
    if l1_ratio == 1.0:  # the L1 prox really sets coordinates to zero
        assert (got_w == 0).any() and not (w == 0).any()
    # Dense rows touch every column: a dense reference with all columns "non-zero".
    Xd = X.copy()
    if with_intercept:
        Xd[:, intercept] = 1.0
    Xd[Xd == 0.0] = 1e-300  # explicit (tiny) entries: the reference then moves all
    want_loss, want_w = ref_svrg_sweep(Xd, Y, rows, w, -1, dsnap, drift, pen_scale, name,
                                       EPSILON, eta, alpha, l1_ratio, precond, normalise)
    packed = _pack(w, drift, pen_scale, precond)
    got = sweeps.sweep_dense_svrg(Xd, Y, NO_WEIGHTS,
                                  rows, packed, dsnap, code, EPSILON, eta, alpha,
                                   l1_ratio, True, normalise)
    np.testing.assert_allclose(got, want_loss, rtol=1e-12)
    np.testing.assert_allclose(packed[:, :K], want_w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_subtract_finite(bad):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    if bad is not None:
        a[4, 1] = bad
    out = np.empty((7, 3))
    finite = sweeps.subtract_finite(a, b[:, :], out)
    np.testing.assert_array_equal(out, a - b)
    assert finite == (bad is None)
    # a strided view (the packed weights of a sweep) as the first operand
    packed = np.zeros((7, 7))
    packed[:, :3] = a
    assert sweeps.subtract_finite(packed[:, :3], b, out) == (bad is None)
    np.testing.assert_array_equal(out, a - b)




@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_all_finite(bad):
    """Any 2-d array, a strided view included (the delta of a pushed block)."""
    a = np.linspace(-5.0, 5.0, 24).reshape(4, 6)
    if bad is not None:
        a[2, 3] = bad
    assert sweeps.all_finite(a) == (bad is None)
    assert sweeps.all_finite(a[:, 1::2]) == (bad is None)  # (2, 3) is in the view
    assert sweeps.all_finite(a[:, ::2])  # and not in this one
    assert sweeps.all_finite(a.T) == (bad is None)
    assert sweeps.all_finite(np.empty((0, 3)))


def test_clip_bounds_a_derivative():
    assert sweeps.clip(3.5) == 3.5
    assert sweeps.clip(1e300) == sweeps.MAX_DLOSS == 1e12
    assert sweeps.clip(-np.inf) == -1e12


def test_row_dot_products():
    """The rows' predictions every kernel shares: CSR (plus the intercept's weight)
    and dense, per output; the CSR one with the row's weighted squared norm."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 9)) * (rng.random((6, 9)) < 0.4)
    Xc = sp.csr_matrix(X)
    w = rng.normal(size=(10, 4))  # coordinate 9: the intercept; column 3: weights c_j
    for r in range(6):
        s, e = Xc.indptr[r], Xc.indptr[r + 1]
        for k in range(3):
            assert sweeps.dot_csr(Xc.indices, Xc.data, s, e, w, k, -1) == pytest.approx(
                X[r] @ w[:9, k], rel=1e-13, abs=1e-15)
            assert sweeps.dot_csr(Xc.indices, Xc.data, s, e, w, k, 9) == pytest.approx(
                X[r] @ w[:9, k] + w[9, k], rel=1e-13, abs=1e-15)
            assert sweeps.dot_dense(X, r, w, k, 0.5) == pytest.approx(
                0.5 + X[r] @ w[:9, k], rel=1e-13, abs=1e-15)
        p, norm = sweeps.dot_norm_csr(Xc.indices, Xc.data, s, e, w, 9, 3)
        assert p == pytest.approx(X[r] @ w[:9, 0] + w[9, 0], rel=1e-13, abs=1e-15)
        assert norm == pytest.approx(w[:9, 3] @ X[r] ** 2 + w[9, 3], rel=1e-13, abs=1e-15)
