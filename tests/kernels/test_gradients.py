"""Numba kernels of the gradient exchanges (``kernels/gradients.py``): minibatch
gradient sums and penalty weights against NumPy written out here."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt.data.shards import NO_WEIGHTS
from dask_asyncopt.kernels.gradients import minibatch_grads_csr, minibatch_grads_dense
from dask_asyncopt.objective.losses import LOG_LOSS

from ..reference import logistic_derivative, ref_loss


@pytest.mark.parametrize("vr", [False, True])
def test_minibatch_grads_csr_equal_numpy(vr):
    rng = np.random.default_rng(3)
    n_rows, n_local, K, batch = 23, 15, 2, 5
    X = sp.random(n_rows, n_local - 1, density=0.2, format="csr", random_state=4)
    Y = np.where(rng.random((n_rows, K)) < 0.5, 1.0, -1.0)
    w = rng.normal(size=(n_local, K))
    icpt = n_local - 1
    rows = rng.permutation(n_rows).astype(np.int64)
    dsnap = rng.normal(size=(n_rows, K)) * 0.1
    drift = rng.normal(size=(n_local, K))
    pen_scale = rng.uniform(1, 4, size=n_local)
    n_steps = -(-n_rows // batch)
    size = X.nnz + n_steps
    ptr, idx = np.empty(n_steps + 1, dtype=np.int64), np.empty(size, dtype=np.int64)
    g, pen, out_rows = np.empty((size, K)), np.empty(size), np.empty(n_steps, dtype=np.int64)
    loss = minibatch_grads_csr(X.indptr, X.indices, X.data, Y, NO_WEIGHTS,
                               rows, w, icpt, LOG_LOSS, 0.1,
                               batch, vr, dsnap, drift, pen_scale, ptr, idx, g, pen, out_rows)
    Xd = np.hstack([X.toarray(), np.ones((n_rows, 1))])
    # the rows' losses at w (the progressive loss of the exchange)
    assert loss == pytest.approx(ref_loss("log_loss", Xd @ w, Y, 0.1).sum(), rel=1e-12)
    for s in range(n_steps):
        r = rows[s * batch:(s + 1) * batch]
        d = logistic_derivative(Xd[r] @ w, Y[r]) - (dsnap[r] if vr else 0.0)
        touches = (Xd[r] != 0).sum(axis=0)
        exp_ids = np.flatnonzero(touches)
        exp_g = (Xd[r].T @ d + (touches[:, None] * drift if vr else 0.0))[exp_ids]
        sl = slice(ptr[s], ptr[s + 1])
        np.testing.assert_array_equal(idx[sl], exp_ids)
        np.testing.assert_allclose(g[sl], exp_g, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(pen[sl], (touches * pen_scale)[exp_ids], rtol=1e-12)
        assert out_rows[s] == len(r)


def test_minibatch_grads_dense_equal_numpy():
    rng = np.random.default_rng(5)
    n_rows, n_local, K, batch = 17, 6, 1, 4
    X = rng.normal(size=(n_rows, n_local))
    Y = np.where(rng.random((n_rows, K)) < 0.5, 1.0, -1.0)
    w = rng.normal(size=(n_local, K))
    rows = rng.permutation(n_rows).astype(np.int64)
    dsnap = rng.normal(size=(n_rows, K)) * 0.1
    drift = rng.normal(size=(n_local, K))
    pen_scale = np.ones(n_local)
    n_steps = -(-n_rows // batch)
    g, pen = np.empty((n_steps * n_local, K)), np.empty(n_steps * n_local)
    out_rows = np.empty(n_steps, dtype=np.int64)
    loss = minibatch_grads_dense(X, Y, NO_WEIGHTS,
                                 rows, w, LOG_LOSS, 0.1, batch, True, dsnap, drift,
                                 pen_scale, g, pen, out_rows)
    assert loss == pytest.approx(ref_loss("log_loss", X @ w, Y, 0.1).sum(), rel=1e-12)
    for s in range(n_steps):
        r = rows[s * batch:(s + 1) * batch]
        d = logistic_derivative(X[r] @ w, Y[r]) - dsnap[r]
        np.testing.assert_allclose(g[s * n_local:(s + 1) * n_local],
                                   X[r].T @ d + len(r) * drift, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(pen[s * n_local:(s + 1) * n_local], len(r))
