"""Numba kernels of the worker loops: the hot loops, pure functions over NumPy arrays.

Nothing here knows about Dask.  **Sweeps** (:func:`sweep_csr`,
:func:`sweep_dense`) run per-sample SGD on the smooth loss over a chunk of
rows, applied to a compact local copy ``w`` of the coordinates the chunk
touches.  The caller pushes the difference to the parameter store, which
applies the penalty's proximal map (:mod:`.lazy`).  Each sweep also returns
the loss of every sample *before* its update (progressive validation loss)
and the composition ``(D, S)`` of the chunk's per-sample prox maps (see
:mod:`dask_asyncopt.objective.penalties`).  The **variance-reduced** sweeps
and their snapshot passes apply the prox themselves (below).

Weights are ``(n_coordinates, n_outputs)`` row-major so that the ``K`` outputs
of one feature (one-vs-rest classes) are contiguous.
"""


from numba import njit

from ..objective.losses import loss_and_derivative, loss_derivative, loss_value
from ..objective.penalties import compose, prox_scaled
from ..objective.schedules import step_size

# Layout of the float ``params`` vector shared by the sweeps.
P_ETA0, P_ALPHA, P_L1_RATIO, P_T0, P_POWER_T, P_EPSILON, P_INTERCEPT_DECAY = range(7)
N_PARAMS = 7

# As scikit-learn's SGD: a bounded derivative turns the exponential blow-up of
# a too-large step on unscaled data into bounded growth.
MAX_DLOSS = 1e12


@njit(nogil=True, cache=True)
def clip(dloss):
    return min(max(dloss, -MAX_DLOSS), MAX_DLOSS)


# The row kernels below loop over outputs outermost and keep a row's
# prediction and derivative in scalars: accumulated in an array element
# instead, every term is a store LLVM must assume may alias the weights, which
# slowed the SVRG sweep and snapshot down.  Outputs are independent
# (one-vs-rest), so the order changes nothing.
@njit(nogil=True, cache=True)
def dot_csr(indices, data, start, end, w, k, intercept):
    """``x_r . w[:, k]`` for the CSR row ``start:end``, plus ``w[intercept, k]``."""
    p = w[intercept, k] if intercept >= 0 else 0.0
    for jj in range(start, end):
        p += w[indices[jj], k] * data[jj]
    return p


@njit(nogil=True, cache=True)
def dot_norm_csr(indices, data, start, end, w, intercept, c_col):
    """:func:`_dot_csr` for output 0 and, in the same pass (the same cache lines),
    the row's squared norm weighted by column ``c_col`` of ``w``."""
    p = 0.0
    norm = 0.0
    if intercept >= 0:
        p = w[intercept, 0]
        norm = w[intercept, c_col]
    for jj in range(start, end):
        j = indices[jj]
        x = data[jj]
        p += w[j, 0] * x
        norm += w[j, c_col] * x * x
    return p, norm


@njit(nogil=True, cache=True)
def dot_dense(X, r, w, k, p):
    """``p + X[r] . w[:, k]``."""
    for j in range(X.shape[1]):
        p += w[j, k] * X[r, j]
    return p


