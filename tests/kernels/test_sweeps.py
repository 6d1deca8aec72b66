"""Numba kernels against plain NumPy / Python references written out here.

Every reference below is an independent re-derivation of the documented
maths (loss formulas, learning-rate schedules, per-sample SGD, proximal maps
applied one step at a time), not a call back into the package, so that a
wrong kernel makes these tests fail.
"""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt import kernels, losses, penalties, schedules

ALL_LOSSES = {**losses.CLASSIFICATION_LOSSES, **losses.REGRESSION_LOSSES}


# --------------------------------------------------------------------------
# Reference losses (vectorised NumPy)
# --------------------------------------------------------------------------
def ref_loss(name, p, y, eps):
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    z = p * y
    r = p - y
    if name == "log_loss":
        return np.logaddexp(0.0, -z)
    if name == "hinge":
        return np.maximum(0.0, 1.0 - z)
    if name == "squared_hinge":
        return np.maximum(0.0, 1.0 - z) ** 2
    if name == "modified_huber":
        return np.where(z >= 1.0, 0.0, np.where(z >= -1.0, (1.0 - z) ** 2, -4.0 * z))
    if name == "squared_error":
        return 0.5 * r ** 2
    if name == "huber":
        a = np.abs(r)
        return np.where(a <= eps, 0.5 * r ** 2, eps * a - 0.5 * eps ** 2)
    if name == "epsilon_insensitive":
        return np.maximum(0.0, np.abs(r) - eps)
    if name == "squared_epsilon_insensitive":
        return np.maximum(0.0, np.abs(r) - eps) ** 2
    raise ValueError(name)


