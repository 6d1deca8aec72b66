"""Reference implementations the tests compare the package against.

Every function here is an independent re-derivation of the documented maths
(loss formulas, learning-rate schedules, proximal maps applied one step at a
time, masked per-coordinate AMSGrad, an eager parameter block), written with plain NumPy and
Python.  Nothing here imports ``dask_asyncopt``: a wrong kernel, rule or store
must make the tests that use these fail.  Test modules import what they need
from here instead of keeping copies.
"""

import math

import numpy as np

#: estimator penalty name -> its l1_ratio, as the tests use them
L1_RATIOS = {"l1": 1.0, "l2": 0.0, "elasticnet": 0.4}

#: derivatives are clipped to this magnitude (as scikit-learn's SGD does)
MAX_DLOSS = 1e12


# --------------------------------------------------------------------------
# Losses (vectorised NumPy)
# --------------------------------------------------------------------------
def ref_loss(name, p, y, eps):
    """Loss ``name`` of prediction ``p`` for target ``y``."""
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
    """Derivative of :func:`ref_loss` with respect to ``p`` (away from kinks)."""
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


def clipped_dloss(name, p, y, eps):
    """:func:`ref_dloss` of one prediction, clipped to ``+-MAX_DLOSS``."""
    return min(max(float(ref_dloss(name, p, y, eps)), -MAX_DLOSS), MAX_DLOSS)


def logistic_derivative(p, y):
    """Derivative of the log loss with respect to the prediction (NumPy)."""
    return -y / (np.exp(p * y) + 1.0)


# --------------------------------------------------------------------------
# Step schedules (scikit-learn's, per sample ``t`` counted from 1)
# --------------------------------------------------------------------------
def ref_eta(schedule, eta0, alpha, t0, power_t, t):
    """``schedule`` is ``"optimal"``, ``"invscaling"`` or anything constant."""
    if schedule == "optimal":
        return 1.0 / (alpha * (t0 + t - 1.0))
    if schedule == "invscaling":
        return eta0 / t ** power_t
    return eta0


def ref_sweep(X, Y, rows, w, intercept, name, schedule, params, t_start, t_stride):
    """Plain-Python per-sample SGD over dense rows ``X`` (column ``intercept``
    unused: the intercept's weight is row ``intercept`` of ``w``, stepped by
    ``decay``).  ``params`` maps ``eta0, alpha, l1_ratio, t0, power_t, epsilon,
    decay`` to values (a dict, or anything with those items).  Returns the loss
    sum before each step, the composition ``(D, S)`` of the per-sample prox maps
    and the swept weights."""
    p_ = {k: float(params[k]) for k in ("eta0", "alpha", "l1_ratio", "t0", "power_t",
                                         "epsilon", "decay")}
    w = w.copy()
    n_cols = X.shape[1]
    K = w.shape[1]
    loss_sum, D, S = 0.0, 1.0, 0.0
    for i, r in enumerate(rows):
        t = t_start + i * t_stride
        eta = ref_eta(schedule, p_["eta0"], p_["alpha"], p_["t0"], p_["power_t"], t)
        for k in range(K):
            p = w[intercept, k] if intercept >= 0 else 0.0
            for j in range(n_cols):
                if X[r, j] != 0.0:
                    p += w[j, k] * X[r, j]
            loss_sum += float(ref_loss(name, p, Y[r, k], p_["epsilon"]))
            dl = clipped_dloss(name, p, Y[r, k], p_["epsilon"])
            for j in range(n_cols):
                if X[r, j] != 0.0:
                    w[j, k] -= eta * dl * X[r, j]
            if intercept >= 0:
                w[intercept, k] -= p_["decay"] * eta * dl
        a, c = ref_prox_params(eta, p_["alpha"], p_["l1_ratio"])
        S += a * D
        D *= c
    return loss_sum, D, S, w


# --------------------------------------------------------------------------
# The elastic-net proximal map, one step at a time
# --------------------------------------------------------------------------
def soft(x, a):
    """Soft-thresholding of ``x`` by ``a`` (NumPy, broadcasting)."""
    return np.sign(x) * np.maximum(np.abs(x) - a, 0.0)