@njit(nogil=True, cache=True)
def sweep_csr(indptr, indices, data, Y, W, rows, w, intercept, loss, schedule, params,
              t_start, t_stride):
    """Per-sample SGD over CSR ``rows`` on the local weights ``w`` (in place).

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the chunk; ``indices`` index ``w``.
    Y : (n_rows, K) float64 targets (``+-1`` per output for classification).
    W : (n_rows, K) float64 sample weights, or shape (0, 0): all 1.  A row's loss
        and derivative are multiplied by its weight (scikit-learn's
        ``sample_weight`` times ``class_weight``).
    rows : int64 array, the order in which rows are visited.
    w : (n_local, K) float64, updated in place.
    intercept : local index of the intercept coordinate in ``w`` or ``-1``.
    loss, schedule : integer codes (:mod:`.losses`, :mod:`.schedules`).
    params : float64 vector, see ``P_*`` constants.
    t_start, t_stride : the global sample counter of the first row and its
        increment per row (the number of workers advancing it concurrently).

    Returns
    -------
    loss_sum, prox_d, prox_s : float
        Sum of sample losses before each update, and the prox composition.
    """
    eta0 = params[P_ETA0]
    alpha = params[P_ALPHA]
    l1_ratio = params[P_L1_RATIO]
    t0 = params[P_T0]
    power_t = params[P_POWER_T]
    epsilon = params[P_EPSILON]
    intercept_decay = params[P_INTERCEPT_DECAY]
    loss_sum = 0.0
    prox_d = 1.0
    prox_s = 0.0
    t = t_start
    weighted = W.shape[0] > 0
    for r in rows:
        eta = step_size(schedule, eta0, alpha, t0, power_t, t)
        start = indptr[r]
        end = indptr[r + 1]
        for k in range(w.shape[1]):
            p = dot_csr(indices, data, start, end, w, k, intercept)
            value, derivative = loss_and_derivative(loss, p, Y[r, k], epsilon)
            wt = W[r, k] if weighted else 1.0
            loss_sum += wt * value
            d = eta * wt * clip(derivative)
            for jj in range(start, end):
                w[indices[jj], k] -= d * data[jj]
            if intercept >= 0:
                w[intercept, k] -= intercept_decay * d
        prox_d, prox_s = compose(prox_d, prox_s, eta, alpha, l1_ratio)
        t += t_stride
    return loss_sum, prox_d, prox_s


@njit(nogil=True, cache=True)
def sweep_dense(X, Y, W, rows, w, intercept, loss, schedule, params, t_start, t_stride):
    """Dense-row counterpart of :func:`sweep_csr`; column ``j`` of ``X`` is ``w[j]``."""
    eta0 = params[P_ETA0]
    alpha = params[P_ALPHA]
    l1_ratio = params[P_L1_RATIO]
    t0 = params[P_T0]
    power_t = params[P_POWER_T]
    epsilon = params[P_EPSILON]
    intercept_decay = params[P_INTERCEPT_DECAY]
    loss_sum = 0.0
    prox_d = 1.0
    prox_s = 0.0
    t = t_start
    weighted = W.shape[0] > 0
    for r in rows:
        eta = step_size(schedule, eta0, alpha, t0, power_t, t)
        for k in range(w.shape[1]):
            p = dot_dense(X, r, w, k, w[intercept, k] if intercept >= 0 else 0.0)
            value, derivative = loss_and_derivative(loss, p, Y[r, k], epsilon)
            wt = W[r, k] if weighted else 1.0
            loss_sum += wt * value
            d = eta * wt * clip(derivative)
            for j in range(X.shape[1]):
                w[j, k] -= d * X[r, j]
            if intercept >= 0:
                w[intercept, k] -= intercept_decay * d
        prox_d, prox_s = compose(prox_d, prox_s, eta, alpha, l1_ratio)
        t += t_stride
    return loss_sum, prox_d, prox_s


@njit(nogil=True, cache=True)
def subtract_finite(a, b, out):
    """``out = a - b`` (2-d arrays of one shape); returns whether every entry of
    ``out`` is finite.  One pass for a chunk's delta and its check instead of a
    NumPy subtraction and an :func:`all_finite` scan."""
    check = 0.0
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            v = a[i, k] - b[i, k]
            out[i, k] = v
            check += v * 0.0  # NaN as soon as one entry is NaN or infinite; no branch
    return check == 0.0


@njit(nogil=True, cache=True)
def all_finite(a):
    """Whether every entry of the 2-d array ``a`` (any strides) is finite, without
    the copy NumPy makes of a strided view."""
    check = 0.0
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            check += a[i, k] * 0.0  # NaN as soon as one entry is NaN or infinite
    return check == 0.0


