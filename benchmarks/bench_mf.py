"""Benchmark: MatrixFactorization vs LIBMF and Surprise's SVD, in one run.

Data: ``make_ratings(10_000, 5_000, 500_000, rank=10, noise=0.5,
random_state=0)``, a random 90/10 train/test split.  Every method uses rank
32.  The target is LIBMF's test RMSE after its 20 iterations (``libmf`` on
PyPI, 2 threads, defaults otherwise; its ``predict`` is unreliable, so
predictions are computed from its factors ``P[u] . Q[i]``).  For each method
the wall time to reach that RMSE:

* LIBMF: the wall time of its 20-iteration fit (data conversion included);
* ours: a fresh fit with ``max_iter=k`` for the smallest ``k`` whose test
  RMSE reaches the target (scan k = 1, 2, ..., then 3 repeats at k); the time
  includes validation, id mapping, stratification, data placement and teardown;
* Surprise ``SVD`` (single-threaded, 20 epochs, its defaults): time and RMSE.

Run: ``python benchmarks/bench_mf.py`` (a few minutes; ``--n-users``,
``--n-items``, ``--n-ratings``, ``--repeats`` for quick tries; needs
``pip install -e ".[bench]"`` for LIBMF and Surprise).  Writes its report to a new
file ``benchmarks/results/bench_mf-<date>-<commit>-<ratings>-ratings.md``
(``--out``: see ``benchmarks/report.py``).
"""

import argparse
import contextlib
import io
import os
import platform
import statistics
import time

import numpy as np
from report import OUT_HELP, command, size_label, write_result  # benchmarks/ on sys.path

SIZES = (10_000, 5_000, 500_000)
RANK, SIGMA, K = 10, 0.5, 32
REPEATS = 3


def load():
    return os.getloadavg()[0]


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def libmf_fit(train, iters):
    with contextlib.redirect_stdout(io.StringIO()):
        from libmf import mf as libmf
    model = libmf.MF(k=K, nr_threads=2, nr_iters=iters, quiet=True)
    started = time.perf_counter()
    model.fit(train)
    P, Q = model.p_factors(), model.q_factors()
    return time.perf_counter() - started, P, Q


def libmf_predict(P, Q, X):
    u = np.minimum(X[:, 0], P.shape[0] - 1)
    i = np.minimum(X[:, 1], Q.shape[0] - 1)
    return np.einsum("nk,nk->n", P[u], Q[i])


def ours_fit(X, y, **kw):
    from dask_asyncopt import MatrixFactorization

    started = time.perf_counter()
    mf = MatrixFactorization(n_factors=K, random_state=0, **kw).fit(X, y)
    return time.perf_counter() - started, mf


