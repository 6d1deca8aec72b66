"""Matrix factorisation's Numba kernels (``kernels/factors.py``) against plain NumPy
references written out here."""

import numpy as np
import pytest

from dask_asyncopt.kernels.factors import (
    RULE_ADAGRAD,
    RULE_AMSGRAD,
    RULE_SGD,
    n_factors_of,
    predict_pairs,
    row_width,
    sgd_ratings,
    squared_error_sum,
)

from ..reference import ref_sgd


def random_problem(seed, n=400, n_users=30, n_items=20, k=5):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n).astype(np.int32)
    items = rng.integers(0, n_items, n).astype(np.int32)
    ratings = rng.normal(3.0, 1.0, n)
    U = np.zeros((n_users, k + 2))
    V = np.zeros((n_items, k + 2))
    U[:, :k + 1] = rng.normal(scale=0.3, size=(n_users, k + 1))
    V[:, :k + 1] = rng.normal(scale=0.3, size=(n_items, k + 1))
    U[:, k + 1] = rng.uniform(1, 3, n_users)
    V[:, k + 1] = rng.uniform(1, 3, n_items)
    order = rng.permutation(n).astype(np.int64)
    return users, items, ratings, order, U, V


@pytest.mark.parametrize("rule", [RULE_SGD, RULE_ADAGRAD])
def test_sgd_ratings_matches_reference(rule):
    users, items, ratings, order, U, V = random_problem(0)
    sse_ref, U_ref, V_ref = ref_sgd(users, items, ratings, order, U, V, 2.9, 0.05, 0.03,
                                    0.02, rule == RULE_ADAGRAD)
    sse = sgd_ratings(users, items, ratings, order, U, V, 2.9, 0.05, 0.03, 0.02, rule)
    assert sse == pytest.approx(sse_ref, rel=1e-10)
    np.testing.assert_allclose(U, U_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(V, V_ref, rtol=1e-9, atol=1e-12)


def test_sgd_ratings_visits_only_order_and_leaves_g_alone_without_adagrad():
    users, items, ratings, order, U, V = random_problem(1)
    sub = order[:50]
    U0, V0 = U.copy(), V.copy()
    sgd_ratings(users, items, ratings, sub, U, V, 3.0, 0.05, 0.0, 0.0, RULE_SGD)
    untouched_u = np.setdiff1d(np.arange(U.shape[0]), users[sub])
    np.testing.assert_array_equal(U[untouched_u], U0[untouched_u])
    np.testing.assert_array_equal(U[:, -1], U0[:, -1])  # G unchanged by plain SGD
    np.testing.assert_array_equal(V[:, -1], V0[:, -1])


def test_sgd_ratings_reduces_training_error():
    users, items, _, order, U, V = random_problem(2, n=2000)
    rng = np.random.default_rng(5)
    ratings = 3.0 + rng.normal(size=30)[users] + rng.normal(size=20)[items]
    first = sgd_ratings(users, items, ratings, order, U, V, ratings.mean(), 0.05, 0.01,
                        0.01, RULE_ADAGRAD)
    for _ in range(20):
        last = sgd_ratings(users, items, ratings, order, U, V, ratings.mean(), 0.05, 0.01,
                           0.01, RULE_ADAGRAD)
    assert last < 0.7 * first


def test_predict_pairs_and_unknown_fallback():
    _, _, _, _, U, V = random_problem(3)
    k = U.shape[1] - 2
    users = np.array([0, 5, -1, 7, -1])
    items = np.array([1, -1, 4, 2, -1])
    out = predict_pairs(users, items, U, V, 3.2, np.empty(5))
    expected = [3.2 + U[0, k] + V[1, k] + U[0, :k] @ V[1, :k],
                3.2 + U[5, k],          # unknown item: user bias only
                3.2 + V[4, k],          # unknown user: item bias only
                3.2 + U[7, k] + V[2, k] + U[7, :k] @ V[2, :k],
                3.2]                    # both unknown: the global mean
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_squared_error_sum_matches_numpy():
    users, items, ratings, _, U, V = random_problem(4)
    k = U.shape[1] - 2
    pred = 3.0 + U[users, k] + V[items, k] + np.einsum("nk,nk->n", U[users, :k],
                                                        V[items, :k])
    assert squared_error_sum(users, items, ratings, U, V, 3.0) == pytest.approx(
        ((ratings - pred) ** 2).sum(), rel=1e-12)


def ref_amsgrad(users, items, ratings, order, U, V, mu, eta, reg_f, reg_b, b1, b2, eps):
    """Per-rating AMSGrad, written out in NumPy with explicit state arrays.

    The state of each row is held in separate arrays here (not packed), with
    its own step count: the kernel must match the documented formula.
    """
    k = n_factors_of(U.shape[1], RULE_AMSGRAD)
    X = {"u": U[:, :k + 1].copy(), "i": V[:, :k + 1].copy()}
    m = {"u": U[:, k + 2:2 * k + 3].copy(), "i": V[:, k + 2:2 * k + 3].copy()}
    v = {"u": U[:, 2 * k + 3:3 * k + 4].copy(), "i": V[:, 2 * k + 3:3 * k + 4].copy()}
    h = {"u": U[:, 3 * k + 4:4 * k + 5].copy(), "i": V[:, 3 * k + 4:4 * k + 5].copy()}
    t = {"u": U[:, -1].copy(), "i": V[:, -1].copy()}
    sse = 0.0
    for n in order:
        rows = {"u": users[n], "i": items[n]}
        xu, xi = X["u"][rows["u"]].copy(), X["i"][rows["i"]].copy()
        e = ratings[n] - (mu + xu[k] + xi[k] + xu[:k] @ xi[:k])
        sse += e * e
        reg = np.r_[np.full(k, reg_f), reg_b]
        grads = {"u": reg * xu - e * np.r_[xi[:k], 1.0],
                 "i": reg * xi - e * np.r_[xu[:k], 1.0]}
        for side in ("u", "i"):
            r, g = rows[side], grads[side]
            t[side][r] += 1
            m[side][r] = b1 * m[side][r] + (1 - b1) * g
            v[side][r] = b2 * v[side][r] + (1 - b2) * g * g
            h[side][r] = np.maximum(h[side][r], v[side][r])
            c1, c2 = 1 - b1 ** t[side][r], 1 - b2 ** t[side][r]
            # PyTorch's amsgrad: lr / c1 * m / (sqrt(vhat) / sqrt(c2) + eps)
            X[side][r] -= eta / c1 * m[side][r] / (np.sqrt(h[side][r]) / np.sqrt(c2) + eps)
    out = []
    for side, W in (("u", U), ("i", V)):
        W = W.copy()
        W[:, :k + 1], W[:, k + 2:2 * k + 3] = X[side], m[side]
        W[:, 2 * k + 3:3 * k + 4], W[:, 3 * k + 4:4 * k + 5] = v[side], h[side]
        W[:, -1] = t[side]
        out.append(W)
    return sse, out[0], out[1]


def amsgrad_problem(seed, n=60, k=4):
    """A few ratings on few rows (rows are hit repeatedly), with non-trivial state."""
    users, items, ratings, order, U0, V0 = random_problem(seed, n=n, n_users=6,
                                                          n_items=5, k=k)
    rng = np.random.default_rng(seed + 100)
    w = row_width(k, RULE_AMSGRAD)
    assert w == 4 * k + 6 and n_factors_of(w, RULE_AMSGRAD) == k
    U, V = np.zeros((6, w)), np.zeros((5, w))
    for W, W0 in ((U, U0), (V, V0)):
        W[:, :k + 2] = W0
        W[:, k + 2:2 * k + 3] = rng.normal(scale=0.1, size=(W.shape[0], k + 1))
        W[:, 2 * k + 3:3 * k + 4] = rng.uniform(0, 0.05, (W.shape[0], k + 1))
        W[:, 3 * k + 4:4 * k + 5] = W[:, 2 * k + 3:3 * k + 4] * rng.uniform(
            1, 2, (W.shape[0], k + 1))
        W[:, -1] = rng.integers(0, 5, W.shape[0])  # some rows fresh (t = 0)
    return users, items, ratings, order, U, V


@pytest.mark.parametrize("betas", [(0.9, 0.999, 1e-8), (0.5, 0.9, 1e-3)])
def test_amsgrad_ratings_match_numpy_reference(betas):
    users, items, ratings, order, U, V = amsgrad_problem(0)
    args = (users, items, ratings, order)
    sse_ref, U_ref, V_ref = ref_amsgrad(*args, U, V, 2.9, 0.01, 0.03, 0.02, *betas)
    U0, V0 = U.copy(), V.copy()
    sse = sgd_ratings(*args, U, V, 2.9, 0.01, 0.03, 0.02, RULE_AMSGRAD, *betas)
    assert sse == pytest.approx(sse_ref, rel=1e-10)
    np.testing.assert_allclose(U, U_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(V, V_ref, rtol=1e-9, atol=1e-12)
    k = n_factors_of(U.shape[1], RULE_AMSGRAD)
    np.testing.assert_array_equal(U[:, k + 1], U0[:, k + 1])  # G unused by amsgrad
    # every touched row counted one step per rating, untouched rows unchanged
    np.testing.assert_array_equal(U[:, -1] - U0[:, -1], np.bincount(users, minlength=6))
    np.testing.assert_array_equal(V[:, -1] - V0[:, -1], np.bincount(items, minlength=5))


def test_amsgrad_leaves_untouched_rows_alone_and_learns():
    users, items, _, order, U, V = random_problem(6, n=2000)
    k = U.shape[1] - 2
    w = row_width(k, RULE_AMSGRAD)
    Ua, Va = np.zeros((U.shape[0], w)), np.zeros((V.shape[0], w))
    Ua[:, :k + 1], Va[:, :k + 1] = U[:, :k + 1], V[:, :k + 1]
    rng = np.random.default_rng(7)
    ratings = 3.0 + rng.normal(size=30)[users] + rng.normal(size=20)[items]
    sub = order[users[order] != 0][:100]  # user 0 untouched
    before = Ua[0].copy()
    sgd_ratings(users, items, ratings, sub, Ua, Va, 3.0, 0.01, 0.01, 0.01, RULE_AMSGRAD)
    np.testing.assert_array_equal(Ua[0], before)
    first = sgd_ratings(users, items, ratings, order, Ua, Va, 3.0, 0.01, 0.01, 0.01,
                        RULE_AMSGRAD)
    for _ in range(20):
        last = sgd_ratings(users, items, ratings, order, Ua, Va, 3.0, 0.01, 0.01, 0.01,
                           RULE_AMSGRAD)
    assert last < 0.3 * first
