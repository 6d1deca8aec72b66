"""Numba kernels of matrix factorisation: pure functions over NumPy arrays.

Nothing here knows about Dask.  A side (users or items) of the model is one
float64 array ``W`` of shape ``(n_rows, k + 2)`` per block or local copy: row
``r`` is ``[factors (k), bias, G]`` where ``G`` is the row's adaptive-step
accumulator.  Packing the three keeps one pull and one push per block and
lets the step state travel with the factors it scales.

The model is ``mu + b_u + c_i + <p_u, q_i>``; the loss per rating is
``(r - pred)**2 / 2 + reg_factors/2 * (|p_u|**2 + |q_i|**2)
+ reg_biases/2 * (b_u**2 + c_i**2)``, i.e. the regularisation of a row is
paid once per rating that touches it (frequency-weighted L2, as the
per-rating SGD of Funk/Koren and LIBMF).

Step rules (``rule``):

* ``RULE_ADAGRAD``: the per-row adaptive rate of LIBMF (Chin et al., 2015):
  the step of row ``r`` is ``eta / sqrt(G_r)``, then ``G_r`` grows by the
  mean squared gradient of that row's factors.  ``G`` starts at 1, so the
  first step is ``eta``.  Robust to the rating scale: the default works
  without tuning.
* ``RULE_SGD``: plain SGD with the step ``eta`` the caller gives (it decays
  ``eta`` between epochs); ``G`` is left untouched.
* ``RULE_AMSGRAD``: AMSGrad (Reddi et al., 2018) per entry with a per-row
  bias correction: ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g**2``,
  ``vhat <- max(vhat, v)``, ``x <- x - eta_t m / (sqrt(vhat) + eps_t)`` with
  ``eta_t = eta sqrt(1 - b2**t) / (1 - b1**t)`` and ``eps_t = eps sqrt(1 -
  b2**t)`` (PyTorch's ``amsgrad`` form), ``t`` the row's own update count.
  The rows are wider: ``[factors (k), bias, G, m (k+1), v (k+1), vhat
  (k+1), t]`` (:func:`row_width`), so the moments live with the factors and
  travel with an item block exactly as ``G`` does.  A rating updates the
  moments of the two rows it touches, densely over their ``k + 1`` entries;
  rows a rating does not touch are left alone (lazy / "sparse" Adam, as
  PyTorch's ``SparseAdam`` and TF's ``LazyAdam``): each row runs AMSGrad on
  the stream of its own per-rating gradients, the analogue of LIBMF's
  per-row AdaGrad.  The per-row bias correction matters because light rows
  see few updates (measured: 1.244 vs 1.287 sigma test RMSE at the same
  step).  The exact dense alternative (every untouched row's moments decay
  on every rating, and momentum keeps moving it) was measured against it in
  ``benchmarks/mf_amsgrad_lazy.py`` (``docs/design.md``).
"""

import math

import numpy as np
from numba import njit

RULE_SGD, RULE_ADAGRAD, RULE_AMSGRAD = 0, 1, 2


def row_width(n_factors, rule):
    """Columns of a packed row: ``k + 2``, or ``4 k + 6`` with AMSGrad's state."""
    return 4 * n_factors + 6 if rule == RULE_AMSGRAD else n_factors + 2


def n_factors_of(width, rule):
    """Inverse of :func:`row_width`."""
    return (width - 6) // 4 if rule == RULE_AMSGRAD else width - 2


# Reassociation lets LLVM vectorise the dot product and the gradient-norm sums;
# no "nnan"/"ninf": non-finite values must propagate to
# the caller's finiteness check.  error_model="numpy": no zero-division checks
# in the inner loop (G >= 1 and k >= 1 by construction).
@njit(nogil=True, cache=True, error_model="numpy",
      fastmath={"reassoc", "contract", "nsz", "arcp"})
