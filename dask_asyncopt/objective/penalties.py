"""Penalties ``h(w) = alpha * R(w)``: one object with its value and its proximal map.

Every supported penalty is an elastic net ``R(w) = l1_ratio |w|_1 +
(1 - l1_ratio) |w|_2^2 / 2`` (``"l2"``: ``l1_ratio = 0``; ``"l1"``:
``l1_ratio = 1``; ``None``: ``alpha = 0``).  Its proximal map with step ``eta``
is soft-thresholding by ``a = eta alpha l1_ratio`` followed by a division by
``c = 1 + eta alpha (1 - l1_ratio)``: :func:`prox`, the one implementation
every kernel, rule and store calls.

A sequence of such maps composes in closed form, which is what makes lazy
(sparse) updates exact: on magnitudes, ``m -> (m - a_s) / c_s`` for steps
``s = 0..n-1`` gives ``m_n D_n = m_0 - S_n`` with ``D_n = prod c_s`` and
``S_n = sum_s a_s D_s`` (clipped at zero once it reaches zero).  A block only
stores the running ``(D, S)`` history (:func:`compose`) and, per coordinate,
the history index at which it was last materialised (:func:`catch_up`).

Adding a penalty whose proximal map is a threshold followed by a shrink
(this family) is a new entry of :data:`PENALTIES` and its tests; the solvers
take an :class:`ElasticNet` and never look inside it.
"""

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

#: estimator ``penalty`` name -> its ``l1_ratio`` (``None``: the estimator's own)
PENALTIES = {"l2": 0.0, "l1": 1.0, "elasticnet": None, None: 0.0}


@njit(nogil=True, cache=True)
def prox(v, threshold, divisor):
    """Soft-threshold ``v`` by ``threshold``, then divide by ``divisor``.

    Branch-free (``max``/``copysign``): on a model whose coordinates are about
    half zero, the sign tests of a branching soft-threshold mispredict on
    every other non-zero, which slowed the SVRG sweep down.  The one
    branch left skips the division of pure L1 (``divisor == 1``), the same
    for every call of a fit, so it is always predicted.
    """
    m = max(abs(v) - threshold, 0.0)
    if divisor != 1.0:
        m /= divisor
    return math.copysign(m, v)


@njit(nogil=True, cache=True)
def prox_params(eta, alpha, l1_ratio):
    """Threshold ``a`` and divisor ``c`` of ``prox_{eta h}``."""
    return eta * alpha * l1_ratio, 1.0 + eta * alpha * (1.0 - l1_ratio)


@njit(nogil=True, cache=True)
def prox_scaled(v, eta_alpha, l1_ratio, scale):
    """:func:`prox` with step ``eta * alpha * scale`` (``eta_alpha = eta * alpha``):
    the sparse variance-reduced steps weight a coordinate's penalty by ``scale``."""
    return prox(v, eta_alpha * l1_ratio * scale, 1.0 + eta_alpha * (1.0 - l1_ratio) * scale)


@njit(nogil=True, cache=True)
def compose(prox_d, prox_s, eta, alpha, l1_ratio):
    """Append ``prox_{eta h}`` to a composition ``(D, S)`` of earlier maps."""
    a, c = prox_params(eta, alpha, l1_ratio)
    return prox_d * c, prox_s + a * prox_d


@njit(nogil=True, cache=True)
def catch_up(value, d_from, s_from, d_to, s_to):
    """Apply the composed maps between two points of a ``(D, S)`` history."""
    return prox(value * d_from, s_to - s_from, d_to)


