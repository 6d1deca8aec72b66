"""Sample weights in the kernels: a row's weight multiplies its loss and its
derivative in every kernel (plain sweeps, snapshots, loss sums, minibatch
gradients), checked against NumPy re-derivations and against the unweighted
kernels they must reduce to."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt.data.shards import NO_WEIGHTS
from dask_asyncopt.kernels.gradients import minibatch_grads_csr
from dask_asyncopt.kernels.sweeps import (
    N_PARAMS,
    P_ETA0,
    loss_sum_csr,
    loss_sum_dense,
    snapshot_csr,
    sweep_csr,
    sweep_csr_svrg,
)
from dask_asyncopt.objective.losses import LOG_LOSS, SQUARED_ERROR
from dask_asyncopt.objective.schedules import CONSTANT


def _data(n=40, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.3, random_state=seed, format="csr")
    X.data = rng.normal(size=X.nnz)
    Y = np.where(rng.random((n, 1)) < 0.5, -1.0, 1.0)
    W = rng.uniform(0.0, 3.0, size=(n, 1))
    return X, Y, W


def test_weighted_loss_sums_match_numpy():
    X, Y, W = _data()
    coef = np.random.default_rng(1).normal(size=(X.shape[1], 1))
    icpt = np.array([0.3])
    p = X @ coef[:, 0] + icpt[0]
    want = np.sum(W[:, 0] * np.logaddexp(0.0, -Y[:, 0] * p))
    got = loss_sum_csr(X.indptr, X.indices, X.data, Y, W, coef, icpt, LOG_LOSS, 0.1)
    assert got == pytest.approx(want, rel=1e-12)
    dense = loss_sum_dense(X.toarray(), Y, W, coef, icpt, LOG_LOSS, 0.1)
    assert dense == pytest.approx(want, rel=1e-12)


def test_weighted_snapshot_gradient_matches_numpy():
    X, Y, W = _data(seed=2)
    d = X.shape[1]
    wg = np.zeros((d, 2))
    wg[:, 0] = np.random.default_rng(3).normal(size=d)
    dsnap = np.empty(Y.shape)
    loss, _ = snapshot_csr(X.indptr, X.indices, X.data, Y, W, wg, -1, SQUARED_ERROR, 0.1,
                           dsnap)
    r = X @ wg[:, 0] - Y[:, 0]
    np.testing.assert_allclose(dsnap[:, 0], W[:, 0] * r, rtol=1e-12)
    np.testing.assert_allclose(wg[:, 1], X.T @ (W[:, 0] * r), rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(np.sum(W[:, 0] * 0.5 * r * r), rel=1e-12)


def test_constant_weight_scales_plain_sgd_steps_like_eta0():
    """Weight ``c`` on every row with a constant step ``eta0`` and no penalty
    takes exactly the steps of the unweighted sweep with step ``c * eta0``."""
    X, Y, _ = _data(seed=4)
    rows = np.arange(X.shape[0], dtype=np.int64)
    params = np.zeros(N_PARAMS)
    params[P_ETA0] = 0.05
    w_weighted = np.zeros((X.shape[1], 1))
    sweep_csr(X.indptr, X.indices, X.data, Y, np.full(Y.shape, 2.0), rows, w_weighted, -1,
              LOG_LOSS, CONSTANT, params, 1.0, 1.0)
    params[P_ETA0] = 0.1
    w_plain = np.zeros((X.shape[1], 1))
    sweep_csr(X.indptr, X.indices, X.data, Y, NO_WEIGHTS, rows, w_plain, -1, LOG_LOSS,
              CONSTANT, params, 1.0, 1.0)
    np.testing.assert_allclose(w_weighted, w_plain, rtol=1e-12)


def test_unit_weights_are_bit_identical_to_no_weights():
    X, Y, _ = _data(seed=5)
    d = X.shape[1]
    rows = np.random.default_rng(0).permutation(X.shape[0]).astype(np.int64)
    dsnap = np.random.default_rng(1).normal(size=Y.shape)
    out = []
    for W in (NO_WEIGHTS, np.ones(Y.shape)):
        packed = np.zeros((d, 4))
        packed[:, 1] = 0.01
        packed[:, 2] = 1.0
        packed[:, 3] = 0.5
        sweep_csr_svrg(X.indptr, X.indices, X.data, Y, W, rows, packed, -1, dsnap, LOG_LOSS,
                       0.1, 0.25, 1e-3, 0.0, False, True, 1.0)
        out.append(packed[:, 0].copy())
    np.testing.assert_array_equal(out[0], out[1])


def test_heavy_row_takes_a_proportionally_shorter_normalised_step():
    """A row of weight 4 (above the floor 1) moves the weights by its weighted
    derivative times a step 4 times shorter: the same move as weight 1."""
    X = sp.csr_matrix(np.array([[1.0, 2.0]]))
    Y = np.array([[1.0]])
    rows = np.array([0], dtype=np.int64)
    moves = []
    for weight in (1.0, 4.0):
        packed = np.zeros((2, 4))
        packed[:, 2] = 1.0
        packed[:, 3] = 1.0
        sweep_csr_svrg(X.indptr, X.indices, X.data, Y, np.array([[weight]]), rows, packed,
                       -1, np.zeros((1, 1)), LOG_LOSS, 0.1, 0.25, 0.0, 0.0, False, True, 1.0)
        moves.append(packed[:, 0].copy())
    np.testing.assert_allclose(moves[0], moves[1], rtol=1e-12)


def test_weighted_minibatch_gradients_match_numpy():
    X, Y, W = _data(n=16, seed=6)
    d = X.shape[1]
    w = np.random.default_rng(7).normal(size=(d, 1))
    rows = np.arange(16, dtype=np.int64)
    batch = 8
    ptr = np.zeros(3, dtype=np.int64)
    idx = np.empty(2 * d, dtype=np.int64)
    g = np.empty((2 * d, 1))
    pen = np.empty(2 * d)
    out_rows = np.empty(2, dtype=np.int64)
    minibatch_grads_csr(X.indptr, X.indices, X.data, Y, W, rows, w, -1, LOG_LOSS, 0.1,
                        batch, False, np.zeros(Y.shape), np.zeros((d, 1)), np.zeros(d), ptr,
                        idx, g, pen, out_rows)
    p = X @ w[:, 0]
    dl = W[:, 0] * (-Y[:, 0] / (1.0 + np.exp(Y[:, 0] * p)))
    for s in range(2):
        want = X[s * batch:(s + 1) * batch].T @ dl[s * batch:(s + 1) * batch]
        touched = idx[ptr[s]:ptr[s + 1]]
        np.testing.assert_allclose(g[ptr[s]:ptr[s + 1], 0], want[touched], rtol=1e-10,
                                   atol=1e-14)
        assert np.count_nonzero(want) <= touched.size
