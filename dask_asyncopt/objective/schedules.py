"""Learning-rate schedules, evaluated per sample as in scikit-learn's SGD."""

import math

from numba import njit

CONSTANT = 0
OPTIMAL = 1
INVSCALING = 2
ADAPTIVE = 3

SCHEDULES = {"constant": CONSTANT, "optimal": OPTIMAL, "invscaling": INVSCALING,
             "adaptive": ADAPTIVE}


def optimal_t0(alpha, dloss_at):
    """Offset ``t0`` of the ``"optimal"`` schedule ``1 / (alpha (t0 + t))``.

    Léon Bottou's heuristic, as in scikit-learn: the first step is the one a
    typical weight of size ``1 / sqrt(sqrt(alpha))`` would take.  ``dloss_at``
    is ``|dloss(-typw, 1)|`` for the loss in use.
    """
    typw = math.sqrt(1.0 / math.sqrt(alpha))
    eta0 = typw / max(1.0, dloss_at(-typw))
    return 1.0 / (eta0 * alpha)


@njit(nogil=True, cache=True)
def step_size(schedule, eta0, alpha, t0, power_t, t):
    """Step for the ``t``-th sample (``t`` counts from 1 across all workers)."""
    if schedule == OPTIMAL:
        return 1.0 / (alpha * (t0 + t - 1.0))
    if schedule == INVSCALING:
        return eta0 / math.pow(t, power_t)
    return eta0  # CONSTANT and ADAPTIVE (adaptive divides eta0 between epochs)


def svrg_step(smoothness, step, sq_norm):
    """SVRG's constant step: ``step`` when given, else ``1 / L`` with ``L`` the
    loss's curvature bound ``smoothness`` times ``sq_norm``, the largest squared
    row norm (the intercept's 1 included)."""
    if step is not None:
        return step
    return 1.0 / (smoothness * max(sq_norm, 1e-12))

