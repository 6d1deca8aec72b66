"""Update rules: how the owner of some parameters applies a gradient to them.

A rule has explicit state: :meth:`init` allocates it for ``n_coords``
coordinates with ``K`` outputs, :meth:`update` applies gradient steps to
``(n_coords, K)`` weights in place, :meth:`set_lr` changes the step.  Whoever
owns the parameters owns the state next to them: a block actor of
``solver="asyb"`` / ``"sync"``
(:class:`~dask_asyncopt.store.rule_blocks.RuleServer`), or a replica of
``solver="adpsgd"``.

**Gradient steps.**  One step is a sparse gradient in packed form: ``ids``
(coordinates it touches), ``g`` (gradient *sums* over the minibatch's rows,
``(len(ids), K)``), ``pen`` (reweighting sums, below) and ``scale`` (one over
the minibatch's rows).  Several steps travel together as ``ptr`` (step ``s``
is entries ``ptr[s]:ptr[s + 1]``) and are applied in order.

**Reweighting.**  Coordinate ``j`` appears in ``n_j`` of the ``n`` rows.  In a
step whose minibatch has ``c`` rows touching it, ``pen = c * n / n_j``, and
``g / pen`` is an unbiased estimate of the full gradient's coordinate ``j``
from the rows that touch it (exact at the optimum with the SVRG correction),
whatever the minibatch's size: ``scale`` is not needed by the rule below.
This is the reweighting of sparse proximal SAGA/SVRG; the intercept
(``skip``) is reweighted like any coordinate but never penalised.

* :class:`AMSGradRule` (Reddi et al., as the asynchronous APAM method),
  **per coordinate, on the steps that touch it**: with ``gh = g / pen``,
  ``m <- b1 m + (1 - b1) gh``, ``v <- b2 v + (1 - b2) gh^2``,
  ``vhat <- max(vhat, v)``, then the proximal step in the metric
  ``diag(sqrt(vhat) + eps) / s`` for the coordinate's step ``s``:
  ``x <- prox(x - s m / (sqrt(vhat) + eps))``, L1 threshold
  ``s * alpha * l1_ratio / (sqrt(vhat) + eps)``, L2 divisor
  ``1 + s * alpha * (1 - l1_ratio) / (sqrt(vhat) + eps)``.  A step that does
  not touch a coordinate changes nothing of it (no decay, no momentum, no
  penalty), so nothing is lazy: a step costs the coordinates it touches and
  reads need no catch-up.  On dense steps this is textbook proximal AMSGrad.

  Why per coordinate: the optimum is then an exact fixed point and its zeros
  stay exactly zero.  At ``x*`` with variance-reduced gradients ``gh`` is
  ``grad_j F(x*)`` on every touch, so ``m`` is too, and a zero coordinate
  (``|grad_j F(x*)| <= alpha``) is thresholded back to 0 at every step.
  The textbook update applied densely to sparse steps (zero gradient and no
  penalty where a step does not touch a coordinate, which an earlier version
  computed lazily in closed form) has no such fixed point: the momentum of a
  reweighted gradient carries a coordinate off 0 between the steps that
  penalise it: L1 fits ended 80 times denser than the optimum and 7.9e-3
  above it on click-through data.  A coordinate's step does not grow with its reweighting
  (``s * pen * scale``, the dense update's pace for rare coordinates, moved
  them by tens at their first touches and needed more epochs); measurements
  in docs/design.md, "Update rules (APAM)".
"""

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .penalties import prox


@njit(nogil=True, cache=True)
def amsgrad_steps(w, m, v, vhat, ptr, ids, g, pen, lr, coord_lr, beta1, beta2, eps, alpha,
                  l1_ratio, skip):
    """Apply AMSGrad proximal steps (packed) to ``w``, per coordinate on the steps that
    touch it (module docstring); coordinate ``j``'s step is ``lr * coord_lr[j]``.

    Returns the number of steps applied.  An entry with ``pen <= 0`` (no row
    of the data touches the coordinate) is skipped.
    """
    n_outputs = w.shape[1]
    for s in range(ptr.shape[0] - 1):
        for i in range(ptr[s], ptr[s + 1]):
            p = pen[i]
            if p <= 0.0:
                continue
            j = ids[i]
            inv = 1.0 / p
            step = lr * coord_lr[j]
            penalised = j != skip and alpha > 0.0
            for k in range(n_outputs):
                gk = g[i, k] * inv
                mk = beta1 * m[j, k] + (1.0 - beta1) * gk
                vk = beta2 * v[j, k] + (1.0 - beta2) * gk * gk
                hk = max(vhat[j, k], vk)
                m[j, k] = mk
                v[j, k] = vk
                vhat[j, k] = hk
                denom = math.sqrt(hk) + eps
                x = w[j, k] - step * mk / denom
                if penalised:
                    a = step * alpha / denom
                    x = prox(x, a * l1_ratio, 1.0 + a * (1.0 - l1_ratio))
                w[j, k] = x
    return ptr.shape[0] - 1


