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
"""

import math

import numpy as np
from numba import njit

RULE_SGD, RULE_ADAGRAD = 0, 1


# Reassociation lets LLVM vectorise the dot product and the gradient-norm sums
# (1.5-1.8x measured); no "nnan"/"ninf": non-finite values must propagate to
# the caller's finiteness check.  error_model="numpy": no zero-division checks
# in the inner loop (G >= 1 and k >= 1 by construction).
@njit(nogil=True, cache=True, error_model="numpy",
      fastmath={"reassoc", "contract", "nsz", "arcp"})
def sgd_ratings(users, items, ratings, order, U, V, mu, eta, reg_f, reg_b, rule):
    """Per-rating SGD over ``ratings[order]``, in place on ``U`` and ``V``.

    Parameters
    ----------
    users, items : int32/int64 arrays of shape (n,)
        Local row of each rating in ``U`` and ``V``.
    ratings : float64 array of shape (n,)
    order : int64 array
        The ratings to visit, in this order.
    U, V : float64 arrays of shape (n_users_local, k + 2), (n_items_local, k + 2)
        Packed rows ``[factors, bias, G]``; updated in place.
    mu : float
        Global mean (fixed).
    eta, reg_f, reg_b : float
        Step, L2 strength of factors and of biases (per rating).
    rule : int
        ``RULE_SGD`` or ``RULE_ADAGRAD``.

    Returns
    -------
    sse : float
        Sum of squared errors of each rating *before* its update
        (progressive validation).
    """
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