@njit(nogil=True, cache=True)
def loss_sum_csr(indptr, indices, data, Y, W, coef, intercept, loss, epsilon):
    """Sum of (weighted, see :func:`sweep_csr`) losses of CSR rows for weights
    ``coef`` (n_local, K)."""
    n_outputs = coef.shape[1]
    weighted = W.shape[0] > 0
    total = 0.0
    for r in range(indptr.shape[0] - 1):
        for k in range(n_outputs):
            p = intercept[k]
            for jj in range(indptr[r], indptr[r + 1]):
                p += coef[indices[jj], k] * data[jj]
            wt = W[r, k] if weighted else 1.0
            total += wt * loss_value(loss, p, Y[r, k], epsilon)
    return total


@njit(nogil=True, cache=True)
def loss_sum_dense(X, Y, W, coef, intercept, loss, epsilon):
    """Sum of (weighted) losses of dense rows for weights ``coef`` (n_features, K)."""
    n_outputs = coef.shape[1]
    weighted = W.shape[0] > 0
    total = 0.0
    for r in range(X.shape[0]):
        for k in range(n_outputs):
            wt = W[r, k] if weighted else 1.0
            total += wt * loss_value(loss, dot_dense(X, r, coef, k, intercept[k]), Y[r, k],
                                     epsilon)
    return total


# ---------------------------------------------------------------------------
# Variance-reduced sweeps (sparse proximal SVRG).
#
# An outer iteration fixes a snapshot ``w~``; a pass over the data stores each
# row's loss derivative ``d~_r`` there and sums ``G_j = sum_r d~_r x_rj`` and
# the rows touching each coordinate, ``n_j``.  A step on row ``r`` then uses
#     v_j = (d_r - d~_r) x_rj + G_j / n_j           for j in the row's support
# and the proximal map of the penalty scaled by ``n / n_j``.  Averaged over
# rows, ``G_j / n_j`` contributes the full gradient ``G_j / n`` and the scaled
# penalty the full penalty, so every step stays sparse and unbiased without
# touching coordinates outside the row (the reweighting of Leblond, Pedregosa
# and Lacoste-Julien's ProxASAGA).  ``drift`` holds ``G_j / n_j`` and
# ``pen_scale`` holds ``n / n_j`` (0 for the unpenalised intercept).
#
# Steps are preconditioned per coordinate by ``c_j = 1 / sqrt(sum_r x_rj^2)``
# and normalised per row (see :func:`sweep_csr_svrg`).  A single step
# ``1 / (L max_r |x_r|^2)`` moves a coordinate that appears in few rows by a
# ``1 / (row length)`` share of its error per appearance: on click-through-like
# data (Zipf-distributed binary features) it left the default fit far above the
# optimum, which the preconditioned step reaches (docs/design.md gives the
# measurements).
# ---------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def snapshot_csr(indptr, indices, data, Y, W, wg, intercept, loss, epsilon, dsnap,
                 at_zero=False):
    """Loss derivatives and gradient sum of CSR rows at the snapshot weights.

    Parameters
    ----------
    indptr, indices, data : CSR arrays; ``indices`` index ``wg``.
    Y : (n_rows, K) targets.
    wg : (n_local, 2K): columns ``:K`` the snapshot weights (not modified; not
        read when ``at_zero``, the snapshot at ``w = 0`` of a cold start: no
        random reads of ``w``, a large part of the pass), columns ``K:`` the
        gradient sum ``sum_r dsnap[r] x_r``, accumulated in place.  Side by
        side, a non-zero's read and update touch one cache line instead of
        two.
    intercept : local index of the intercept in ``wg`` or ``-1``.
    loss : int, epsilon : float
    dsnap : (n_rows, K) output, derivative of each row's loss at ``w``.

    Returns
    -------
    loss_sum, max_sq_norm : float
        Sum of the rows' losses at ``w`` and the largest squared row norm.
    """
    n_outputs = wg.shape[1] // 2
    weighted = W.shape[0] > 0
    loss_sum = 0.0
    max_sq_norm = 0.0
    for r in range(indptr.shape[0] - 1):
        start = indptr[r]
        end = indptr[r + 1]
        sq_norm = 0.0
        for jj in range(start, end):
            sq_norm += data[jj] * data[jj]
        max_sq_norm = max(max_sq_norm, sq_norm)
        for k in range(n_outputs):
            p = 0.0 if at_zero else dot_csr(indices, data, start, end, wg, k, intercept)
            value, derivative = loss_and_derivative(loss, p, Y[r, k], epsilon)
            wt = W[r, k] if weighted else 1.0
            loss_sum += wt * value
            d = wt * clip(derivative)
            dsnap[r, k] = d
            for jj in range(start, end):
                wg[indices[jj], n_outputs + k] += d * data[jj]
            if intercept >= 0:
                wg[intercept, n_outputs + k] += d
    return loss_sum, max_sq_norm