def ref_prox_params(eta, alpha, l1_ratio):
    """Threshold ``a`` and divisor ``c`` of ``prox_{eta alpha R}``."""
    return eta * alpha * l1_ratio, 1.0 + eta * alpha * (1.0 - l1_ratio)


def ref_prox(v, eta, alpha, l1_ratio, scale=1.0):
    """``prox`` of the elastic net with step ``eta * scale`` for one value."""
    a, c = ref_prox_params(eta * scale, alpha, l1_ratio)
    return math.copysign(max(abs(v) - a, 0.0), v) / c


def ref_prox_steps(value, steps):
    """Apply each ``m -> max(m - a, 0) / c`` of ``steps`` on the magnitude, in order."""
    m, sign = abs(value), math.copysign(1.0, value)
    for a, c in steps:
        m = max(m - a, 0.0) / c
    return sign * m if m > 0.0 else 0.0


def ref_compose(steps):
    """``(D, S)`` such that applying ``steps`` in order is ``m -> (m - S) / D``."""
    d, s = 1.0, 0.0
    for a, c in steps:
        s += a * d
        d *= c
    return d, s


def make_steps(rng, n, alpha, l1_ratio, lo=0.01, hi=0.1):
    """Per-sample prox maps ``(a, c)`` of a chunk of ``n`` samples (random steps)."""
    return [ref_prox_params(eta, alpha, l1_ratio) for eta in rng.uniform(lo, hi, size=n)]


def make_history(rng, l1_ratio, n_steps=20, alpha=0.5, length=64):
    """A block's ``(D, S)`` history of ``n_steps`` random prox maps (arrays of
    ``length``) and the list of those maps ``(a, c)``."""
    hist_d = np.ones(length)
    hist_s = np.zeros(length)
    steps = []
    for s in range(n_steps):
        a, c = ref_prox_params(rng.uniform(0.02, 0.15), alpha, l1_ratio)
        steps.append((a, c))
        hist_s[s + 1] = hist_s[s] + a * hist_d[s]
        hist_d[s + 1] = hist_d[s] * c
    return hist_d, hist_s, steps


def ref_materialise(w, last, steps, now, skip):
    """Coordinates of ``w`` brought from step ``last[j]`` to ``now``, one map at a
    time (``skip``: an unpenalised row left alone)."""
    out = w.copy()
    for j in range(w.shape[0]):
        if j == skip:
            continue
        for k in range(w.shape[1]):
            out[j, k] = ref_prox_steps(w[j, k], steps[last[j]:now])
    return out


class DenseRef:
    """An eager parameter block: a delta, then each prox step on every penalised
    coordinate."""

    def __init__(self, w, unpenalised=-1):
        self.w = np.array(w, dtype=float)
        self.mask = np.ones(self.w.shape[0], dtype=bool)
        if unpenalised >= 0:
            self.mask[unpenalised] = False

    def add(self, ids, delta):
        if ids is None:
            self.w += delta
        else:
            self.w[ids] += delta

    def prox(self, steps):
        for a, c in steps:
            self.w[self.mask] = soft(self.w[self.mask], a) / c

    def push(self, ids, delta, steps):
        self.add(ids, delta)
        self.prox(steps)

    def penalty(self, alpha, l1_ratio):
        """``alpha (l1_ratio |w|_1 + (1 - l1_ratio) |w|^2 / 2)``, unpenalised left out."""
        w = self.w[self.mask]
        return alpha * (l1_ratio * np.abs(w).sum() + (1 - l1_ratio) * 0.5 * (w ** 2).sum())


