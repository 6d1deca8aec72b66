"""Design measurement: stratified blocks vs AsyB-style random blocks for MF.

Single process, no Dask: isolates what each exchange pattern does to SGD per
epoch and how many factor rows each moves, on the benchmark data
(``make_ratings`` 10k x 5k, 500k ratings, rank 10, sigma 0.5, 90/10 split),
2 loops, the estimator's default hyper-parameters and Numba kernel.

* stratified (what ``MatrixFactorization`` does): a loop holds its users and
  one item block at a time, exclusively -> exactly serial SGD (no stale read).
  Row traffic per epoch: each item block is checked out once per loop.
* random blocks (AsyB-ProxSGD): each loop takes a random chunk of ratings,
  pulls the user and item rows it touches from a snapshot, runs the same
  kernel on its copy and pushes the difference; the two loops' differences
  are added (staleness = one chunk of the other loop).

Run: ``python benchmarks/mf_design.py`` (about a minute).
"""

import time

import numpy as np

from dask_asyncopt.datasets import make_ratings
from dask_asyncopt.kernels.factors import RULE_ADAGRAD, sgd_ratings, squared_error_sum

K, ETA, REG_F, REG_B, INIT, EPOCHS, LOOPS = 32, 0.1, 0.04, 0.05, 0.01, 20, 2


def init_model(n_users, n_items, rng):
    U = np.zeros((n_users, K + 2))
    V = np.zeros((n_items, K + 2))
    U[:, :K] = rng.normal(scale=INIT / np.sqrt(K), size=(n_users, K))
    V[:, :K] = rng.normal(scale=INIT / np.sqrt(K), size=(n_items, K))
    U[:, K + 1] = V[:, K + 1] = 1.0
    return U, V


def serial(u, i, r, mu, U, V, rng):
    sgd_ratings(u, i, r, rng.permutation(r.shape[0]), U, V, mu, ETA, REG_F, REG_B,
                RULE_ADAGRAD)
    # over the network: each loop checks every item block out and in; user rows
    # never leave their loop's worker
    return 2 * LOOPS * V.shape[0]


def random_blocks(u, i, r, mu, U, V, rng, n_chunks):
    perm = rng.permutation(r.shape[0])
    shards = np.array_split(perm, LOOPS)
    chunks = [np.array_split(s, n_chunks) for s in shards]
    moved = 0
    for c in range(n_chunks):
        deltas = []
        for w in range(LOOPS):  # every loop reads the same snapshot
            sel = chunks[w][c]
            uu, lu = np.unique(u[sel], return_inverse=True)
            ii, li = np.unique(i[sel], return_inverse=True)
            Ul, Vl = U[uu].copy(), V[ii].copy()
            U0, V0 = Ul.copy(), Vl.copy()
            sgd_ratings(lu.astype(np.int32), li.astype(np.int32), r[sel],
                        np.arange(sel.shape[0]), Ul, Vl, mu, ETA, REG_F, REG_B,
                        RULE_ADAGRAD)
            deltas.append((uu, Ul - U0, ii, Vl - V0))
            moved += 2 * (uu.shape[0] + ii.shape[0])  # pull + push
        for uu, du, ii, dv in deltas:  # Hogwild-style: differences add up
            U[uu] += du
            V[ii] += dv
    return moved


def main():
    X, y = make_ratings(random_state=0)
    rng = np.random.default_rng(1)
    perm = rng.permutation(y.shape[0])
    n_test = y.shape[0] // 10
    te, tr = perm[:n_test], perm[n_test:]
    u, i, r = X[tr, 0], X[tr, 1], y[tr]
    mu = r.mean()
    runs = {"stratified (= serial SGD)": lambda *a: serial(*a),
            "random blocks, 8 chunks/loop/epoch": lambda *a: random_blocks(*a, 8),
            "random blocks, 64 chunks/loop/epoch": lambda *a: random_blocks(*a, 64)}
    print(f"| exchange pattern | test RMSE after 5 / 10 / {EPOCHS} epochs "
          "| factor rows sent between workers per epoch (pull + push) |")
    print("|---|---|---|")
    for name, run in runs.items():
        U, V = init_model(10_000, 5_000, np.random.default_rng(2))
        rs = np.random.default_rng(3)
        curve = []
        started = time.perf_counter()
        for _ in range(EPOCHS):
            moved = run(u, i, r, mu, U, V, rs)
            curve.append(np.sqrt(squared_error_sum(X[te, 0], X[te, 1], y[te], U, V, mu)
                                 / n_test))
        print(f"| {name} | {curve[4]:.4f} / {curve[9]:.4f} / {curve[-1]:.4f} "
              f"| {moved:,} | ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