@njit(nogil=True, cache=True)
def snapshot_dense(X, Y, W, wg, loss, epsilon, dsnap):
    """Dense-row counterpart of :func:`snapshot_csr` (the intercept is a column of ``X``)."""
    n_outputs = wg.shape[1] // 2
    weighted = W.shape[0] > 0
    loss_sum = 0.0
    max_sq_norm = 0.0
    for r in range(X.shape[0]):
        sq_norm = 0.0
        for j in range(X.shape[1]):
            sq_norm += X[r, j] * X[r, j]
        max_sq_norm = max(max_sq_norm, sq_norm)
        for k in range(n_outputs):
            value, derivative = loss_and_derivative(loss, dot_dense(X, r, wg, k, 0.0),
                                                    Y[r, k], epsilon)
            wt = W[r, k] if weighted else 1.0
            loss_sum += wt * value
            d = wt * clip(derivative)
            dsnap[r, k] = d
            for j in range(X.shape[1]):
                wg[j, n_outputs + k] += d * X[r, j]
    return loss_sum, max_sq_norm


@njit(nogil=True, cache=True)
def _heaviest(W, r, weighted, w_floor):
    """How much a weighted row's normalised step shrinks: by its largest weight,
    but never below ``w_floor`` (the shard's mean of that largest weight).

    A row of weight ``w`` has ``w`` times the curvature: its own step must be
    ``w`` times shorter to stay stable; a row lighter than the mean keeps the
    mean's step (dividing by a tiny weight would blow up the full-gradient
    term every step carries).  Uniform weights ``c`` thus take an unweighted
    fit's step per unit of curvature.
    """
    if not weighted:
        return 1.0
    heaviest = W[r, 0]
    for k in range(1, W.shape[1]):
        heaviest = max(heaviest, W[r, k])
    return max(heaviest, w_floor)


@njit(nogil=True, cache=True)
def _row_unit(eta, norm, normalise):
    """A row's step per unit of preconditioner: ``eta / norm`` (normalised; an
    empty row takes none) or ``eta``."""
    if not normalise:
        return eta
    return eta / norm if norm > 0.0 else 0.0


