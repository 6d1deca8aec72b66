"""Benchmark: APAM's claim -- async AMSGrad against sync AMSGrad and async SGD on badly
scaled data -- and the ``max_staleness`` speed/accuracy trade-off.

Data: ``make_sparse_classification(N, D, random_state=0)`` with every column
multiplied by a scale drawn log-uniformly from [1e-2, 1e2] (4 decades), an
L2-logistic objective ``mean(log-loss) + alpha |w|^2 / 2``.  The exact optimum
``F*`` comes from scikit-learn's ``LogisticRegression(lbfgs, tol=1e-10)``; the
target is ``F* (1 + 1e-3)``.  Each method runs at its default settings (only
``loss``, ``penalty``, ``alpha``, ``solver``, ``optimizer``, ``max_staleness``
and, for plain SGD, ``variance_reduction=None`` given; ``tol=None`` and
``max_iter=--max-epochs`` so that every run goes on until the cap) on a
2-process-worker ``LocalCluster`` (``--threads``: thread workers); ``history_``
gives the exact objective after each epoch (the variance-reduced estimators'
snapshot pass evaluates it; plain SGD's is progressive) and the wall time
since the start of ``fit``, from which the time to the target is read.
Methods run in rounds (one fit of each per round, in the same order), so the
machine's load weighs on all alike.  scikit-learn's ``lbfgs`` time to its own
solution is given as the peer.

The plot (next to the result file, ``.png``) shows the relative gap against
wall time of the last round: left the claim's methods (APAM's baselines are sync
AMSGrad and plain async SGD; the default optimizer, preconditioned proximal
SVRG, is shown too), right async AMSGrad for each ``max_staleness``.

Run: ``python benchmarks/bench_amsgrad.py`` (a few minutes; ``--n-samples``,
``--n-features``, ``--max-epochs``, ``--repeats`` for quick tries).  Writes its
report to a new file ``benchmarks/results/bench_amsgrad-<date>-<commit>-<size>.md``
(``--out``: see ``benchmarks/report.py``).
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from report import OUT_HELP, machine, result_path, size_label, write_result  # noqa: E402

N, D, ALPHA = 20_000, 10_000, 1e-5
MAX_EPOCHS = 30
REPEATS = 2
DECADES = (-2, 2)
STALENESS = (None, 16, 4, 1)
#: (label, solver, optimizer, max_staleness, variance_reduction); the first four are
#: the claim's: APAM's baselines are sync AMSGrad and plain (non-adaptive) async
#: SGD, here also the default optimizer (preconditioned proximal SVRG)
METHODS = [("async AMSGrad", "asyb", "amsgrad", None, "auto"),
           ("sync AMSGrad", "sync", "amsgrad", None, "auto"),
           ("async SGD (plain)", "asyb", "sgd", None, None),
           ("async SGD (default: SVRG)", "asyb", "sgd", None, "auto")] + [
    (f"async AMSGrad, max_staleness={s}", "asyb", "amsgrad", s, "auto")
    for s in STALENESS[1:]]
N_CLAIM = 4


def data(n=N, d=D):
    from dask_asyncopt.datasets import make_sparse_classification

    X, y = make_sparse_classification(n, d, random_state=0)
    scales = 10.0 ** np.random.default_rng(1).uniform(*DECADES, size=d)
    return (X @ sp.diags(scales)).tocsr(), y


def objective(X, y, coef, intercept):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return np.logaddexp(0, -z).mean() + 0.5 * ALPHA * np.square(coef).sum()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=N)
    p.add_argument("--n-features", type=int, default=D)
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    p.add_argument("--repeats", type=int, default=REPEATS)
    p.add_argument("--threads", action="store_true", help="thread workers (quick tries)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()

    from distributed import Client, LocalCluster
    from sklearn.linear_model import LogisticRegression

    from dask_asyncopt import AsyncSGDClassifier

    n, d = args.n_samples, args.n_features
    X, y = data(n, d)
    tick = time.perf_counter()
    ref = LogisticRegression(C=1.0 / (n * ALPHA), tol=1e-10, max_iter=20_000).fit(X, y)
    lbfgs = (time.perf_counter() - tick, int(ref.n_iter_[0]))
    f_star = objective(X, y, ref.coef_, ref.intercept_)
    target = f_star * (1 + 1e-3)
    runs = {m[0]: [] for m in METHODS}
    curves = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=not args.threads,
                      dashboard_address=None) as cluster, Client(
            cluster, direct_to_workers=True):
        for _, solver, optimizer, staleness, vr in METHODS:  # compile / load the kernels
            AsyncSGDClassifier(loss="log_loss", solver=solver, optimizer=optimizer,
                               max_staleness=staleness, variance_reduction=vr,
                               max_iter=1).fit(X[:2000], y[:2000])
        for rep in range(args.repeats):
            for label, solver, optimizer, staleness, vr in METHODS:
                est = AsyncSGDClassifier(loss="log_loss", penalty="l2", alpha=ALPHA,
                                         solver=solver, optimizer=optimizer,
                                         max_staleness=staleness, variance_reduction=vr,
                                         tol=None,
                                         max_iter=args.max_epochs, random_state=rep)
                tick = time.perf_counter()
                est.fit(X, y)
                wall = time.perf_counter() - tick
                h = est.history_.dropna(subset=["objective"])
                gaps = (h.objective.to_numpy() - f_star) / f_star
                hit = np.flatnonzero(h.objective.to_numpy() <= target)
                final = (objective(X, y, est.coef_, est.intercept_) - f_star) / f_star
                runs[label].append({
                    "epochs": int(h.epoch.iloc[hit[0]]) if len(hit) else None,
                    "time": float(h.time.iloc[hit[0]]) if len(hit) else None,
                    "final": final, "epoch_time": wall / len(h),
                    "staleness": float(h.staleness_mean.mean())})
                curves[label] = (h.time.to_numpy(), gaps)
                print(label, rep, runs[label][-1], flush=True)
    result = result_path("bench_amsgrad", size_label(n), args.out)
    figure = []
    if result is not None:
        plot = result.with_suffix(".png")
        plot.parent.mkdir(parents=True, exist_ok=True)
        draw(curves, n, d).savefig(plot, dpi=110)
        figure = [f"![relative gap against wall time]({plot.name})", ""]
    text = report(args, runs, f_star, lbfgs, figure)
    print(text)
    write_result("bench_amsgrad", text, out=args.out, path=result)


def draw(curves, n, d):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, labels, title in (
            (axes[0], [m[0] for m in METHODS[:N_CLAIM]], "async vs sync AMSGrad vs async SGD"),
            (axes[1], [m[0] for m in METHODS if m[1:3] == ("asyb", "amsgrad")],
             "async AMSGrad: max_staleness")):
        for label in labels:
            t, gap = curves[label]
            ax.semilogy(t, np.maximum(gap, 1e-9), marker="o", ms=3,
                        label=label.replace("async AMSGrad, ", ""))
        ax.axhline(1e-3, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("wall time (s)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("(F - F*) / F*")
    fig.suptitle(f"L2 logistic, {n:,} x {d:,}, columns scaled over 1e{DECADES[0]}.."
                 f"1e{DECADES[1]}; 2 workers", fontsize=10)
    fig.tight_layout()
    return fig


def _fmt(runs, key, fmt):
    vals = [r[key] for r in runs]
    return " / ".join("not reached" if v is None else fmt.format(v) for v in vals)


def report(args, runs, f_star, lbfgs, figure):
    workers = "threads" if args.threads else "processes"
    lines = [
        "## APAM: async AMSGrad vs sync AMSGrad vs async SGD, badly scaled sparse data "
        "(`benchmarks/bench_amsgrad.py`)",
        "",
        f"Machine: {machine()}; load {os.getloadavg()[0]:.1f} at the end; 2 single-threaded "
        f"Dask workers ({workers}).",
        f"Data: `make_sparse_classification({args.n_samples}, {args.n_features}, "
        f"random_state=0)`, columns scaled log-uniformly over [1e{DECADES[0]}, "
        f"1e{DECADES[1]}]; L2-logistic, alpha {ALPHA:g}; F* = {f_star:.6f} (lbfgs, tol "
        f"1e-10: {lbfgs[0]:.1f} s, {lbfgs[1]} iterations); target F* (1 + 1e-3).  Default "
        f"settings, `tol=None`, `max_iter={args.max_epochs}`; {args.repeats} rounds "
        "(random_state 0, 1, ...), one value per round.",
        "",
        *figure,
        "| method | epochs to target | time to target (s) | gap at the end | s per epoch "
        "| mean staleness |",
        "|---|---|---|---|---|---|",
    ]
    for label, rs in runs.items():
        lines.append(
            f"| {label} | {_fmt(rs, 'epochs', '{}')} | {_fmt(rs, 'time', '{:.2f}')} | "
            f"{_fmt(rs, 'final', '{:.1e}')} | {_fmt(rs, 'epoch_time', '{:.2f}')} | "
            f"{_fmt(rs, 'staleness', '{:.1f}')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
