"""Objective against time for every solver (and optimizer) on one sparse problem.

Run from the repository root::

    python benchmarks/bench_solvers.py [--n-samples 200000 --n-features 100000]

Each available ``solver`` (and ``optimizer``) fits the same L1-logistic problem
with default settings on a 2-worker thread ``LocalCluster``; the script plots
``history_.objective - F*`` against wall time (``F*``: the best objective of a
long fit).  Each configuration is fitted twice and the second fit is plotted (the
first loads the Numba kernels).  Writes its report to a new file
``benchmarks/results/bench_solvers-<date>-<commit>-<size>.md`` and the plot next to
it (same name, ``.png``; ``--out``: see ``benchmarks/report.py``).  The figure of
``docs/performance.md`` (``docs/img/objective_vs_time.png``) is a copy of such a
plot, updated by hand.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from report import OUT_HELP, result_path, size_label, write_result  # noqa: E402

from dask_asyncopt import AsyncSGDClassifier  # noqa: E402
from dask_asyncopt.datasets import make_sparse_classification  # noqa: E402
from dask_asyncopt.solvers import SOLVERS  # noqa: E402


def objective(X, y, coef, intercept, alpha):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return np.logaddexp(0, -z).mean() + alpha * np.abs(coef).sum()


def configurations():
    optimizers = ["sgd"]
    if "amsgrad" in AsyncSGDClassifier._parameter_constraints["optimizer"][0].options:
        optimizers.append("amsgrad")
    return [(s, o) for s in sorted(SOLVERS) for o in optimizers]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=200_000)
    p.add_argument("--n-features", type=int, default=100_000)
    p.add_argument("--alpha", type=float, default=1e-5)
    p.add_argument("--max-iter", type=int, default=15)
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()
    X, y = make_sparse_classification(args.n_samples, args.n_features, random_state=4)
    fits = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        for solver, optimizer in configurations():
            kw = dict(loss="log_loss", penalty="l1", alpha=args.alpha, solver=solver,
                      optimizer=optimizer, max_iter=args.max_iter, tol=None, random_state=0)
            AsyncSGDClassifier(**kw).fit(X[:2000], y[:2000])  # loads the kernels
            est = AsyncSGDClassifier(**kw).fit(X, y)
            fits[solver, optimizer] = est
            print(solver, optimizer, est.history_.objective.iloc[-1], flush=True)
    f_star = min(objective(X, y, e.coef_, e.intercept_, args.alpha) for e in fits.values())
    result = result_path("bench_solvers", size_label(args.n_samples), args.out)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for (solver, optimizer), est in fits.items():
        h = est.history_.dropna(subset=["objective"])
        ax.semilogy(h.time, np.maximum(h.objective - f_star, 1e-9), marker="o", ms=3,
                    label=f"{solver}, {optimizer}")
        f = objective(X, y, est.coef_, est.intercept_, args.alpha)
        rows.append(f"| {solver} | {optimizer} | {est.n_iter_} | {h.time.iloc[-1]:.2f} | "
                    f"{h.time.iloc[-1] / est.n_iter_:.3f} | {f:.6f} | "
                    f"{(f - f_star) / f_star:.1e} |")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("objective - F* (history_)")
    ax.set_title(f"L1 logistic, {args.n_samples:,} x {args.n_features:,}, 2 workers")
    ax.legend()
    fig.tight_layout()
    figure = []
    if result is not None:
        plot = result.with_suffix(".png")
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=110)
        figure = [f"![objective - F* against wall time]({plot.name})", ""]
    text = "\n".join([
        "## Solvers: objective against time (`benchmarks/bench_solvers.py`)",
        "",
        f"`python benchmarks/bench_solvers.py --n-samples {args.n_samples} --n-features "
        f"{args.n_features} --alpha {args.alpha:g} --max-iter {args.max_iter}`; "
        "2-worker thread cluster; `make_sparse_classification(..., random_state=4)`, "
        "L1 logistic regression, default settings except `max_iter`, `tol=None`. "
        "F* = the lowest exact objective among these fits. The machine may have been "
        "shared with other jobs: compare the curves, not absolute times.",
        "",
        *figure,
        "| solver | optimizer | epochs | fit time in history (s) | s / epoch | exact F "
        "| relative gap to F* |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(text)
    write_result("bench_solvers", text, out=args.out, path=result)


if __name__ == "__main__":
    main()
