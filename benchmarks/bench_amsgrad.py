"""Benchmark: sgd vs amsgrad, asynchronous (asyb) vs synchronous, on badly scaled data.

Data: ``make_sparse_classification(N, D, random_state=0)`` with every column
multiplied by a scale drawn log-uniformly from [1e-2, 1e1] (3 decades), an
L2-logistic objective ``mean(log-loss) + alpha |w|^2 / 2``.  The exact optimum
``F*`` comes from scikit-learn's ``LogisticRegression(lbfgs, tol=1e-10)``; the
target is ``F* (1 + 1e-3)``.  Each method runs at its default settings (only
``loss``, ``penalty``, ``alpha``, ``solver``, ``optimizer`` given; ``tol=None``
and ``max_iter=MAX_EPOCHS`` so that every run goes on until the cap) on a
2-worker thread ``LocalCluster``; ``history_`` gives the exact objective after
each epoch (both default estimators run variance reduction, whose snapshot pass
evaluates it), and the epochs and wall time to the target are read from it.
The wall time counts from the start of ``fit`` (the epoch's history row).

Run: ``python benchmarks/bench_amsgrad.py`` (a few minutes; ``--n-samples``,
``--n-features``, ``--max-epochs``, ``--repeats`` for quick tries).  Writes its
report to a new file ``benchmarks/results/bench_amsgrad-<date>-<commit>-<size>.md``
(``--out``: see ``benchmarks/report.py``).
"""

import argparse
import os
import platform
import time

import numpy as np
from report import OUT_HELP, command, size_label, write_result  # benchmarks/ on sys.path

N, D, ALPHA = 20_000, 10_000, 1e-5
MAX_EPOCHS = 40
REPEATS = 2


def data(n=N, d=D):
    from dask_asyncopt.datasets import make_sparse_classification

    X, y = make_sparse_classification(n, d, random_state=0)
    scales = 10.0 ** np.random.default_rng(1).uniform(-2, 1, size=d)
    return (X @ __import__("scipy.sparse").sparse.diags(scales)).tocsr(), y


def objective(X, y, coef, intercept):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return np.logaddexp(0, -z).mean() + 0.5 * ALPHA * np.square(coef).sum()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=N)
    p.add_argument("--n-features", type=int, default=D)
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    p.add_argument("--repeats", type=int, default=REPEATS)
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()

    from distributed import Client, LocalCluster
    from sklearn.linear_model import LogisticRegression

    from dask_asyncopt import AsyncSGDClassifier

    n, d, max_epochs, repeats = args.n_samples, args.n_features, args.max_epochs, args.repeats
    X, y = data(n, d)
    ref = LogisticRegression(C=1.0 / (n * ALPHA), tol=1e-10, max_iter=20_000).fit(X, y)
    f_star = objective(X, y, ref.coef_, ref.intercept_)
    target = f_star * (1 + 1e-3)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        # warm up the kernels (compilation is cached on disk, loading is not free)
        for opt in ("sgd", "amsgrad"):
            AsyncSGDClassifier(loss="log_loss", optimizer=opt, max_iter=1).fit(X[:500], y[:500])
        for optimizer in ("sgd", "amsgrad"):
            for solver in ("asyb", "sync"):
                runs = []
                for rep in range(repeats):
                    est = AsyncSGDClassifier(loss="log_loss", penalty="l2", alpha=ALPHA,
                                             solver=solver, optimizer=optimizer, tol=None,
                                             max_iter=max_epochs, random_state=rep)
                    tick = time.perf_counter()
                    est.fit(X, y)
                    wall = time.perf_counter() - tick
                    h = est.history_
                    gaps = (h.objective.to_numpy() - f_star) / f_star
                    hit = np.flatnonzero(h.objective.to_numpy() <= target)
                    runs.append({
                        "epochs": int(h.epoch.iloc[hit[0]]) if len(hit) else None,
                        "time": float(h.time.iloc[hit[0]]) if len(hit) else None,
                        "gap5": float(gaps[min(4, len(gaps) - 1)]),
                        "final": float(gaps[-1]), "wall": wall,
                        "epoch_time": wall / len(h)})
                    print(optimizer, solver, rep, runs[-1], flush=True)
                rows.append((optimizer, solver, runs))
    text = report(rows, f_star, n, d, max_epochs, repeats)
    print(text)
    write_result("bench_amsgrad", text, tag=size_label(n), out=args.out)


def _fmt(runs, key, fmt):
    vals = [r[key] for r in runs]
    return " / ".join("not reached" if v is None else fmt.format(v) for v in vals)


def report(rows, f_star, n, d, max_epochs, repeats):
    lines = [
        "## AMSGrad vs SGD, async vs sync, badly scaled sparse data "
        "(`benchmarks/bench_amsgrad.py`)",
        "",
        f"Command: `{command()}`.  Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end, "
        "2-worker thread `LocalCluster`.",
        f"Data: `make_sparse_classification({n}, {d}, random_state=0)`, columns scaled "
        "log-uniformly over [1e-2, 1e1]; L2-logistic, alpha "
        f"{ALPHA:g}; F* = {f_star:.6f} (lbfgs, tol 1e-10); target F* (1 + 1e-3).  Default "
        f"settings, `tol=None`, `max_iter={max_epochs}`; {repeats} runs each "
        f"(random_state {' / '.join(str(r) for r in range(repeats))}).",
        "",
        "| optimizer | solver | epochs to target | time to target (s) | gap after 5 epochs "
        f"| gap after {max_epochs} | s per epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for optimizer, solver, runs in rows:
        lines.append(
            f"| {optimizer} | {solver} | {_fmt(runs, 'epochs', '{}')} | "
            f"{_fmt(runs, 'time', '{:.2f}')} | {_fmt(runs, 'gap5', '{:.1e}')} | "
            f"{_fmt(runs, 'final', '{:.1e}')} | {_fmt(runs, 'epoch_time', '{:.2f}')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