def ref_dloss(name, p, y, eps):
    """Derivative with respect to ``p`` (away from kinks)."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    z = p * y
    r = p - y
    if name == "log_loss":
        return -y / (1.0 + np.exp(z))
    if name == "hinge":
        return np.where(z < 1.0, -y, 0.0)
    if name == "squared_hinge":
        return -2.0 * y * np.maximum(0.0, 1.0 - z)
    if name == "modified_huber":
        return np.where(z >= 1.0, 0.0, np.where(z >= -1.0, -2.0 * y * (1.0 - z), -4.0 * y))
    if name == "squared_error":
        return r
    if name == "huber":
        return np.clip(r, -eps, eps)
    if name == "epsilon_insensitive":
        return np.sign(r) * (np.abs(r) > eps)
    if name == "squared_epsilon_insensitive":
        return 2.0 * np.sign(r) * np.maximum(0.0, np.abs(r) - eps)
    raise ValueError(name)


def kinks(name, y, eps):
    """Points ``p`` where the loss (or its documented piecewise form) changes branch."""
    if name == "log_loss":
        return [18.0 * y, -18.0 * y]  # switch to the asymptotic forms
    if name in ("hinge", "squared_hinge"):
        return [1.0 * y]
    if name == "modified_huber":
        return [1.0 * y, -1.0 * y]
    if name == "squared_error":
        return []
    return [y - eps, y + eps]


EPSILONS = (0.1, 0.7)


def loss_grid(name):
    """(p, y, eps) triples covering every branch of the loss."""
    p = np.concatenate([np.linspace(-4.0, 4.0, 81), [-30.0, -19.5, -12.0, 12.0, 19.5, 30.0],
                        [-1.0 - 1e-3, -1.0 + 1e-3, 1.0 - 1e-3, 1.0 + 1e-3]])
    if name in losses.CLASSIFICATION_LOSSES:
        ys = (-1.0, 1.0)
        epss = (0.1,)
    else:
        ys = (-2.5, -0.3, 0.0, 1.7)
        epss = EPSILONS
    return [(pi, yi, e) for e in epss for yi in ys for pi in p]


def _values(code, triples, fn):
    return np.array([fn(code, p, y, e) for p, y, e in triples])


def test_loss_codes_are_distinct_and_complete():
    assert sorted(ALL_LOSSES.values()) == list(range(8))
    assert set(losses.CLASSIFICATION_LOSSES).isdisjoint(losses.REGRESSION_LOSSES)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_value_matches_numpy(name):
    code = ALL_LOSSES[name]
    triples = loss_grid(name)
    p, y, e = (np.array(v) for v in zip(*triples, strict=True))
    got = _values(code, triples, losses.loss_value)
    want = ref_loss(name, p, y, e)
    # log_loss uses exp(-z) / -z beyond |z| > 18 (relative error < 1e-7 there).
    rtol = 1e-7 if name == "log_loss" else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300)
    assert np.all(got >= 0.0)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_derivative_matches_numpy(name):
    code = ALL_LOSSES[name]
    triples = [t for t in loss_grid(name)
               if all(abs(t[0] - k) > 1e-9 for k in kinks(name, t[1], t[2]))]
    p, y, e = (np.array(v) for v in zip(*triples, strict=True))
    got = _values(code, triples, losses.loss_derivative)
    want = ref_dloss(name, p, y, e)
    rtol = 1e-7 if name == "log_loss" else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_derivative_is_finite_difference_of_value(name):
    code = ALL_LOSSES[name]
    h = 1e-6
    triples = [t for t in loss_grid(name)
               if all(abs(t[0] - k) > 1e-4 for k in kinks(name, t[1], t[2]))]
    fd = np.array([(losses.loss_value(code, p + h, y, e) - losses.loss_value(code, p - h, y, e))
                   / (2 * h) for p, y, e in triples])
    got = _values(code, triples, losses.loss_derivative)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)
    # the grid really exercises non-zero slopes
    assert np.count_nonzero(np.abs(got) > 1e-3) > len(triples) // 4


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_and_derivative_agree_with_the_separate_functions(name):
    code = ALL_LOSSES[name]
    triples = loss_grid(name)
    got = np.array([losses.loss_and_derivative(code, p, y, e) for p, y, e in triples])
    np.testing.assert_allclose(got[:, 0], _values(code, triples, losses.loss_value),
                               rtol=1e-14, atol=1e-300)
    # the log loss computes the derivative from exp(-z), not exp(z): rounding only
    np.testing.assert_allclose(got[:, 1], _values(code, triples, losses.loss_derivative),
                               rtol=1e-13, atol=1e-300)


def test_loss_known_values():
    """A few hand-computed values, independent of any formula transcription."""
    v, d = losses.loss_value, losses.loss_derivative
    assert v(losses.LOG_LOSS, 0.0, 1.0, 0.0) == pytest.approx(math.log(2.0))
    assert d(losses.LOG_LOSS, 0.0, -1.0, 0.0) == pytest.approx(0.5)
    assert v(losses.HINGE, 0.25, -1.0, 0.0) == pytest.approx(1.25)
    assert v(losses.SQUARED_HINGE, 0.5, 1.0, 0.0) == pytest.approx(0.25)
    assert v(losses.MODIFIED_HUBER, -3.0, 1.0, 0.0) == pytest.approx(12.0)
    assert v(losses.SQUARED_ERROR, 3.0, 1.0, 0.0) == pytest.approx(2.0)
    assert v(losses.HUBER, 3.0, 1.0, 0.5) == pytest.approx(0.5 * 2.0 - 0.125)
    assert d(losses.HUBER, -3.0, 1.0, 0.5) == pytest.approx(-0.5)
    assert v(losses.EPSILON_INSENSITIVE, 3.0, 1.0, 0.5) == pytest.approx(1.5)
    assert v(losses.SQUARED_EPSILON_INSENSITIVE, 3.0, 1.0, 0.5) == pytest.approx(2.25)
    assert d(losses.SQUARED_EPSILON_INSENSITIVE, -1.0, 1.0, 0.5) == pytest.approx(-3.0)


# --------------------------------------------------------------------------
# Schedules and prox parameters
# --------------------------------------------------------------------------
def ref_eta(schedule, eta0, alpha, t0, power_t, t):
    if schedule == schedules.OPTIMAL:
        return 1.0 / (alpha * (t0 + t - 1.0))
    if schedule == schedules.INVSCALING:
        return eta0 / t ** power_t
    return eta0


@pytest.mark.parametrize("schedule", [schedules.CONSTANT, schedules.OPTIMAL,
                                      schedules.INVSCALING, schedules.ADAPTIVE])
def test_step_size(schedule):
    for t in (1, 2, 7, 1000):
        got = schedules.step_size(schedule, 0.3, 1e-3, 40.0, 0.25, t)
        assert got == pytest.approx(ref_eta(schedule, 0.3, 1e-3, 40.0, 0.25, t), rel=1e-14)
    # hand values
    assert schedules.step_size(schedules.OPTIMAL, 0.3, 0.5, 3.0, 0.25, 2) == pytest.approx(0.5)
    assert schedules.step_size(schedules.INVSCALING, 0.3, 0.5, 3.0, 0.5, 9) == pytest.approx(0.1)


def test_prox_step_params():
    a, c = penalties.prox_step_params(0.2, 0.5, 0.3)
    assert a == pytest.approx(0.2 * 0.5 * 0.3)
    assert c == pytest.approx(1.0 + 0.2 * 0.5 * 0.7)


def test_sparse_penalty_scale():
    counts = np.array([4, 1, 0, 2])
    np.testing.assert_array_equal(penalties.sparse_penalty_scale(8, counts),
                                  [2.0, 8.0, 8.0, 4.0])  # unseen coordinates: as if once
    out = np.full(4, np.nan)
    got = penalties.sparse_penalty_scale(8, counts, unpenalised=1, out=out)
    assert got is out
    np.testing.assert_array_equal(out, [2.0, 0.0, 8.0, 4.0])
    # averaged over the rows, every coordinate it touches gets the full penalty once
    rows = [[0, 3], [0, 1], [0], [0, 3]] * 2
    scale = penalties.sparse_penalty_scale(8, np.bincount(np.concatenate(rows)))
    per_coord = np.zeros(4)
    for r in rows:
        per_coord[r] += scale[r] / len(rows)
    np.testing.assert_allclose(per_coord[[0, 1, 3]], 1.0)


# --------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------
ETA0, ALPHA, T0, POWER_T, EPSILON, DECAY = 0.05, 0.02, 60.0, 0.4, 0.3, 0.3


def make_params(l1_ratio, eta0=ETA0, alpha=ALPHA):
    params = np.zeros(kernels.N_PARAMS)
    params[kernels.P_ETA0] = eta0
    params[kernels.P_ALPHA] = alpha
    params[kernels.P_L1_RATIO] = l1_ratio
    params[kernels.P_T0] = T0
    params[kernels.P_POWER_T] = POWER_T
    params[kernels.P_EPSILON] = EPSILON
    params[kernels.P_INTERCEPT_DECAY] = DECAY
    return params


def ref_sweep(X, Y, rows, w, intercept, name, schedule, params, t_start, t_stride):
    """Plain-Python per-sample SGD; ``X`` dense with column ``intercept`` unused."""
    eta0, alpha, l1_ratio, t0, power_t, eps, decay = (float(v) for v in params)
    w = w.copy()
    n_cols = X.shape[1]
    K = w.shape[1]
    loss_sum, D, S = 0.0, 1.0, 0.0
    for i, r in enumerate(rows):
        t = t_start + i * t_stride
        eta = ref_eta(schedule, eta0, alpha, t0, power_t, t)
        for k in range(K):
            p = w[intercept, k] if intercept >= 0 else 0.0
            for j in range(n_cols):
                if X[r, j] != 0.0:
                    p += w[j, k] * X[r, j]
            loss_sum += float(ref_loss(name, p, Y[r, k], eps))
            dl = float(ref_dloss(name, p, Y[r, k], eps))
            dl = min(max(dl, -1e12), 1e12)
            for j in range(n_cols):
                if X[r, j] != 0.0:
                    w[j, k] -= eta * dl * X[r, j]
            if intercept >= 0:
                w[intercept, k] -= decay * eta * dl
        a = eta * alpha * l1_ratio
        c = 1.0 + eta * alpha * (1.0 - l1_ratio)
        S += a * D
        D *= c
    return loss_sum, D, S, w


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
    got = kernels.sweep_csr(Xc.indptr, Xc.indices, Xc.data, Y, rows, w, intercept,
                            ALL_LOSSES[name], schedule, params, 7, 3)
    want = ref_sweep(X, Y, rows, w0, intercept, name, schedule, params, 7, 3)
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
    got = kernels.sweep_dense(np.ascontiguousarray(X), Y, rows, w, -1, ALL_LOSSES[name],
                              schedule, params, 11, 2)
    want = ref_sweep(X, Y, rows, w0, -1, name, schedule, params, 11, 2)
    _check_sweep(got, w, want)
    assert not np.allclose(w, w0)


@pytest.mark.parametrize("K", [1, 3])
def test_sweep_dense_ones_column_equals_csr_intercept_without_decay(K):
    """With intercept_decay = 1, a column of ones is the CSR sweep's intercept."""
    rng = np.random.default_rng(5)
    X, Y, w0, rows = make_problem(rng, "log_loss", K, 2)
    params = make_params(l1_ratio=0.5)
    params[kernels.P_INTERCEPT_DECAY] = 1.0
    Xc = sp.csr_matrix(X)
    w_csr = w0.copy()
    r_csr = kernels.sweep_csr(Xc.indptr, Xc.indices, Xc.data, Y, rows, w_csr, 2,
                              losses.LOG_LOSS, schedules.INVSCALING, params, 1, 1)
    Xd = X.copy()
    Xd[:, 2] = 1.0
    w_dense = w0.copy()
    r_dense = kernels.sweep_dense(Xd, Y, rows, w_dense, -1, losses.LOG_LOSS,
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
        loss_sum, d, s = kernels.sweep_csr(Xc.indptr, Xc.indices, Xc.data, Y, rows, w, -1,
                                           losses.SQUARED_ERROR, schedules.CONSTANT,
                                           params, 1, 1)
    else:
        loss_sum, d, s = kernels.sweep_dense(X, Y, rows, w, -1, losses.SQUARED_ERROR,
                                             schedules.CONSTANT, params, 1, 1)
    np.testing.assert_allclose(w[:, 0], [1e-3 * 1e12, -1e-3 * 1e12 * 2.0], rtol=1e-14)
    assert loss_sum == pytest.approx(1e40)
    assert (d, s) == (1.0, 0.0)


# --------------------------------------------------------------------------
# Lazy prox: store kernels
# --------------------------------------------------------------------------
PENALTIES = {"l1": 1.0, "l2": 0.0, "elasticnet": 0.4}


def make_history(rng, l1_ratio, n_steps=20, alpha=0.5, length=64):
    """(D, S) history of ``n_steps`` prox maps plus the per-step (a, c) list."""
    hist_d = np.ones(length)
    hist_s = np.zeros(length)
    steps = []
    for s in range(n_steps):
        eta = rng.uniform(0.02, 0.15)
        a, c = penalties.prox_step_params(eta, alpha, l1_ratio)
        steps.append((a, c))
        hist_s[s + 1] = hist_s[s] + a * hist_d[s]
        hist_d[s + 1] = hist_d[s] * c
    return hist_d, hist_s, steps


def ref_prox_steps(value, steps):
    """Apply each ``m -> max(m - a, 0) / c`` on magnitudes, one at a time."""
    m, sign = abs(value), math.copysign(1.0, value)
    for a, c in steps:
        m = max(m - a, 0.0) / c
    return sign * m if m > 0.0 else 0.0


def ref_materialise(w, last, steps, now, skip):
    out = w.copy()
    for j in range(w.shape[0]):
        if j == skip:
            continue
        for k in range(w.shape[1]):
            out[j, k] = ref_prox_steps(w[j, k], steps[last[j]:now])
    return out


def make_block(rng, l1_ratio, n_coords=15, K=2):
    hist_d, hist_s, steps = make_history(rng, l1_ratio)
    now = len(steps)
    w = rng.normal(size=(n_coords, K))
    last = rng.integers(0, now + 1, size=n_coords).astype(np.int64)
    last[0] = 0  # the whole history
    last[1] = now  # already current
    return w, last, hist_d, hist_s, steps, now


@pytest.mark.parametrize("penalty", sorted(PENALTIES))
@pytest.mark.parametrize("skip", [-1, 6])
def test_gather(penalty, skip):
    rng = np.random.default_rng([len(penalty), skip + 1])
    w, last, hist_d, hist_s, steps, now = make_block(rng, PENALTIES[penalty])
    last[6] = 0
    want = ref_materialise(w, last, steps, now, skip)
    ids = np.array([0, 1, 6, 9, 3, 12], dtype=np.int64)
    w_before, last_before = w.copy(), last.copy()
    out = np.empty((ids.shape[0], w.shape[1]))
    kernels.gather(w, last, hist_d, hist_s, now, ids, skip, out)
    np.testing.assert_allclose(out, want[ids], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(w[ids], want[ids], rtol=1e-10, atol=1e-13)  # written back
    np.testing.assert_array_equal(last[ids], now)
    others = np.setdiff1d(np.arange(w.shape[0]), ids)
    np.testing.assert_array_equal(w[others], w_before[others])
    np.testing.assert_array_equal(last[others], last_before[others])
    if skip >= 0:
        np.testing.assert_array_equal(out[2], w_before[6])  # unpenalised: untouched
    else:
        assert not np.allclose(out[2], w_before[6])
    if penalty == "l1":  # coordinate 0 caught up over the whole history: thresholded
        assert np.count_nonzero(want[ids] == 0.0) > 0
        np.testing.assert_array_equal(out == 0.0, want[ids] == 0.0)
    # A second gather at the same point changes nothing.
    out2 = np.empty_like(out)
    kernels.gather(w, last, hist_d, hist_s, now, ids, skip, out2)
    np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("K", [1, 3])
def test_gather_packed_is_gather_plus_the_terms(K):
    rng = np.random.default_rng(K)
    w, last, hist_d, hist_s, steps, now = make_block(rng, PENALTIES["l1"])
    w = np.ascontiguousarray(np.repeat(w[:, :1], K, axis=1))
    drift = rng.normal(size=w.shape)
    scale = rng.uniform(1, 3, size=w.shape[0])
    precond = rng.uniform(0.1, 1, size=w.shape[0])
    ids = np.array([0, 1, 6, 9, 3, 12], dtype=np.int64)
    want = np.empty((ids.shape[0], K))
    w2, last2 = w.copy(), last.copy()
    kernels.gather(w2, last2, hist_d, hist_s, now, ids, 6, want)
    out = np.full((ids.shape[0] + 2, 2 * K + 2), np.nan)
    kernels.gather_packed(w, last, hist_d, hist_s, now, ids, 6, drift, scale, precond,
                          out[1:-1])
    np.testing.assert_array_equal(out[1:-1, :K], want)
    np.testing.assert_array_equal(out[1:-1, K:2 * K], drift[ids])
    np.testing.assert_array_equal(out[1:-1, 2 * K], scale[ids])
    np.testing.assert_array_equal(out[1:-1, 2 * K + 1], precond[ids])
    np.testing.assert_array_equal(w, w2)  # materialised as gather does
    np.testing.assert_array_equal(last, last2)
    assert np.isnan(out[[0, -1]]).all()  # only its rows written
    # the terms alone (reads of remote blocks): the weight columns are left alone
    out = np.full((ids.shape[0], 2 * K + 2), np.nan)
    kernels.gather_terms(drift, scale, precond, ids, out)
    assert np.isnan(out[:, :K]).all()
    np.testing.assert_array_equal(out[:, K:2 * K], drift[ids])
    np.testing.assert_array_equal(out[:, 2 * K], scale[ids])
    np.testing.assert_array_equal(out[:, 2 * K + 1], precond[ids])


def test_add_rows_is_fancy_add():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(20, 2))
    ids = rng.permutation(20)[:9]
    values = rng.normal(size=(9, 2))
    want = target.copy()
    want[ids] += values
    kernels.add_rows(target, ids, values)
    np.testing.assert_allclose(target, want, rtol=1e-15)


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_subtract_finite(bad):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    if bad is not None:
        a[4, 1] = bad
    out = np.empty((7, 3))
    finite = kernels.subtract_finite(a, b[:, :], out)
    np.testing.assert_array_equal(out, a - b)
    assert finite == (bad is None)
    # a strided view (the packed weights of a sweep) as the first operand
    packed = np.zeros((7, 7))
    packed[:, :3] = a
    assert kernels.subtract_finite(packed[:, :3], b, out) == (bad is None)
    np.testing.assert_array_equal(out, a - b)


def test_add_entries_is_fancy_add():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 50, size=30)
    ids = rng.permutation(30)[:11]
    values = rng.integers(0, 9, size=11)
    want = target.copy()
    want[ids] += values
    kernels.add_entries(target, ids, values)
    np.testing.assert_array_equal(target, want)