# --------------------------------------------------------------------------
# AMSGrad
# --------------------------------------------------------------------------
class NumpyAMSGrad:
    """Proximal AMSGrad in the sqrt(vhat) metric, per coordinate on the steps that
    touch it, written densely with masks: a step gives every coordinate its
    gradient ``g`` (the step's mean over its rows) and reweighting ``omega`` (0
    where the step does not touch it); touched coordinates update their moments
    with ``g / omega`` and take the step ``lr``, the others do not change.
    With ``omega = 1`` everywhere it is textbook (dense) proximal AMSGrad."""

    def __init__(self, n, K, lr, beta1, beta2, eps, alpha, l1_ratio, skip=-1):
        self.x = np.zeros((n, K))
        self.m = np.zeros((n, K))
        self.v = np.zeros((n, K))
        self.vhat = np.zeros((n, K))
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.alpha, self.l1, self.skip = alpha, l1_ratio, skip
        self.zeroed = 0  # coordinates the prox set to exactly 0, summed over steps

    def step(self, g, omega):
        """``g`` (n, K) dense gradient, ``omega`` (n,) reweighting (0: untouched)."""
        t = omega > 0
        gh = np.zeros_like(g)
        gh[t] = g[t] / omega[t, None]
        m = self.b1 * self.m + (1 - self.b1) * gh
        v = self.b2 * self.v + (1 - self.b2) * gh * gh
        vhat = np.maximum(self.vhat, v)
        denom = np.sqrt(vhat) + self.eps
        x = self.x - self.lr * m / denom
        a = self.lr * self.alpha / denom
        if self.skip >= 0:
            a[self.skip] = 0.0
        x_new = soft(x, a * self.l1) / (1 + a * (1 - self.l1))
        self.zeroed += int(((x_new == 0) & (x != 0) & t[:, None]).sum())
        self.m[t], self.v[t], self.vhat[t], self.x[t] = m[t], v[t], vhat[t], x_new[t]


def random_steps(rng, n, K, n_steps, density):
    """Sparse gradient steps ``(ids, gradient sums, reweighting sums, rows)``."""
    steps = []
    for _ in range(n_steps):
        ids = np.flatnonzero(rng.random(n) < density)
        rows = int(rng.integers(1, 20))
        steps.append((ids, rng.normal(size=(len(ids), K)) * rows,
                      rng.uniform(0.5, 3.0, size=len(ids)) * rows, rows))
    return steps


def dense_of(step, n, K):
    """A sparse step of :func:`random_steps` as a dense gradient and reweighting."""
    ids, g, pen, rows = step
    gd, od = np.zeros((n, K)), np.zeros(n)
    gd[ids] = g / rows
    od[ids] = pen / rows
    return gd, od


def pack(steps):
    """Steps of :func:`random_steps` packed ``(ptr, ids, g, pen, scale)``."""
    ptr = np.concatenate([[0], np.cumsum([len(s[0]) for s in steps])]).astype(np.int64)
    ids = np.concatenate([np.asarray(s[0], dtype=np.int64) for s in steps])
    g = np.concatenate([np.asarray(s[1], dtype=float) for s in steps])
    pen = np.concatenate([np.asarray(s[2], dtype=float) for s in steps])
    return ptr, ids, g, pen, np.array([1.0 / s[3] for s in steps])


# --------------------------------------------------------------------------
# Matrix factorisation
# --------------------------------------------------------------------------
def ref_sgd(users, items, ratings, order, U, V, mu, eta, reg_f, reg_b, adagrad):
    """Per-rating SGD on the documented loss, one rating at a time in NumPy."""
    U, V = U.copy(), V.copy()
    k = U.shape[1] - 2
    sse = 0.0
    for n in order:
        u, i = users[n], items[n]
        p, q = U[u, :k].copy(), V[i, :k].copy()
        e = ratings[n] - (mu + U[u, k] + V[i, k] + p @ q)
        sse += e * e
        gp = reg_f * p - e * q
        gq = reg_f * q - e * p
        su = eta / math.sqrt(U[u, k + 1]) if adagrad else eta
        si = eta / math.sqrt(V[i, k + 1]) if adagrad else eta
        U[u, :k] = p - su * gp
        V[i, :k] = q - si * gq
        U[u, k] -= su * (reg_b * U[u, k] - e)
        V[i, k] -= si * (reg_b * V[i, k] - e)
        if adagrad:
            U[u, k + 1] += np.mean(gp ** 2)
            V[i, k + 1] += np.mean(gq ** 2)
    return sse, U, V
