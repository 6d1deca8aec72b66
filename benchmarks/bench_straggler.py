"""Straggler study: sync vs asyb vs adpsgd with one of two workers slowed.

Run from the repository root::

    python benchmarks/bench_straggler.py [--n-samples N --n-features D --epochs E \
        --slowdown 4 --period 0.1 --repeats 2 --out benchmarks/results]

A process ``LocalCluster`` with 2 workers (1 thread each).  One worker's
process is slowed from outside the algorithm: a helper thread of this driver
sends it ``SIGSTOP`` for ``(1 - 1/slowdown)`` of every ``--period`` seconds
and ``SIGCONT`` for the rest (75% stopped = 4x slower).  Its pid comes from
``client.run(os.getpid)``.  A stopped process also stops the actors it holds
and its event loop, so every call to them waits until it runs again.

Every solver fits the same data (``make_sparse_classification``, L1 logistic,
``alpha``) for the same ``--epochs`` (``tol=None``) with
``variance_reduction=None`` (plain proximal SGD, the ``learning_rate="optimal"``
schedule): the variance-reduced default adds a snapshot pass over all the
data after each epoch, a barrier that a straggler slows equally in every
solver.  Reported per solver, unslowed and slowed: wall time of the fit
(median of ``--repeats``), the exact objective of the returned model, the
epochs and, for adpsgd, the share of samples the slow worker's loop took.
The slowed worker is the one holding loop 1 (an active replica in adpsgd)
and, with ``--both``, in a second run loop 0 (a passive replica).

The report (markdown) goes to stdout and to a new file
``benchmarks/results/bench_straggler-<date>-<commit>-<size>.md`` (``--out``: see
``benchmarks/report.py``).
"""

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time

import numpy as np
from report import OUT_HELP, size_label, write_result  # benchmarks/ is on sys.path

from dask_asyncopt.stragglers import DutyCycle

TARGET_RATIO = 2.5  # sync time / async time with one of 2 workers 4x slower
OBJECTIVE_TOLERANCE = 0.02


def objective(X, y, coef, intercept, alpha):
    z = (X @ coef.ravel() + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return float(np.logaddexp(0, -z).mean() + alpha * np.abs(coef).sum())


def fit_once(solver, X, y, args):
    from dask_asyncopt import AsyncSGDClassifier

    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=args.alpha, solver=solver,
                             variance_reduction=None, max_iter=args.epochs, tol=None,
                             random_state=args.seed)
    tick = time.perf_counter()
    est.fit(X, y)
    wall = time.perf_counter() - tick
    return wall, objective(X, y, est.coef_, est.intercept_, args.alpha), est