@pytest.mark.parametrize("penalty", sorted(PENALTIES))
@pytest.mark.parametrize("skip", [-1, 6])
def test_add_delta(penalty, skip):
    rng = np.random.default_rng([len(penalty), skip + 1, 2])
    w, last, hist_d, hist_s, steps, now = make_block(rng, PENALTIES[penalty])
    last[6] = 0
    want = ref_materialise(w, last, steps, now, skip)
    ids = np.array([6, 2, 0, 14, 1], dtype=np.int64)
    delta = rng.normal(size=(ids.shape[0], w.shape[1]))
    w_before, last_before = w.copy(), last.copy()
    kernels.add_delta(w, last, hist_d, hist_s, now, ids, delta, skip)
    np.testing.assert_allclose(w[ids], want[ids] + delta, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(last[ids], now)
    others = np.setdiff1d(np.arange(w.shape[0]), ids)
    np.testing.assert_array_equal(w[others], w_before[others])
    np.testing.assert_array_equal(last[others], last_before[others])
    if skip >= 0:
        np.testing.assert_allclose(w[6], w_before[6] + delta[0], rtol=1e-15)


@pytest.mark.parametrize("penalty", sorted(PENALTIES))
@pytest.mark.parametrize("skip", [-1, 6])
def test_catch_up_all(penalty, skip):
    rng = np.random.default_rng([len(penalty), skip + 1, 3])
    w, last, hist_d, hist_s, steps, now = make_block(rng, PENALTIES[penalty], n_coords=40)
    last[6] = 0
    want = ref_materialise(w, last, steps, now, skip)
    w_before, last_before = w.copy(), last.copy()
    kernels.catch_up_all(w, last, hist_d, hist_s, now, skip)
    np.testing.assert_allclose(w, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(last, now)
    if skip >= 0:
        np.testing.assert_array_equal(w[6], w_before[6])
    # coordinates with a non-empty catch-up really moved
    moved = (np.arange(40) != skip) & (last_before < now)
    assert np.all(np.any(w[moved] != w_before[moved], axis=1))
    np.testing.assert_array_equal(w[~moved], w_before[~moved])
    if penalty == "l1":
        assert np.count_nonzero(want == 0.0) > 0
        np.testing.assert_array_equal(w == 0.0, want == 0.0)


def test_catch_up_from_an_intermediate_point():
    """Materialising twice (at s1 then at s2) equals materialising once at s2."""
    rng = np.random.default_rng(9)
    hist_d, hist_s, steps = make_history(rng, 0.6)
    w = rng.normal(size=(10, 1))
    last = np.zeros(10, dtype=np.int64)
    w1, last1 = w.copy(), last.copy()
    kernels.catch_up_all(w1, last1, hist_d, hist_s, 7, -1)
    kernels.catch_up_all(w1, last1, hist_d, hist_s, 20, -1)
    want = ref_materialise(w, last, steps, 20, -1)
    np.testing.assert_allclose(w1, want, rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------
# Closed-form composition
# --------------------------------------------------------------------------
@pytest.mark.parametrize("penalty", sorted(PENALTIES))
def test_prox_catch_up_equals_step_by_step(penalty):
    rng = np.random.default_rng(len(penalty))
    hist_d, hist_s, steps = make_history(rng, PENALTIES[penalty], n_steps=30)
    values = np.concatenate([rng.normal(scale=1.5, size=200), [0.0, -0.0, 1e-12, -3.0, 5.0]])
    n_zero = 0
    for i, v in enumerate(values):
        lo = int(rng.integers(0, 30))
        hi = int(rng.integers(lo, 31))
        if i < 5:
            lo, hi = 0, 30
        got = penalties.prox_catch_up(v, hist_d[lo], hist_s[lo], hist_d[hi], hist_s[hi])
        want = ref_prox_steps(v, steps[lo:hi])
        assert got == pytest.approx(want, rel=1e-10, abs=1e-13), (v, lo, hi)
        if want == 0.0:
            n_zero += 1
            assert got == 0.0
        else:
            assert math.copysign(1.0, got) == math.copysign(1.0, v)
    if PENALTIES[penalty] > 0:
        assert n_zero > 10  # many values are thresholded to exactly zero
    else:
        assert n_zero == 2  # pure L2 never reaches zero (only the zero inputs)


def test_prox_catch_up_hand_values():
    # two steps: a = 0.5, c = 2 each: m -> (m - .5)/2 -> ((m - .5)/2 - .5)/2
    d = [1.0, 2.0, 4.0]
    s = [0.0, 0.5, 0.5 + 0.5 * 2.0]
    assert penalties.prox_catch_up(3.0, d[0], s[0], d[2], s[2]) == pytest.approx(0.375)
    assert penalties.prox_catch_up(-3.0, d[0], s[0], d[2], s[2]) == pytest.approx(-0.375)
    assert penalties.prox_catch_up(1.4, d[0], s[0], d[2], s[2]) == 0.0
    assert penalties.prox_catch_up(1.25, d[1], s[1], d[2], s[2]) == pytest.approx(0.375)


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
    got_csr = kernels.loss_sum_csr(Xc.indptr, Xc.indices, Xc.data, Y, coef, intercept,
                                   ALL_LOSSES[name], EPSILON)
    got_dense = kernels.loss_sum_dense(X, Y, coef, intercept, ALL_LOSSES[name], EPSILON)
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
            dsnap[r, k] = min(max(float(ref_dloss(name, p, Y[r, k], eps)), -1e12), 1e12)
            grad[:, k] += dsnap[r, k] * X[r]
            if intercept >= 0:
                grad[intercept, k] += dsnap[r, k]
    return loss_sum, float((X ** 2).sum(axis=1).max()), dsnap, grad


def ref_prox_scaled(v, eta, alpha, l1_ratio, scale):
    """Soft-threshold by eta*alpha*l1_ratio*scale, then the L2 division."""
    m = max(abs(v) - eta * alpha * l1_ratio * scale, 0.0) * np.sign(v)
    return m / (1.0 + eta * alpha * (1.0 - l1_ratio) * scale)


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
            g[k] = min(max(float(ref_dloss(name, p[k], Y[r, k], eps)), -1e12), 1e12)
            g[k] -= dsnap[r, k]
        for j in support:
            for k in range(K):
                v = w[j, k] - steps[j] * (g[k] * X[r, j] + drift[j, k])
                w[j, k] = ref_prox_scaled(v, steps[j], alpha, l1_ratio, pen_scale[j])
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
    got = kernels.snapshot_csr(Xs.indptr, Xs.indices, Xs.data, Y, wg, intercept, code,
                               EPSILON, dsnap)
    check(wg, dsnap, got, (want_loss, want_norm, want_d, want_g))
    np.testing.assert_allclose(got[1], want_norm, rtol=1e-12)
    np.testing.assert_array_equal(wg[:, :K], w)  # the weights are only read
    # At w = 0 without reading w (garbage in it): the snapshot of zeros.
    want0 = ref_snapshot(X, Y, np.zeros_like(w), intercept, name, EPSILON)
    wg, dsnap = side_by_side(np.full_like(w, np.nan)), np.full(Y.shape, np.nan)
    wg[:, K:] = 0.0
    got = kernels.snapshot_csr(Xs.indptr, Xs.indices, Xs.data, Y, wg, intercept, code,
                               EPSILON, dsnap, True)
    check(wg, dsnap, got, want0)
    # Dense: the intercept is an explicit column of ones.
    Xd = X.copy()
    if with_intercept:
        Xd[:, intercept] = 1.0
    wg, dsnap = side_by_side(w), np.full(Y.shape, np.nan)
    wg[:, K:] = 0.0
    got = kernels.snapshot_dense(Xd, Y, wg, code, EPSILON, dsnap)
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
    got = kernels.sweep_csr_svrg(Xs.indptr, Xs.indices, Xs.data, Y, rows, packed, intercept,
                                 dsnap, code, EPSILON, eta, alpha, l1_ratio, True, normalise)
    got_w = packed[:, :K]
    np.testing.assert_allclose(got, want_loss, rtol=1e-12)
    np.testing.assert_allclose(got_w, want_w, rtol=1e-10, atol=1e-14)
    # without the loss: the same steps, no loss
    packed_nl = _pack(w, drift, pen_scale, precond)
    assert kernels.sweep_csr_svrg(Xs.indptr, Xs.indices, Xs.data, Y, rows, packed_nl,
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
    got = kernels.sweep_dense_svrg(Xd, Y, rows, packed, dsnap, code, EPSILON, eta, alpha,
                                   l1_ratio, True, normalise)
    np.testing.assert_allclose(got, want_loss, rtol=1e-12)
    np.testing.assert_allclose(packed[:, :K], want_w, rtol=1e-10, atol=1e-14)