def surprise_fit(X, y):
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    frame = pd.DataFrame({"u": X[:, 0], "i": X[:, 1], "r": y})
    lo, hi = float(y.min()), float(y.max())
    data = Dataset.load_from_df(frame, Reader(rating_scale=(lo, hi)))
    trainset = data.build_full_trainset()
    algo = SVD(n_factors=K, n_epochs=20, random_state=0)
    started = time.perf_counter()
    algo.fit(trainset)
    return time.perf_counter() - started, algo


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-users", type=int, default=SIZES[0])
    p.add_argument("--n-items", type=int, default=SIZES[1])
    p.add_argument("--n-ratings", type=int, default=SIZES[2])
    p.add_argument("--repeats", type=int, default=REPEATS)
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()
    sizes = (args.n_users, args.n_items, args.n_ratings)
    repeats = args.repeats

    from distributed import Client, LocalCluster

    from dask_asyncopt.datasets import make_ratings

    run_started = time.perf_counter()
    load_start = load()
    X, y = make_ratings(*sizes, rank=RANK, noise=SIGMA, random_state=0)
    perm = np.random.default_rng(0).permutation(y.shape[0])
    n_test = y.shape[0] // 10
    te, tr = perm[:n_test], perm[n_test:]
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    libmf_train = np.column_stack([Xtr, ytr]).astype(np.float32)
    rows = {}

    # LIBMF: 20 iterations define the target
    libmf_fit(libmf_train[:10_000], 2)  # warm-up (library load)
    times, scores = [], []
    for _ in range(repeats):
        t, P, Q = libmf_fit(libmf_train, 20)
        times.append(t)
        scores.append(rmse(yte, libmf_predict(P, Q, Xte)))
    target = statistics.median(scores)
    rows["libmf"] = (statistics.median(times), min(times), max(times), target, 20)
    print(f"LIBMF 20 iterations: {rows['libmf']}", flush=True)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        ours_fit(Xtr[:20_000], ytr[:20_000], max_iter=2)  # warm-up: Numba, actors
        ours_fit(Xtr[:20_000], ytr[:20_000], max_iter=2, solver="sync")
        scan = []
        k_star = None
        for k in range(1, 21):
            t, mf = ours_fit(Xtr, ytr, max_iter=k)
            score = rmse(yte, mf.predict(Xte))
            scan.append((k, t, score))
            if score <= target:
                k_star = k
                break
        confirm = []
        if k_star is not None:
            for _ in range(repeats):
                t, mf = ours_fit(Xtr, ytr, max_iter=k_star)
                confirm.append((t, rmse(yte, mf.predict(Xte))))
            ts = [c[0] for c in confirm]
            rows["ours"] = (statistics.median(ts), min(ts), max(ts),
                            statistics.median(c[1] for c in confirm), k_star)
        defaults = {}
        for solver in ("asyb", "sync"):
            ts, ss = [], []
            for _ in range(repeats):
                t, mf = ours_fit(Xtr, ytr, solver=solver)
                ts.append(t)
                ss.append(rmse(yte, mf.predict(Xte)))
            defaults[solver] = (statistics.median(ts), min(ts), max(ts),
                                statistics.median(ss), mf.history_)
        one_loop = []
        for _ in range(repeats):
            t, mf = ours_fit(Xtr, ytr, n_workers=1)
            one_loop.append(t)
        client.cancel([])

    ts, ss = [], []
    for _ in range(repeats):
        t, algo = surprise_fit(Xtr, ytr)
        ts.append(t)
        pred = np.array([algo.predict(int(u), int(i)).est for u, i in Xte])
        ss.append(rmse(yte, pred))
    rows["surprise"] = (statistics.median(ts), min(ts), max(ts), statistics.median(ss), 20)
    load_end = load()

    import dask
    import numba
    import sklearn

    def cell(r):
        return f"{r[0]:.2f} [{r[1]:.2f}-{r[2]:.2f}]"

    lines = [
        "## MatrixFactorization vs LIBMF and Surprise (`benchmarks/bench_mf.py`)",
        "",
        f"Generated by `{command()}`; do not edit by hand, re-run it.",
        "",
        f"- machine: `nproc` = {os.cpu_count()}, {platform.processor() or platform.machine()}"
        f", Linux {platform.release()}; load average (1 min) {load_start:.2f} at start, "
        f"{load_end:.2f} at end (other agents share the machine); whole run "
        f"{time.perf_counter() - run_started:.0f} s",
        f"- versions: python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__}, dask {dask.__version__}, scikit-learn "
        f"{sklearn.__version__}",
        f"- data: `make_ratings({sizes[0]}, {sizes[1]}, {sizes[2]}, rank={RANK}, "
        f"noise={SIGMA}, random_state=0)`, random 90/10 split; noise floor sigma = {SIGMA}",
        f"- every method rank {K}; ours on `LocalCluster(n_workers=2, threads_per_worker=1, "
        "processes=False)`; LIBMF `nr_threads=2`; Surprise single-threaded",
        f"- times in seconds: median [min-max] of {repeats} fresh fits; warm-up (library "
        "load, Numba cache, cluster start) outside every timed region",
        "",
        f"Target: LIBMF's 20-iteration test RMSE = **{target:.4f}** ({target / SIGMA:.3f} "
        "sigma).",
        "",
        "| method | iterations / epochs | time to target RMSE (s) | test RMSE at that point |",
        "|---|---|---|---|",
        f"| LIBMF (2 threads, k={K}, defaults) | 20 | {cell(rows['libmf'])} "
        f"| {rows['libmf'][3]:.4f} |",
    ]
    if "ours" in rows:
        lines.append(f"| ours, asyb, 2 workers (threads), defaults | {rows['ours'][4]} "
                     f"| {cell(rows['ours'])} | {rows['ours'][3]:.4f} |")
    else:
        lines.append("| ours, asyb, 2 workers | not reached in 20 epochs | - | - |")
    lines += [
        "",
        "| ratio | value |",
        "|---|---|",
    ]
    if "ours" in rows:
        ratio = rows["ours"][0] / rows["libmf"][0]
        lines.append(f"| ours / LIBMF, time to LIBMF's 20-iteration RMSE (target <= 1) "
                     f"| **{ratio:.2f}** ({'met' if ratio <= 1 else 'MISSED'}) |")
    lines += [
        "",
        "Full default fits (20 epochs) and Surprise:",
        "",
        "| method | epochs | fit time (s) | test RMSE | RMSE / sigma |",
        "|---|---|---|---|---|",
    ]
    for solver, r in defaults.items():
        lines.append(f"| ours, {solver}, 2 workers, defaults | 20 | {cell(r)} | {r[3]:.4f} "
                     f"| {r[3] / SIGMA:.3f} |")
    lines.append(f"| ours, asyb, 1 worker loop, defaults | 20 | {statistics.median(one_loop):.2f}"
                 f" [{min(one_loop):.2f}-{max(one_loop):.2f}] | - | - |")
    r = rows["surprise"]
    lines.append(f"| Surprise SVD (1 thread, k={K}, defaults) | 20 | {cell(r)} | {r[3]:.4f} "
                 f"| {r[3] / SIGMA:.3f} |")
    hist = defaults["asyb"][4]
    lines += [
        "",
        "Our scan (single fresh fits with `max_iter=k`):",
        "",
        "| k | fit time (s) | test RMSE |",
        "|---|---|---|",
        *[f"| {k} | {t:.2f} | {s:.4f} |" for k, t, s in scan],
        "",
        "Last default asyb fit, per epoch: "
        f"compute fraction {hist['compute_fraction'].mean():.2f}, wait fraction "
        f"{hist['wait_fraction'].mean():.3f}, staleness max {int(hist['staleness_max'].max())}, "
        f"mean epoch {hist['time'].diff().median():.3f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result("bench_mf", text, tag=f"{size_label(args.n_ratings)}-ratings", out=args.out)


if __name__ == "__main__":
    main()
