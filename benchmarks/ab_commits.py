"""Side-by-side timing of two checkouts of the package on the same fits.

Run from the repository root, one process per checkout, alternated by
``farm-bench`` (A B A B ..., ratios pair by pair)::

    A='exec python benchmarks/ab_commits.py >>/tmp/ab_new.jsonl 2>/dev/null'
    B='exec env PYTHONPATH=/old/checkout python benchmarks/ab_commits.py >>/tmp/ab_old.jsonl'
    farm-bench -n 5 --timeout 1800 --vs "sh -c '$B 2>/dev/null'" -- sh -c "$A"
    python benchmarks/ab_commits.py --report /tmp/ab_new.jsonl /tmp/ab_old.jsonl

Each run prints one JSON line: the wall time and final objective (or test
RMSE) of the fits that ``bench_sgd``, ``bench_gap`` and ``bench_mf`` time,
at sizes that fit a few minutes, on a 2-worker thread cluster started once:

* ``sgd_asyb``, ``sgd_sync``: 200k x 100k L1 logistic, alpha 5e-6, 5 epochs,
  ``tol=None`` (bench_sgd's problem);
* ``gap_l1``, ``gap_l2``: 100k x 100k, default settings (bench_gap's fits:
  they stop on the default rule, so epochs are printed too);
* ``mf``: ``MatrixFactorization(n_factors=32)`` defaults on
  ``make_ratings(10_000, 5_000, 500_000)`` (bench_mf's data).

Only the public API is used, so any two versions of the package compare.
``--report`` pairs the lines of two files in order and prints, per fit, the
median and range of the time ratio (first file over second) and both
objectives.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np


def logistic(X, y, coef, intercept, alpha, l1):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    w = np.ravel(coef)
    pen = l1 * np.abs(w).sum() + (1 - l1) * 0.5 * (w @ w)
    return float(np.logaddexp(0, -z).mean() + alpha * pen)


def run():
    from distributed import Client, LocalCluster

    from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization
    from dask_asyncopt.datasets import make_ratings, make_sparse_classification

    out = {}
    X, y = make_sparse_classification(200_000, 100_000, random_state=0)
    Xg, yg = make_sparse_classification(100_000, 100_000, random_state=11)
    R, r = make_ratings(10_000, 5_000, 500_000, rank=10, noise=0.5, random_state=0)
    test = np.random.default_rng(0).random(len(r)) < 0.1
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        AsyncSGDClassifier(max_iter=1, tol=None).fit(X[:2000], y[:2000])  # compile
        MatrixFactorization(max_iter=1).fit(R[:2000], r[:2000])
        for solver in ("asyb", "sync"):
            t = time.perf_counter()
            est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=5e-6, max_iter=5,
                                     tol=None, solver=solver, random_state=0).fit(X, y)
            out[f"sgd_{solver}"] = [time.perf_counter() - t, logistic(
                X, y, est.coef_, est.intercept_, 5e-6, 1.0)]
        for penalty, alpha in (("l1", 1e-5), ("l2", 1e-4)):
            t = time.perf_counter()
            est = AsyncSGDClassifier(loss="log_loss", penalty=penalty, alpha=alpha,
                                     random_state=0).fit(Xg, yg)
            out[f"gap_{penalty}"] = [time.perf_counter() - t, logistic(
                Xg, yg, est.coef_, est.intercept_, alpha, float(penalty == "l1")),
                int(est.n_iter_)]
        t = time.perf_counter()
        mf = MatrixFactorization(n_factors=32, random_state=0).fit(R[~test], r[~test])
        out["mf"] = [time.perf_counter() - t,
                     float(np.sqrt(np.mean((mf.predict(R[test]) - r[test]) ** 2)))]
    print(json.dumps(out), flush=True)


def _medians(rows, key):
    """Medians of the non-time fields of fit ``key`` over ``rows``."""
    return " / ".join(f"{statistics.median(v[key][i] for v in rows):.6g}"
                      for i in range(1, len(rows[0][key])))


def report(a_path, b_path):
    a = [json.loads(line) for line in open(a_path) if line.startswith("{")]
    b = [json.loads(line) for line in open(b_path) if line.startswith("{")]
    a, b = a[-min(len(a), len(b)):], b[-min(len(a), len(b)):]  # warm-up runs first
    print(f"| fit | time A/B, median (range), {len(a)} pairs | A: objective | B: objective |")
    print("|---|---|---|---|")
    for key in a[0]:
        ratios = [x[key][0] / y[key][0] for x, y in zip(a, b, strict=True)]
        print(f"| {key} | {statistics.median(ratios):.2f} ({min(ratios):.2f}-"
              f"{max(ratios):.2f}) | {_medians(a, key)} | {_medians(b, key)} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", nargs=2, metavar=("A_JSONL", "B_JSONL"))
    args = p.parse_args()
    if args.report:
        report(*args.report)
    else:
        sys.exit(run())