def measure(client, solver, X, y, args, slow_pid=None, slow_loop=None):
    walls, objs = [], []
    for _ in range(args.repeats):
        if slow_pid is None:
            wall, obj, est = fit_once(solver, X, y, args)
        else:
            with DutyCycle(slow_pid, args.slowdown, args.period):
                wall, obj, est = fit_once(solver, X, y, args)
        walls.append(wall)
        objs.append(obj)
    return {"wall": statistics.median(walls), "walls": walls, "objective": statistics.median(objs),
            "epochs": est.n_iter_, "history": est.history_}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-samples", type=int, default=200_000)
    parser.add_argument("--n-features", type=int, default=50_000)
    parser.add_argument("--alpha", type=float, default=2e-6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--slowdown", type=float, default=4.0)
    parser.add_argument("--period", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--both", action="store_true")
    parser.add_argument("--solvers", default="sync,asyb,adpsgd")
    parser.add_argument("--seed", type=int, default=0, help="data and estimator seed")
    parser.add_argument("--out", default=None, help=OUT_HELP)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from dask_asyncopt.datasets import make_sparse_classification

    X, y = make_sparse_classification(args.n_samples, args.n_features, random_state=args.seed)
    solvers = args.solvers.split(",")
    results = {}
    load_before = os.getloadavg()
    started = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(
            cluster, direct_to_workers=True) as client:
        workers = sorted(client.nthreads())
        pids = client.run(os.getpid)
        for solver in solvers:  # warm up: Numba cache loads, imports, first fits
            fit_once(solver, X[:20000], y[:20000], argparse.Namespace(**{**vars(args),
                                                                         "epochs": 1}))
        cases = [("none", None, None), ("loop 1", pids[workers[1]], 1)]
        if args.both:
            cases.append(("loop 0", pids[workers[0]], 0))
        for label, pid, loop in cases:
            for solver in solvers:
                if label == "loop 0" and solver != "adpsgd":
                    continue  # sync/asyb are symmetric in their loops
                r = measure(client, solver, X, y, args, pid, loop)
                results[label, solver] = r
                h = r["history"]
                print(f"{label:7s} {solver:7s} wall {r['wall']:7.2f} s {r['walls']} "
                      f"objective {r['objective']:.6f} epochs {r['epochs']}"
                      + (f" consensus {h.consensus_distance.iloc[-1]:.3g} exchanges "
                         f"{int(h.exchanges.sum())} loop shares "
                         f"{np.round(np.mean(list(h.loop_shares), axis=0), 3)}"
                         if solver == "adpsgd" else ""),
                      flush=True)
    report = _report(args, results, solvers, load_before, time.perf_counter() - started)
    print(report)
    write_result("bench_straggler", report, tag=size_label(args.n_samples), out=args.out)


def _report(args, results, solvers, load_before, elapsed):
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        "## Straggler: one of two workers slowed",
        "",
        f"`{cmd}` ({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; "
        f"{elapsed:.0f} s in total).",
        "",
        f"Process `LocalCluster`, 2 workers x 1 thread; {args.n_samples} x {args.n_features} "
        f"sparse rows (20 non-zeros), L1 logistic, alpha {args.alpha:g}, {args.epochs} epochs, "
        f"`variance_reduction=None`, `tol=None`; median of {args.repeats} fits.  The slow "
        f"worker is stopped (SIGSTOP) {100 * (1 - 1 / args.slowdown):.0f}% of every "
        f"{args.period:g} s ({args.slowdown:g}x slower).",
        "",
        "| slowed | solver | wall time (s) | final objective | vs unslowed sync objective |",
        "|---|---|---|---|---|",
    ]
    base = results.get(("none", "sync"), {}).get("objective")
    for (label, solver), r in results.items():
        rel = "" if base is None else f"{(r['objective'] - base) / base:+.2%}"
        lines.append(f"| {label} | {solver} | {r['wall']:.2f} | {r['objective']:.6f} | {rel} |")
    lines.append("")
    sync = results.get(("loop 1", "sync"))
    for solver in ("asyb", "adpsgd"):
        r = results.get(("loop 1", solver))
        if sync and r:
            ratio = sync["wall"] / r["wall"]
            diff = abs(r["objective"] - sync["objective"]) / sync["objective"]
            ok = ratio >= TARGET_RATIO and diff <= OBJECTIVE_TOLERANCE
            lines.append(f"- slowed, sync / {solver} time: **{ratio:.2f}** (target >= "
                         f"{TARGET_RATIO}), objective difference {diff:.2%} (target <= "
                         f"{OBJECTIVE_TOLERANCE:.0%}): {'met' if ok else 'not met'}")
    for solver in solvers:
        a, b = results.get(("none", solver)), results.get(("loop 1", solver))
        if a and b:
            lines.append(f"- {solver}: slowed / unslowed time {b['wall'] / a['wall']:.2f}")
    lines += ["", READING]
    return "\n".join(lines) + "\n"


READING = """### Reading these numbers

- **Why sync/adpsgd can exceed 2.5.**  With equal samples per epoch, a 4x straggler
  makes every sync round wait for it (4 units of time per epoch), while adpsgd's
  loops never wait for each other: at best the epoch takes 2 / (1 + 1/4) = 1.6
  units, so 2.5 is the ratio of the compute alone.  sync also pays a barrier and
  a round trip to the stopped process per round, which the straggler stretches
  too, and adpsgd's plain-SGD fit has no barrier at all: one task per loop for
  the whole fit, the driver records each epoch's row (and moves the replicas to
  their mean by a sum-preserving shift) while the loops run.
- **Why the fast loop's share is capped.**  Plain SGD over-fits the rows it sees
  most: unbounded, the fast loop took 86-87% of the samples and the objective
  ended 3.0-3.7% above sync's after 8 epochs.  A loop therefore waits when it
  has made more than `MAX_LEAD` = 4 passes over its rows per pass of the
  slowest loop (plus one): the 'loop shares' column shows 0.80/0.20 here.
  Weighting a straggler's steps by its missing share instead was tried and
  did worse (+2.7% to +3.8%).
- **asyb is not robust to a stopped worker**: every exchange pulls from both
  blocks, and one block lives on the stopped process.
- **Process workers and allocations**: Dask's nanny sets
  `MALLOC_TRIM_THRESHOLD_`, which turns every model-sized NumPy temporary into
  a page-faulting `mmap`; the replica step is an in-place Numba kernel for
  that reason (2.7 ms -> 0.9 ms per step at 50k coordinates).
- Times vary +-15% between runs on this shared 2-core machine (the duty cycle's
  phase against each fit's rounds)."""


if __name__ == "__main__":
    main()
