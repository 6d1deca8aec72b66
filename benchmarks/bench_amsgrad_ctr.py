"""Benchmark: ``optimizer="amsgrad"`` against the default optimizer and scikit-learn on
L1 click-through data: relative gap, sparsity and time, every solver.

Run from the repository root::

    python benchmarks/bench_amsgrad_ctr.py [--n-samples 150000 --hash-bits 17 \
        --alpha 8e-6 --repeats 3]

Data: ``examples/click_through_l1.py``'s synthetic impression log (Zipf-distributed
sites and ads, an ad x segment cross, 7 hashed tokens a row) hashed into
``2**hash_bits`` columns, ``n`` rows.  Objective: mean log-loss + ``alpha |w|_1``,
intercept unpenalised.  Reference: scikit-learn's
``LogisticRegression(solver="saga", penalty="l1", C=1/(alpha n), tol=--saga-tol)``;
``F*`` is the lower of its objective and a long default fit of ours
(``max_iter=60, tol=None``), and its support the reference support.

Ours: ``AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, solver=s,
optimizer=o, random_state=rep)``, everything else at its default, on a
2-process-worker ``LocalCluster`` (``--threads``: thread workers, for quick
tries).  For each repeat and solver the two optimizers run back to back (A B A
B); the table gives the range over repeats and the per-round time ratio
amsgrad / sgd.  scikit-learn's ``SGDClassifier`` (L1, same alpha, defaults) runs
in the same rounds as a peer.  Each fit's time includes placing the data on the
workers; kernels are compiled and loaded on every worker before timing.

Writes its report to a new file
``benchmarks/results/bench_amsgrad_ctr-<date>-<commit>-<size>.md`` (``--out``: see
``benchmarks/report.py``).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from peers import penalty_args  # benchmarks/ on sys.path
from report import OUT_HELP, machine, size_label, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

SOLVERS = ("asyb", "sync", "adpsgd")
OPTIMIZERS = ("sgd", "amsgrad")


def click_data(n, hash_bits, seed=0):
    from click_through_l1 import hash_features, make_impressions

    values, clicks = make_impressions(n, seed)
    return hash_features(values, hash_bits), clicks


def objective(X, y, coef, intercept, alpha):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return np.logaddexp(0, -z).mean() + alpha * np.abs(coef).sum()


def saga_reference(X, y, alpha, tol, cache):
    """saga's coefficients and time (cached on disk by data and settings)."""
    from sklearn.linear_model import LogisticRegression

    key = f"saga-{X.shape[0]}-{X.shape[1]}-{X.nnz}-{alpha:g}-{tol:g}.npz"
    path = Path(cache) / key if cache else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return f["coef"], f["intercept"], float(f["seconds"]), int(f["n_iter"])
    tick = time.perf_counter()
    ref = LogisticRegression(**penalty_args("l1"), C=1.0 / (X.shape[0] * alpha),
                             solver="saga", tol=tol, max_iter=10_000).fit(X, y)
    seconds = time.perf_counter() - tick
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, coef=ref.coef_, intercept=ref.intercept_, seconds=seconds,
                 n_iter=int(ref.n_iter_[0]))
    return ref.coef_, ref.intercept_, seconds, int(ref.n_iter_[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=150_000)
    p.add_argument("--hash-bits", type=int, default=17)
    p.add_argument("--alpha", type=float, default=8e-6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    p.add_argument("--saga-tol", type=float, default=1e-6)
    p.add_argument("--threads", action="store_true", help="thread workers (quick tries)")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/dask_asyncopt_bench"),
                   help="directory for saga's solution ('' for none)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()

    from distributed import Client, LocalCluster
    from sklearn.linear_model import SGDClassifier

    from dask_asyncopt import AsyncSGDClassifier

    n, alpha = args.n_samples, args.alpha
    X, y = click_data(n, args.hash_bits)
    coef, icpt, saga_s, saga_iter = saga_reference(X, y, alpha, args.saga_tol, args.cache)
    f_saga = objective(X, y, coef, icpt, alpha)
    support = set(np.flatnonzero(coef))
    print(f"{X.shape}, {X.nnz / n:.1f} nnz/row; saga F {f_saga:.8f}, {len(support)} "
          f"non-zeros, {saga_s:.1f} s", flush=True)
    rows = {}  # (method, solver) -> list of dicts
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=not args.threads,
                      dashboard_address=None) as cluster, Client(
            cluster, direct_to_workers=True):
        for solver in args.solvers:  # compile / load every kernel on every worker
            for optimizer in OPTIMIZERS:
                AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=1e-4, solver=solver,
                                   optimizer=optimizer, max_iter=2).fit(X[:4000], y[:4000])
        long = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, max_iter=60,
                                  tol=None, random_state=0).fit(X, y)
        f_star = min(f_saga, objective(X, y, long.coef_, long.intercept_, alpha))
        print(f"F* {f_star:.8f} (saga {f_saga:.8f})", flush=True)

        def record(key, est, seconds):
            f = objective(X, y, est.coef_, est.intercept_, alpha)
            nz = set(np.flatnonzero(est.coef_))
            rows.setdefault(key, []).append({
                "time": seconds, "epochs": int(est.n_iter_), "gap": (f - f_star) / f_star,
                "nnz": len(nz), "shared": len(nz & support)})
            print(key, rows[key][-1], flush=True)

        for rep in range(args.repeats):
            tick = time.perf_counter()
            sk = SGDClassifier(loss="log_loss", penalty="l1", alpha=alpha,
                               random_state=rep).fit(X, y)
            record(("scikit-learn SGDClassifier", "-"), sk, time.perf_counter() - tick)
            for solver in args.solvers:
                for optimizer in OPTIMIZERS:
                    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha,
                                             solver=solver, optimizer=optimizer,
                                             random_state=rep)
                    tick = time.perf_counter()
                    est.fit(X, y)
                    record((optimizer, solver), est, time.perf_counter() - tick)
    text = report(args, X, rows, f_star, f_saga, len(support), saga_s, saga_iter)
    print(text)
    write_result("bench_amsgrad_ctr", text, tag=size_label(n), out=args.out)


