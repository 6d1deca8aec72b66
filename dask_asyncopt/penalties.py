"""Penalties ``h(w) = alpha * R(w)``: value and proximal operator.

All supported penalties are elastic nets ``R(w) = l1_ratio |w|_1 +
(1 - l1_ratio) |w|_2^2 / 2`` (``l2``: ``l1_ratio = 0``; ``l1``: ``l1_ratio = 1``;
``None``: ``alpha = 0``).  Their proximal map with step ``eta`` is
soft-thresholding by ``a = eta alpha l1_ratio`` followed by a division by
``c = 1 + eta alpha (1 - l1_ratio)``.

A sequence of such maps composes in closed form, which is what makes lazy
(sparse) updates exact: on magnitudes, ``m -> (m - a_s) / c_s`` for steps
``s = 0..n-1`` gives ``m_n D_n = m_0 - S_n`` with ``D_n = prod c_s`` and
``S_n = sum_s a_s D_s`` (clipped at zero once it reaches zero).  A block only
stores the running ``(D, S)`` history and, per coordinate, the history index at
which it was last materialised.
"""

import math

import numpy as np
from numba import njit

PENALTY_L1_RATIO = {"l2": 0.0, "l1": 1.0, "elasticnet": None, None: 0.0}


def effective_penalty(penalty, alpha, l1_ratio):
    """Return ``(alpha, l1_ratio)`` of the elastic net equivalent to ``penalty``."""
    if penalty is None:
        return 0.0, 0.0
    if penalty == "elasticnet":
        return float(alpha), float(l1_ratio)
    return float(alpha), PENALTY_L1_RATIO[penalty]


def penalty_value(w, alpha, l1_ratio):
    """``alpha * R(w)`` for a coefficient array ``w`` (intercepts excluded)."""
    if alpha == 0.0:
        return 0.0
    l1 = np.abs(w).sum() if l1_ratio > 0 else 0.0
    l2 = 0.5 * float(np.vdot(w, w)) if l1_ratio < 1 else 0.0
    return alpha * (l1_ratio * l1 + (1.0 - l1_ratio) * l2)


@njit(nogil=True, cache=True)
def prox_step_params(eta, alpha, l1_ratio):
    """Threshold ``a`` and divisor ``c`` of ``prox_{eta h}``."""
    return eta * alpha * l1_ratio, 1.0 + eta * alpha * (1.0 - l1_ratio)


@njit(nogil=True, cache=True)
def prox_catch_up(value, d_from, s_from, d_to, s_to):
    """Apply the composed prox maps between two points of a ``(D, S)`` history.

    Branch-free: on a model with many zeros a sign test per coordinate
    mispredicts (see ``kernels._prox_scaled``).
    """
    return math.copysign(max(abs(value) * d_from - (s_to - s_from), 0.0) / d_to, value)


def sparse_penalty_scale(n_samples, counts, unpenalised=-1, out=None):
    """Per-coordinate penalty weight ``n / n_j`` of the sparse variance-reduced steps.

    A step on one row applies the penalty only to the row's coordinates;
    coordinate ``j`` appears in ``n_j = counts[j]`` of the ``n_samples`` rows,
    so scaling its prox by ``n / n_j`` applies the full penalty on average
    (ProxASAGA's reweighting).  ``unpenalised`` (the intercept, or -1) gets 0.
    """
    out = np.divide(n_samples, np.maximum(counts, 1), out=out, dtype=np.float64)
    if unpenalised >= 0:
        out[unpenalised] = 0.0
    return out