@njit(nogil=True, cache=True)
def sweep_csr_svrg(indptr, indices, data, Y, W, rows, packed, intercept, dsnap, loss,
                   epsilon, eta, alpha, l1_ratio, with_loss, normalise=True, w_floor=1.0):
    """Sparse proximal SVRG steps over CSR ``rows`` on the local weights (in place).

    ``packed`` is ``(n_local, 2K + 2)``: columns ``:K`` the weights (updated),
    ``K:2K`` the drift, ``2K`` the penalty scale and ``2K + 1`` the
    preconditioner ``c_j`` of each local coordinate.  Keeping a coordinate's
    values side by side makes a step touch one cache line instead of several;
    with two loops sharing a core's caches that is what keeps the kernel
    scaling (measured).  ``dsnap`` comes from :func:`snapshot_csr` on the same
    rows.  The intercept (local index ``intercept``) takes the variance-reduced
    step without penalty.  ``W`` (``(0, 0)``: unweighted) multiplies each
    row's loss; a weighted row's step shrinks by its weight (see
    :func:`_heaviest`, ``w_floor``).

    Step of coordinate ``j`` on row ``r``: ``c_j eta / sum_i(c_i x_ri^2)`` with
    ``normalise`` (the intercept counting ``x = 1``): each row's step is
    ``eta`` in the metric ``diag(c)``, so ``eta <= 1 / L`` keeps every row
    stable, however unequal the rows' norms (the solvers take ``1 / (2L)``), and ``c`` (see
    ``BlockServer.finish_snapshot``) lets rare coordinates move further than
    the most frequent ones.  The optimum stays a fixed point for any positive
    steps (the variance-reduced gradient equals the full one there).  Without
    ``normalise``: ``c_j eta`` (``c = 1``: a user's constant step).

    Returns
    -------
    loss_sum : float
        Sum of the rows' losses before their steps (progressive loss) when
        ``with_loss``, else 0: the solvers take the exact loss from the
        snapshot pass, and the loss's logarithm is a visible share of a sweep.
    """
    n_outputs = (packed.shape[1] - 2) // 2
    scale_col = 2 * n_outputs
    c_col = scale_col + 1
    weighted = W.shape[0] > 0
    loss_sum = 0.0
    for r in rows:
        start = indptr[r]
        end = indptr[r + 1]
        p, norm = dot_norm_csr(indices, data, start, end, packed, intercept, c_col)
        unit = _row_unit(eta, norm * _heaviest(W, r, weighted, w_floor), normalise)
        for k in range(n_outputs):
            if k > 0:
                p = dot_csr(indices, data, start, end, packed, k, intercept)
            wt = W[r, k] if weighted else 1.0
            d = wt * clip(loss_derivative(loss, p, Y[r, k], epsilon)) - dsnap[r, k]
            if with_loss:
                loss_sum += wt * loss_value(loss, p, Y[r, k], epsilon)
            for jj in range(start, end):
                j = indices[jj]
                step = unit * packed[j, c_col]
                v = packed[j, k] - step * (d * data[jj] + packed[j, n_outputs + k])
                packed[j, k] = prox_scaled(v, step * alpha, l1_ratio, packed[j, scale_col])
            if intercept >= 0:
                step = unit * packed[intercept, c_col]
                packed[intercept, k] -= step * (d + packed[intercept, n_outputs + k])
    return loss_sum


@njit(nogil=True, cache=True)
def sweep_dense_svrg(X, Y, W, rows, packed, dsnap, loss, epsilon, eta, alpha, l1_ratio,
                     with_loss, normalise=True, w_floor=1.0):
    """Dense-row counterpart of :func:`sweep_csr_svrg`: a row touches the columns
    where it is non-zero, as if it were stored sparse (its zeros take no step:
    the drift and penalty scale are reweighted by the non-zero counts, see
    ``solvers.loop.row_counts``); the intercept, when fitted, is a column of
    ones with penalty scale 0."""
    n_outputs = (packed.shape[1] - 2) // 2
    scale_col = 2 * n_outputs
    c_col = scale_col + 1
    weighted = W.shape[0] > 0
    loss_sum = 0.0
    for r in rows:
        norm = 0.0
        for j in range(X.shape[1]):
            norm += packed[j, c_col] * X[r, j] * X[r, j]
        unit = _row_unit(eta, norm * _heaviest(W, r, weighted, w_floor), normalise)
        for k in range(n_outputs):
            p = dot_dense(X, r, packed, k, 0.0)
            wt = W[r, k] if weighted else 1.0
            d = wt * clip(loss_derivative(loss, p, Y[r, k], epsilon)) - dsnap[r, k]
            if with_loss:
                loss_sum += wt * loss_value(loss, p, Y[r, k], epsilon)
            for j in range(X.shape[1]):
                if X[r, j] == 0.0:
                    continue
                step = unit * packed[j, c_col]
                v = packed[j, k] - step * (d * X[r, j] + packed[j, n_outputs + k])
                packed[j, k] = prox_scaled(v, step * alpha, l1_ratio, packed[j, scale_col])
    return loss_sum