@dataclass(frozen=True)
class ElasticNet:
    """``alpha * (l1_ratio |w|_1 + (1 - l1_ratio) |w|^2 / 2)``, the intercept excluded.

    Parameters
    ----------
    alpha : float
        Strength (0: no penalty).
    l1_ratio : float
        Share of L1 in ``[0, 1]``.
    """

    alpha: float = 0.0
    l1_ratio: float = 0.0

    @classmethod
    def named(cls, penalty, alpha, l1_ratio):
        """The penalty an estimator's ``penalty``, ``alpha`` and ``l1_ratio`` describe."""
        if penalty is None:
            return cls(0.0, 0.0)
        ratio = PENALTIES[penalty]
        return cls(float(alpha), float(l1_ratio if ratio is None else ratio))

    def value(self, w, skip=-1):
        """``h(w)`` of a coefficient array, row ``skip`` (the intercept) left out."""
        if self.alpha == 0.0:
            return 0.0
        if skip >= 0:
            mask = np.ones(w.shape[0], dtype=bool)
            mask[skip] = False
            w = w[mask]
        l1 = np.abs(w).sum() if self.l1_ratio > 0 else 0.0
        l2 = 0.5 * float(np.vdot(w, w)) if self.l1_ratio < 1 else 0.0
        return self.alpha * (self.l1_ratio * l1 + (1.0 - self.l1_ratio) * l2)

    def dual_terms(self, w, g, skip=-1):
        """What the duality gap at ``w`` needs from some of the coefficients.

        ``g`` is the mean loss's gradient at ``w`` (same shape), row ``skip``
        (the intercept) left out.  Returns a ``(4, n_outputs)`` array: ``<w, g>``,
        ``|g|^2``, ``sum_j (|g_j| - alpha l1_ratio)_+^2`` and ``max_j |g_j|``
        per output.  Sums over disjoint coordinate sets add up (the maxima take
        the maximum): :meth:`gap_bound` takes those of every block.
        """
        if skip >= 0:
            mask = np.ones(w.shape[0], dtype=bool)
            mask[skip] = False
            w, g = w[mask], g[mask]
        out = np.zeros((4, w.shape[1]))
        if w.shape[0] == 0:
            return out
        out[0] = np.einsum("ij,ij->j", w, g)
        out[1] = np.einsum("ij,ij->j", g, g)
        a = np.abs(g)
        out[3] = a.max(axis=0)
        if 0.0 < self.l1_ratio < 1.0:
            a -= self.alpha * self.l1_ratio
            np.maximum(a, 0.0, out=a)
            out[2] = np.einsum("ij,ij->j", a, a)
        return out

    def gap_bound(self, terms, loss, value):
        """An upper bound on ``F(w) - min F`` over the coefficients (the intercept
        held where it is), ``F`` the mean loss plus this penalty.

        ``terms``: :meth:`dual_terms` of every block; ``loss`` and ``value``:
        the mean loss and the penalty at ``w``.  Fenchel duality with the dual
        point ``s`` times the loss's gradient (``s`` in ``[0, 1]``, chosen to
        make it feasible or the bound small): the conjugate of a loss whose
        minimum is 0 is convex and 0 at 0, so ``loss*(s u) <= s loss*(u)``, and
        ``loss*`` at the gradient itself is ``<w, g> - loss`` (Fenchel-Young).
        The bound is therefore exact arithmetic on the snapshot's exact loss,
        its full gradient and the coefficients, with no pass over the data:
        ``(1 - s) loss + h(w) + s <w, g> + h*(-s g)``.  It is 0 at the optimum
        and ``inf`` without a penalty (no feasible dual point).
        """
        if self.alpha <= 0.0:
            return math.inf
        terms = np.asarray(terms)
        wg = float(terms[:, 0].sum())
        gsq = float(terms[:, 1].sum())
        excess = float(terms[:, 2].sum())
        gmax = float(terms[:, 3].max())
        alpha, ratio = self.alpha, self.l1_ratio

        def bound(s, conjugate):
            return (1.0 - s) * loss + value + s * wg + conjugate

        # s scaled so that every |s g_j| <= alpha l1_ratio: the L1 part's conjugate is 0
        s_l1 = 1.0 if gmax <= alpha * ratio else alpha * ratio / gmax
        if ratio == 1.0:
            best = bound(s_l1, 0.0)
        elif ratio == 0.0:  # h*(v) = |v|^2 / (2 alpha): the best s in closed form
            s = 1.0 if gsq == 0.0 else min(1.0, max(0.0, alpha * (loss - wg) / gsq))
            best = bound(s, s * s * gsq / (2.0 * alpha))
        else:
            best = min(bound(1.0, excess / (2.0 * alpha * (1.0 - ratio))), bound(s_l1, 0.0))
        return max(best, 0.0)

    def prox_1d(self, v, eta):
        """``prox_{eta h}`` of one coordinate (the kernels inline :func:`prox`)."""
        return prox(v, *prox_params(eta, self.alpha, self.l1_ratio))


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
