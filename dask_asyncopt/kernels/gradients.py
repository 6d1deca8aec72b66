"""Numba kernels of the gradient exchanges: minibatch gradients at pulled weights.

A worker loop of an update rule (:mod:`dask_asyncopt.objective.rules`) pulls the
coordinates a chunk of rows touches, cuts the chunk into minibatches and
computes every minibatch's gradient at those (stale) weights; the owners of
the parameters apply them in order.  The output is packed as the rules take
it: step ``s`` is entries ``ptr[s]:ptr[s + 1]`` of ``idx`` (local coordinates,
sorted), ``g`` (gradient sums over the minibatch's rows) and ``pen`` (reweighting
sums: rows touching the coordinate times ``pen_scale``, its ``n / n_j``).

With ``vr`` the gradients are the variance-reduced ones of sparse proximal
SVRG (see :mod:`dask_asyncopt.kernels.sweeps`): each row contributes
``(d_r - d~_r) x_rj + drift_j`` on its non-zeros.
"""

import numpy as np
from numba import njit

from ..objective.losses import loss_derivative, loss_value
from .sweeps import clip, dot_csr, dot_dense


@njit(nogil=True, cache=True)
def minibatch_grads_csr(indptr, indices, data, Y, W, rows, w, intercept, loss, epsilon,
                        batch, vr, dsnap, drift, pen_scale, out_ptr, out_idx, out_g, out_pen,
                        out_rows):
    """Gradient sums of consecutive minibatches of ``rows`` (CSR) at ``w``.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the chunk; ``indices`` index ``w``.
    Y : (n_rows, K) targets.
    W : (n_rows, K) sample weights, or shape (0, 0): all 1.
    rows : int64 array, the rows in visiting order; minibatch ``s`` is
        ``rows[s * batch:(s + 1) * batch]``.
    w : (n_local, K) weights (not modified).
    intercept : local index of the intercept in ``w`` or ``-1``.
    loss : int, epsilon : float
    batch : int, rows per minibatch.
    vr : bool, variance-reduced gradients (``dsnap``, ``drift`` used).
    dsnap : (n_rows, K), drift : (n_local, K), pen_scale : (n_local,)
    out_ptr : (n_steps + 1,) int64, out_idx : (>= nnz + n_steps,) int64,
    out_g : (>= nnz + n_steps, K), out_pen : (>= nnz + n_steps,),
    out_rows : (n_steps,) int64 -- outputs.

    Returns
    -------
    loss_sum : float
        Sum of the rows' losses at ``w``.
    """
    n_local = w.shape[0]
    n_outputs = w.shape[1]
    weighted = W.shape[0] > 0
    acc = np.zeros((n_local, n_outputs))
    cnt = np.zeros(n_local, dtype=np.int64)
    touched = np.empty(n_local, dtype=np.int64)
    g = np.empty(n_outputs)
    n_rows = rows.shape[0]
    n_steps = (n_rows + batch - 1) // batch
    pos = 0
    loss_sum = 0.0
    out_ptr[0] = 0
    for s in range(n_steps):
        lo = s * batch
        hi = min(lo + batch, n_rows)
        nt = 0
        for q in range(lo, hi):
            r = rows[q]
            for k in range(n_outputs):
                p = dot_csr(indices, data, indptr[r], indptr[r + 1], w, k, intercept)
                wt = W[r, k] if weighted else 1.0
                loss_sum += wt * loss_value(loss, p, Y[r, k], epsilon)
                d = wt * clip(loss_derivative(loss, p, Y[r, k], epsilon))
                g[k] = d - dsnap[r, k] if vr else d
            for jj in range(indptr[r], indptr[r + 1]):
                j = indices[jj]
                if cnt[j] == 0:
                    touched[nt] = j
                    nt += 1
                cnt[j] += 1
                for k in range(n_outputs):
                    acc[j, k] += g[k] * data[jj]
            if intercept >= 0:
                if cnt[intercept] == 0:
                    touched[nt] = intercept
                    nt += 1
                cnt[intercept] += 1
                for k in range(n_outputs):
                    acc[intercept, k] += g[k]
        ids = np.sort(touched[:nt])
        for i in range(nt):
            j = ids[i]
            out_idx[pos] = j
            c = cnt[j]
            for k in range(n_outputs):
                out_g[pos, k] = acc[j, k] + c * drift[j, k] if vr else acc[j, k]
                acc[j, k] = 0.0
            out_pen[pos] = c * pen_scale[j]
            cnt[j] = 0
            pos += 1
        out_ptr[s + 1] = pos
        out_rows[s] = hi - lo
    return loss_sum


@njit(nogil=True, cache=True)
def minibatch_grads_dense(X, Y, W, rows, w, loss, epsilon, batch, vr, dsnap, drift,
                          pen_scale, out_g, out_pen, out_rows):
    """Dense-row counterpart of :func:`minibatch_grads_csr`: step ``s`` is rows
    ``s * n_local:(s + 1) * n_local`` of ``out_g`` and ``out_pen`` (the intercept
    is a column of ``X``).  A row touches the coordinates where it is non-zero,
    as the same row stored sparse does: ``c`` in the drift and reweighting
    counts those rows (``pen = 0``, a step that skips the coordinate, where
    none is)."""
    n_local = w.shape[0]
    n_outputs = w.shape[1]
    weighted = W.shape[0] > 0
    g = np.empty(n_outputs)
    touching = np.zeros(n_local)
    n_rows = rows.shape[0]
    n_steps = (n_rows + batch - 1) // batch
    loss_sum = 0.0
    for s in range(n_steps):
        lo = s * batch
        hi = min(lo + batch, n_rows)
        base = s * n_local
        for j in range(n_local):
            touching[j] = 0.0
            for k in range(n_outputs):
                out_g[base + j, k] = 0.0
        for q in range(lo, hi):
            r = rows[q]
            for k in range(n_outputs):
                p = dot_dense(X, r, w, k, 0.0)
                wt = W[r, k] if weighted else 1.0
                loss_sum += wt * loss_value(loss, p, Y[r, k], epsilon)
                d = wt * clip(loss_derivative(loss, p, Y[r, k], epsilon))
                g[k] = d - dsnap[r, k] if vr else d
            for j in range(n_local):
                x = X[r, j]
                if x != 0.0:
                    touching[j] += 1.0
                    for k in range(n_outputs):
                        out_g[base + j, k] += g[k] * x
        for j in range(n_local):
            c = touching[j]
            if vr:
                for k in range(n_outputs):
                    out_g[base + j, k] += c * drift[j, k]
            out_pen[base + j] = c * pen_scale[j]
        out_rows[s] = hi - lo
    return loss_sum
