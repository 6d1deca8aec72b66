"""AMSGrad for MF: step sweep, and lazy (touched rows only) vs exact dense decay.

Single process, no Dask (a stratified fit is serial SGD per epoch, see
``mf_design.py``), on the data of ``test_default_settings_reach_noise_floor_target``
(``make_ratings`` 2k x 1k, 100k ratings, rank 10, sigma 0.5, 90/10 split),
the estimator's other defaults (k=32, reg 0.04/0.05, init 0.01), 20 epochs.

* ``lazy``: the estimator's kernel (``RULE_AMSGRAD``): a rating updates the
  moments of its two rows only.
* ``exact``: dense AMSGrad over the whole model with one step per rating: every
  row not touched by a rating has zero gradient there, so its ``m`` and ``v``
  decay and momentum keeps moving it.  Done exactly and lazily with a global
  rating clock and each row's last step (the closed-form geometric catch-up of
  ``rules.py``: ``vhat`` is unchanged, ``x -= eta m b1 (1 - b1^d)/(1 - b1) /
  (sqrt(vhat) + eps)``), all rows caught up at the end of each epoch.

Run: ``python benchmarks/mf_amsgrad_lazy.py`` (about a minute).
"""

import math
import sys

import numpy as np
from numba import njit

from dask_asyncopt.datasets import make_ratings
from dask_asyncopt.kernels.factors import (
    RULE_ADAGRAD,
    RULE_AMSGRAD,
    RULE_SGD,
    row_width,
    sgd_ratings,
    squared_error_sum,
)

K, REG_F, REG_B, INIT, EPOCHS, SIGMA = 32, 0.04, 0.05, 0.01, 20, 0.5
B1, B2, EPS = 0.9, 0.999, 1e-8


@njit(cache=True)
def _catch_up(W, r, last, clock, eta, k):
    d = clock - last[r]
    if d <= 0:
        return
    om, ov, oh = k + 2, 2 * k + 3, 3 * k + 4
    geo = B1 * (1.0 - B1 ** d) / (1.0 - B1)
    for f in range(k + 1):
        W[r, f] -= eta * geo * W[r, om + f] / (math.sqrt(W[r, oh + f]) + EPS)
        W[r, om + f] *= B1 ** d
        W[r, ov + f] *= B2 ** d
    last[r] = clock


@njit(cache=True)
def exact_epoch(users, items, ratings, order, U, V, lu, lv, clock, mu, eta):
    """Dense AMSGrad, one step per rating, every row caught up before it is read."""
    k = (U.shape[1] - 6) // 4
    one = np.zeros(1, dtype=np.int64)
    for t in range(order.shape[0]):
        n = order[t]
        u, i = users[n], items[n]
        _catch_up(U, u, lu, clock, eta, k)
        _catch_up(V, i, lv, clock, eta, k)
        one[0] = n
        sgd_ratings(users, items, ratings, one, U, V, mu, eta, REG_F, REG_B, RULE_AMSGRAD,
                    B1, B2, EPS)
        clock += 1
        lu[u] = clock
        lv[i] = clock
    for r in range(U.shape[0]):
        _catch_up(U, r, lu, clock, eta, k)
    for r in range(V.shape[0]):
        _catch_up(V, r, lv, clock, eta, k)
    return clock


def data():
    X, y = make_ratings(2000, 1000, 100_000, rank=10, noise=SIGMA, random_state=1)
    perm = np.random.default_rng(1).permutation(y.shape[0])
    te, tr = perm[:10_000], perm[10_000:]
    return X[tr, 0].astype(np.int32), X[tr, 1].astype(np.int32), y[tr], \
        X[te, 0].astype(np.int32), X[te, 1].astype(np.int32), y[te]


def run(rule, eta, mode="lazy", decay=False, seed=0):
    u, i, r, tu, ti, tr = data()
    mu = r.mean()
    rng = np.random.default_rng(seed)
    w = row_width(K, rule)
    U, V = np.zeros((2000, w)), np.zeros((1000, w))
    U[:, :K] = rng.normal(scale=INIT / np.sqrt(K), size=(2000, K))
    V[:, :K] = rng.normal(scale=INIT / np.sqrt(K), size=(1000, K))
    U[:, K + 1] = V[:, K + 1] = 1.0
    lu, lv, clock = np.zeros(2000, np.int64), np.zeros(1000, np.int64), 0
    curve = []
    for epoch in range(EPOCHS):
        e = eta / math.sqrt(1 + epoch) if (decay or rule == RULE_SGD) else eta
        order = rng.permutation(r.shape[0])
        if mode == "exact":
            clock = exact_epoch(u, i, r, order, U, V, lu, lv, clock, mu, e)
        else:
            sgd_ratings(u, i, r, order, U, V, mu, e, REG_F, REG_B, rule, B1, B2, EPS)
        Uk, Vk = np.ascontiguousarray(U[:, :K + 2]), np.ascontiguousarray(V[:, :K + 2])
        curve.append(math.sqrt(squared_error_sum(tu, ti, tr, Uk, Vk, mu) / tr.shape[0])
                     / SIGMA)
    return curve


def show(name, curve):
    print(f"{name:34s} " + " / ".join(f"{curve[e - 1]:.3f}" for e in (5, 10, 20)),
          f"(best {min(curve):.3f})", flush=True)


if __name__ == "__main__":
    print("test RMSE / sigma after 5 / 10 / 20 epochs")
    show("adagrad eta0=0.1 (default sgd)", run(RULE_ADAGRAD, 0.1))
    show("constant eta0=0.1", run(RULE_SGD, 0.1))
    etas = [float(a) for a in sys.argv[1:]] or [0.001, 0.003, 0.01, 0.03]
    for eta in etas:
        show(f"amsgrad lazy eta0={eta}", run(RULE_AMSGRAD, eta))
        show(f"amsgrad lazy eta0={eta} /sqrt(ep)", run(RULE_AMSGRAD, eta, decay=True))
    for eta in etas:
        show(f"amsgrad exact eta0={eta}", run(RULE_AMSGRAD, eta, "exact"))