def _span(values, fmt):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else (
        f"{fmt.format(lo)}-{fmt.format(hi)}")


def report(args, X, rows, f_star, f_saga, saga_nnz, saga_s, saga_iter):
    workers = "threads" if args.threads else "processes"
    lines = [
        "## optimizer=\"amsgrad\" on L1 click-through data "
        "(`benchmarks/bench_amsgrad_ctr.py`)",
        "",
        f"Machine: {machine()}; load {os.getloadavg()[0]:.1f} at the end; 2 single-threaded "
        f"Dask workers ({workers}).",
        f"Data: `examples/click_through_l1.py` impressions, {X.shape[0]:,} rows x "
        f"{X.shape[1]:,} hashed columns ({X.nnz / X.shape[0]:.1f} non-zeros a row); L1 "
        f"logistic, alpha {args.alpha:g}.  F* = {f_star:.8f} (saga, tol {args.saga_tol:g}: "
        f"{f_saga:.8f} with {saga_nnz:,} non-zeros in {saga_s:.1f} s, {saga_iter} epochs; "
        "or a 60-epoch default fit of ours, whichever is lower).",
        f"Default settings, {args.repeats} rounds (random_state 0..{args.repeats - 1}); "
        "ranges over the rounds.  'shared': non-zeros also non-zero in saga's solution.",
        "",
        "| method | solver | fit (s) | epochs | relative gap | non-zeros (saga "
        f"{saga_nnz:,}) | shared | time / sgd's (same round) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, solver), runs in rows.items():
        ratio = "-"
        if method == "amsgrad":
            base = rows[("sgd", solver)]
            ratio = _span([a["time"] / b["time"] for a, b in zip(runs, base, strict=True)],
                          "{:.2f}")
        lines.append(
            f"| {method} | {solver} | {_span([r['time'] for r in runs], '{:.2f}')} | "
            f"{_span([r['epochs'] for r in runs], '{}')} | "
            f"{_span([r['gap'] for r in runs], '{:.1e}')} | "
            f"{_span([r['nnz'] for r in runs], '{:,}')} | "
            f"{_span([r['shared'] for r in runs], '{:,}')} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