def pack_steps(steps):
    """Pack a list of ``(ids, g, pen, n_rows)`` steps into ``(ptr, ids, g, pen, scale)``."""
    sizes = [len(s[0]) for s in steps]
    ptr = np.zeros(len(steps) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(sizes)
    ids = np.concatenate([np.asarray(s[0], dtype=np.int64) for s in steps])
    g = np.concatenate([np.asarray(s[1], dtype=np.float64) for s in steps])
    pen = np.concatenate([np.asarray(s[2], dtype=np.float64) for s in steps])
    scale = np.array([1.0 / s[3] for s in steps])
    return ptr, ids, g, pen, scale


class AMSGradState(NamedTuple):
    """AMSGrad's state for some coordinates: moments ``m, v, vhat`` (n_coords, K),
    the steps applied (``t``, one entry), the current step size (``lr``, one
    entry) and each coordinate's share of it (``coord_lr``): arrays, updated in
    place by the rule."""

    m: np.ndarray
    v: np.ndarray
    vhat: np.ndarray
    t: np.ndarray
    lr: np.ndarray
    coord_lr: np.ndarray

    def copy(self):
        return AMSGradState(*(a.copy() for a in self))


#: the moments a fit hands to the next (warm start): ``AMSGradState`` fields
MOMENTS = ("m", "v", "vhat")


class AMSGradRule:
    """AMSGrad with a proximal step in the ``sqrt(vhat)`` metric, per coordinate on
    the steps that touch it (module docstring).

    As an optax transformation: the rule holds its fixed hyper-parameters,
    :meth:`init` makes the state (:class:`AMSGradState`, the step size in it:
    :meth:`set_lr` changes the state, not the rule) and :meth:`update` applies
    steps to the weights with that state and the penalty it is given.

    Parameters
    ----------
    lr : float
        Starting step size ``alpha`` of AMSGrad.
    beta1, beta2 : float
        Decay of the first and second moment estimates.
    eps : float
        Added to ``sqrt(vhat)`` in the denominator.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_asyncopt.objective.penalties import ElasticNet
    >>> from dask_asyncopt.objective.rules import AMSGradRule, pack_steps
    >>> rule = AMSGradRule(lr=0.1)
    >>> w = np.zeros((2, 1)); state = rule.init(2, 1)
    >>> steps = pack_steps([(np.array([0]), np.array([[1.0]]), np.ones(1), 1)] * 3)
    >>> rule.update(state, w, *steps, penalty=ElasticNet(), skip=-1)
    >>> int(state.t[0]), bool(w[0, 0] < 0), float(w[1, 0])
    (3, True, 0.0)
    """

    name = "amsgrad"
    #: the estimators' step when none is given (larger steps overshoot in the first epoch)
    default_lr = 0.03

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = float(lr)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)

    def init(self, n_coords, n_outputs, moments=None):
        """Zero moments (or ``moments``), no step taken, the starting step size.

        Parameters
        ----------
        n_coords, n_outputs : int
            Shape of the weights the state belongs to.
        moments : tuple of 3 ndarrays of shape (n_coords, n_outputs), optional
            ``(m, v, vhat)`` to start from (a warm start: copied).

        Returns
        -------
        AMSGradState
        """
        shape = (n_coords, n_outputs)
        if moments is None:
            moments = (np.zeros(shape), np.zeros(shape), np.zeros(shape))
        else:
            moments = tuple(np.array(a, dtype=np.float64, order="C", copy=True)
                            .reshape(shape) for a in moments)
        return AMSGradState(*moments, np.zeros(1, dtype=np.int64), np.array([self.lr]),
                            np.ones(n_coords))

    def update(self, state, w, ptr, ids, g, pen, scale, *, penalty, skip):
        """Apply packed steps to ``w`` in place, in order.

        Parameters
        ----------
        state : AMSGradState
            From :meth:`init`, updated in place.
        w : ndarray of shape (n_coords, n_outputs)
            Weights, updated in place.
        ptr, ids, g, pen, scale : ndarray
            Packed steps (module docstring, :func:`pack_steps`; ``scale`` is
            not used by this rule).
        penalty : ElasticNet
            The penalty of the proximal steps.
        skip : int
            Unpenalised coordinate (intercept) or ``-1``.
        """
        s = state
        s.t[0] += amsgrad_steps(w, s.m, s.v, s.vhat, ptr, ids, g, pen, s.lr[0], s.coord_lr,
                                self.beta1, self.beta2, self.eps, penalty.alpha,
                                penalty.l1_ratio, skip)

    def set_scales(self, state, column_scale):
        """Coordinate ``j`` steps by ``lr / column_scale[j]`` from now on.

        AMSGrad's step is about ``lr`` in every coordinate whatever its gradient's
        scale (``m / sqrt(vhat)`` does not change when a column is multiplied
        by 1000), so a weight whose feature is 1000 times larger needs a step
        1000 times smaller: with ``column_scale`` the root mean square of each
        column's non-zeros, the rule runs as it would on standardised columns.

        Parameters
        ----------
        state : AMSGradState
        column_scale : ndarray of shape (n_coords,)
            Positive scales (1 where unknown).
        """
        np.divide(1.0, column_scale, out=state.coord_lr)

    def set_lr(self, state, lr):
        """Use step ``lr`` from now on.

        Parameters
        ----------
        state : AMSGradState
        lr : float
        """
        state.lr[0] = float(lr)
