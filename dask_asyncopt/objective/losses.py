"""Per-sample losses: value and derivative with respect to the prediction.

Each loss is identified by an integer code so that a single Numba kernel can
dispatch on it without object-mode overhead.  Conventions follow
scikit-learn's ``SGDClassifier``/``SGDRegressor``: classification targets are
``+1``/``-1`` (one-vs-rest per output), ``squared_error`` is ``0.5 (p - y)^2``.
"""

import math

import numpy as np
from numba import njit

LOG_LOSS = 0
HINGE = 1
SQUARED_HINGE = 2
MODIFIED_HUBER = 3
SQUARED_ERROR = 4
HUBER = 5
EPSILON_INSENSITIVE = 6
SQUARED_EPSILON_INSENSITIVE = 7

CLASSIFICATION_LOSSES = {
    "log_loss": LOG_LOSS,
    "hinge": HINGE,
    "squared_hinge": SQUARED_HINGE,
    "modified_huber": MODIFIED_HUBER,
}
REGRESSION_LOSSES = {
    "squared_error": SQUARED_ERROR,
    "huber": HUBER,
    "epsilon_insensitive": EPSILON_INSENSITIVE,
    "squared_epsilon_insensitive": SQUARED_EPSILON_INSENSITIVE,
}


@njit(nogil=True, cache=True)
def loss_value(code, p, y, epsilon):
    """Loss of prediction ``p`` for target ``y``."""
    if code == LOG_LOSS:
        z = p * y
        if z > 18.0:
            return math.exp(-z)
        if z < -18.0:
            return -z
        return math.log1p(math.exp(-z))
    if code == HINGE:
        z = p * y
        return 1.0 - z if z < 1.0 else 0.0
    if code == SQUARED_HINGE:
        z = 1.0 - p * y
        return z * z if z > 0.0 else 0.0
    if code == MODIFIED_HUBER:
        z = p * y
        if z >= 1.0:
            return 0.0
        if z >= -1.0:
            return (1.0 - z) * (1.0 - z)
        return -4.0 * z
    if code == SQUARED_ERROR:
        r = p - y
        return 0.5 * r * r
    if code == HUBER:
        r = abs(p - y)
        if r <= epsilon:
            return 0.5 * r * r
        return epsilon * r - 0.5 * epsilon * epsilon
    if code == EPSILON_INSENSITIVE:
        r = abs(y - p) - epsilon
        return r if r > 0.0 else 0.0
    # SQUARED_EPSILON_INSENSITIVE
    r = abs(y - p) - epsilon
    return r * r if r > 0.0 else 0.0


@njit(nogil=True, cache=True)
def loss_derivative(code, p, y, epsilon):
    """Derivative of the loss with respect to the prediction ``p``."""
    if code == LOG_LOSS:
        z = p * y
        if z > 18.0:
            return -y * math.exp(-z)
        if z < -18.0:
            return -y
        return -y / (math.exp(z) + 1.0)
    if code == HINGE:
        return -y if p * y < 1.0 else 0.0
    if code == SQUARED_HINGE:
        z = 1.0 - p * y
        return -2.0 * y * z if z > 0.0 else 0.0
    if code == MODIFIED_HUBER:
        z = p * y
        if z >= 1.0:
            return 0.0
        if z >= -1.0:
            return -2.0 * (1.0 - z) * y
        return -4.0 * y
    if code == SQUARED_ERROR:
        return p - y
    if code == HUBER:
        r = p - y
        if abs(r) <= epsilon:
            return r
        return epsilon if r > 0.0 else -epsilon
    if code == EPSILON_INSENSITIVE:
        if y - p > epsilon:
            return -1.0
        if p - y > epsilon:
            return 1.0
        return 0.0
    # SQUARED_EPSILON_INSENSITIVE
    z = y - p
    if z > epsilon:
        return -2.0 * (z - epsilon)
    if z < -epsilon:
        return 2.0 * (-z - epsilon)
    return 0.0


@njit(nogil=True, cache=True)
def loss_and_derivative(code, p, y, epsilon):
    """``(loss_value, loss_derivative)`` at once: the log loss shares one exponential.

    The passes that need both (snapshots, plain SGD sweeps) spend a good part
    of their time per row on ``exp``/``log1p``; the derivative agrees with
    :func:`loss_derivative` to rounding.
    """
    if code == LOG_LOSS:
        z = p * y
        if z > 18.0:
            e = math.exp(-z)
            return e, -y * e
        if z < -18.0:
            return -z, -y
        e = math.exp(-z)
        return math.log1p(e), -y * e / (1.0 + e)
    return loss_value(code, p, y, epsilon), loss_derivative(code, p, y, epsilon)


# Lipschitz constant of each loss's derivative (its largest curvature).  The
# variance-reduced solver needs one; hinge and epsilon_insensitive are not
# smooth, so it does not apply to them.
SMOOTHNESS = {
    LOG_LOSS: 0.25,
    SQUARED_HINGE: 2.0,
    MODIFIED_HUBER: 2.0,
    SQUARED_ERROR: 1.0,
    HUBER: 1.0,
    SQUARED_EPSILON_INSENSITIVE: 2.0,
}


def curvature_sums(code, derivatives, weights, epsilon):
    """Per output, the sum over rows of ``weight * loss''`` at the snapshot.

    The snapshot pass keeps each row's weighted first derivative only
    (``derivatives``, ``(n_rows, K)``; ``weights`` the same shape, or empty:
    all 1).  For the smooth losses the second derivative is a function of the
    first (the log loss's ``q (1 - q)`` with ``q = |loss'|``; the others are
    piecewise quadratic: a constant where the derivative is not clipped),
    so no pass over ``X`` is needed.  The stopping rule's estimate of what the
    intercept has left to gain (a Newton step) divides by it.
    """
    d = np.asarray(derivatives, dtype=np.float64)
    w = np.ones_like(d) if weights.size == 0 else np.asarray(weights, dtype=np.float64)
    q = np.abs(np.divide(d, w, out=np.zeros_like(d), where=w > 0))
    if code == LOG_LOSS:
        second = q * (1.0 - q)
    elif code == SQUARED_ERROR:
        second = np.ones_like(q)
    elif code == HUBER:  # |loss'| = epsilon beyond the quadratic zone (up to the division)
        second = (q < epsilon * (1.0 - 1e-9)).astype(np.float64)
    elif code == MODIFIED_HUBER:
        second = 2.0 * ((q > 0.0) & (q < 4.0))
    elif code in (SQUARED_HINGE, SQUARED_EPSILON_INSENSITIVE):
        second = 2.0 * (q > 0.0)
    else:  # hinge and epsilon_insensitive: no curvature
        second = np.zeros_like(q)
    return (w * second).sum(axis=0)
