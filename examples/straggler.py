"""Asynchronous vs synchronous training when one worker is slow.

Starts a 2-process ``LocalCluster``, slows one worker process down 4x from
outside (``SIGSTOP``/``SIGCONT`` on a duty cycle, POSIX only), and fits the
same L1 logistic regression with ``solver="sync"``, ``"asyb"`` and
``"adpsgd"`` for the same number of epochs, printing wall time and objective.

    python examples/straggler.py [--size small|medium|large]

The synchronous baseline waits for the straggler at every round; AD-PSGD's
fast worker keeps gossiping and takes more of the epoch's samples.  (Plain
SGD is used, ``variance_reduction=None``: the SVRG snapshot pass after each
epoch makes every solver wait for the straggler once per epoch.)
"""

import argparse
import os
import time

import numpy as np
from distributed import Client, LocalCluster

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification
from dask_asyncopt.stragglers import DutyCycle

SIZES = {"small": (40_000, 10_000), "medium": (200_000, 50_000), "large": (1_000_000, 200_000)}


def objective(X, y, est, alpha):
    z = (X @ est.coef_.ravel() + est.intercept_[0]) * np.where(y == 1, 1.0, -1.0)
    return np.logaddexp(0, -z).mean() + alpha * np.abs(est.coef_).sum()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--slowdown", type=float, default=4.0)
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    n, d = SIZES[args.size]
    alpha = 1e-5
    X, y = make_sparse_classification(n, d, random_state=0)
    p1 = y.mean()
    constant = -(p1 * np.log(p1) + (1 - p1) * np.log(1 - p1))  # best intercept-only model
    print(f"{n:,} rows x {d:,} features; worker 2 of 2 slowed {args.slowdown:g}x; "
          f"{args.epochs} epochs each; constant model's objective {constant:.5f}")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        slow = pids[sorted(pids)[1]]
        for solver in ("sync", "asyb", "adpsgd"):
            kw = dict(loss="log_loss", penalty="l1", alpha=alpha, solver=solver,
                      variance_reduction=None, max_iter=args.epochs, tol=None,
                      random_state=0)
            AsyncSGDClassifier(**dict(kw, max_iter=1)).fit(X[:1000], y[:1000])  # warm-up
            with DutyCycle(slow, args.slowdown):
                tick = time.perf_counter()
                est = AsyncSGDClassifier(**kw).fit(X, y)
                wall = time.perf_counter() - tick
            print(f"{solver:>6}: {wall:6.2f} s, objective {objective(X, y, est, alpha):.5f}",
                  flush=True)


if __name__ == "__main__":
    main()