def sgd_ratings(users, items, ratings, order, U, V, mu, eta, reg_f, reg_b, rule,
                beta1=0.9, beta2=0.999, eps=1e-8):
    """Per-rating SGD over ``ratings[order]``, in place on ``U`` and ``V``.

    Parameters
    ----------
    users, items : int32/int64 arrays of shape (n,)
        Local row of each rating in ``U`` and ``V``.
    ratings : float64 array of shape (n,)
    order : int64 array
        The ratings to visit, in this order.
    U, V : float64 arrays of shape (n_users_local, width), (n_items_local, width)
        Packed rows ``[factors, bias, G]`` (``width = k + 2``), with
        ``RULE_AMSGRAD`` followed by ``m, v, vhat, t`` (``width = 4 k + 6``);
        updated in place.
    mu : float
        Global mean (fixed).
    eta, reg_f, reg_b : float
        Step, L2 strength of factors and of biases (per rating).
    rule : int
        ``RULE_SGD``, ``RULE_ADAGRAD`` or ``RULE_AMSGRAD``.
    beta1, beta2, eps : float
        AMSGrad's moment decays and denominator offset (``RULE_AMSGRAD`` only).

    Returns
    -------
    sse : float
        Sum of squared errors of each rating *before* its update
        (progressive validation).
    """
    if rule == RULE_AMSGRAD:
        return _amsgrad_ratings(users, items, ratings, order, U, V, mu, eta, reg_f,
                                reg_b, beta1, beta2, eps)
    k = U.shape[1] - 2
    sse = 0.0
    for t in range(order.shape[0]):
        n = order[t]
        u = users[n]
        i = items[n]
        pred = mu + U[u, k] + V[i, k]
        for f in range(k):
            pred += U[u, f] * V[i, f]
        e = ratings[n] - pred
        sse += e * e
        if rule == RULE_ADAGRAD:
            su = eta / math.sqrt(U[u, k + 1])
            si = eta / math.sqrt(V[i, k + 1])
        else:
            su = eta
            si = eta
        gu2 = 0.0
        gi2 = 0.0
        for f in range(k):
            p = U[u, f]
            q = V[i, f]
            gp = reg_f * p - e * q
            gq = reg_f * q - e * p
            U[u, f] = p - su * gp
            V[i, f] = q - si * gq
            gu2 += gp * gp
            gi2 += gq * gq
        U[u, k] -= su * (reg_b * U[u, k] - e)
        V[i, k] -= si * (reg_b * V[i, k] - e)
        if rule == RULE_ADAGRAD and k > 0:
            U[u, k + 1] += gu2 / k
            V[i, k + 1] += gi2 / k
    return sse


@njit(nogil=True, cache=True, error_model="numpy",
      fastmath={"reassoc", "contract", "nsz", "arcp"})
def _amsgrad_ratings(users, items, ratings, order, U, V, mu, eta, reg_f, reg_b, beta1,
                     beta2, eps):
    """``RULE_AMSGRAD`` of :func:`sgd_ratings`: rows ``[x (k+1), G, m, v, vhat, t]``."""
    k = (U.shape[1] - 6) // 4
    oc = U.shape[1] - 1  # the row's step count
    om = k + 2  # first column of m; v at om + k + 1, vhat at om + 2 (k + 1)
    ov = om + k + 1
    oh = ov + k + 1
    sse = 0.0
    for t in range(order.shape[0]):
        n = order[t]
        u = users[n]
        i = items[n]
        pred = mu + U[u, k] + V[i, k]
        for f in range(k):
            pred += U[u, f] * V[i, f]
        e = ratings[n] - pred
        sse += e * e
        tu = U[u, oc] + 1.0
        ti = V[i, oc] + 1.0
        U[u, oc] = tu
        V[i, oc] = ti
        # per-row bias correction: eta sqrt(1 - b2^t) / (1 - b1^t) (the scale of
        # PyTorch's amsgrad), eps scaled with it
        su = eta * math.sqrt(1.0 - beta2 ** tu) / (1.0 - beta1 ** tu)
        si = eta * math.sqrt(1.0 - beta2 ** ti) / (1.0 - beta1 ** ti)
        eu = eps * math.sqrt(1.0 - beta2 ** tu)
        ei = eps * math.sqrt(1.0 - beta2 ** ti)
        for f in range(k + 1):  # f == k: the biases
            p = U[u, f]
            q = V[i, f]
            if f < k:
                gp = reg_f * p - e * q
                gq = reg_f * q - e * p
            else:
                gp = reg_b * p - e
                gq = reg_b * q - e
            mp = beta1 * U[u, om + f] + (1.0 - beta1) * gp
            vp = beta2 * U[u, ov + f] + (1.0 - beta2) * gp * gp
            hp = max(U[u, oh + f], vp)
            mq = beta1 * V[i, om + f] + (1.0 - beta1) * gq
            vq = beta2 * V[i, ov + f] + (1.0 - beta2) * gq * gq
            hq = max(V[i, oh + f], vq)
            U[u, om + f] = mp
            U[u, ov + f] = vp
            U[u, oh + f] = hp
            V[i, om + f] = mq
            V[i, ov + f] = vq
            V[i, oh + f] = hq
            U[u, f] = p - su * mp / (math.sqrt(hp) + eu)
            V[i, f] = q - si * mq / (math.sqrt(hq) + ei)
    return sse


@njit(nogil=True, cache=True)
def predict_pairs(users, items, U, V, mu, out):
    """``out[n] = mu + b_u + c_i + <p_u, q_i>``; a negative id contributes nothing.

    An unknown user (``users[n] < 0``) still gets the item's bias and vice
    versa: the fallback of a cold start is the best part of the model known.
    """
    k = U.shape[1] - 2
    for n in range(users.shape[0]):
        u = users[n]
        i = items[n]
        pred = mu
        if u >= 0:
            pred += U[u, k]
        if i >= 0:
            pred += V[i, k]
        if u >= 0 and i >= 0:
            for f in range(k):
                pred += U[u, f] * V[i, f]
        out[n] = pred
    return out


@njit(nogil=True, cache=True)
def squared_error_sum(users, items, ratings, U, V, mu):
    """Sum of squared errors of the current model over the given ratings."""
    out = np.empty(users.shape[0])
    predict_pairs(users, items, U, V, mu, out)
    total = 0.0
    for n in range(users.shape[0]):
        d = ratings[n] - out[n]
        total += d * d
    return total
