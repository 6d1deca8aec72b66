"""Relative objective gap of default-settings fits against scikit-learn's exact optimum.

Run from the repository root::

    python benchmarks/bench_gap.py [--n-samples 100000 --n-features 100000 \
        --ctr-samples 50000 --ctr-bits 20 --ctr-alpha 2e-5 --saga-max-iter 10000 \
        --solvers asyb,sync,adpsgd --processes --reference liblinear]

Two data sets: ``make_sparse_classification`` (uniform columns, 20 non-zeros a
row; L1 and L2 logistic regression) and the Zipf click-through data of
``benchmarks/ctr_data.py`` (26 binary non-zeros a row; L1).  For each, the
reference optimum F* is the lower of ``LogisticRegression(solver="saga",
C=1/(n*alpha), tol=--saga-tol)`` (at most ``--saga-max-iter`` epochs) on the
same data and a long fit of ours (``max_iter=--long-epochs, tol=None``): at this size
saga needs thousands of epochs for ``tol=1e-8``, and taking the lower value
can only make our gap look larger.  ``--reference liblinear`` takes
``LogisticRegression(solver="liblinear", intercept_scaling=100, tol=1e-8)``
instead of saga: an exact coordinate-descent solver, minutes faster on these
data (its intercept is penalised by ``alpha |b| / 100``: a relative error
below 1e-5 on ``F*``).  Ours is
``AsyncSGDClassifier(loss="log_loss", penalty=..., alpha=..., solver=...)`` for each of
``--solvers`` with every other parameter at its default, on a 2-worker
``LocalCluster`` of threads (``--processes``: processes); the
report gives the gap where the default stopping rule stopped and, when the
fit reports them, the ``gap_bound`` and ``gap_estimate`` it stopped on.  The package
measured is the one imported (its path and commit are in the report: run it
with another checkout on ``PYTHONPATH`` for a before/after table).
Writes its report to a new file ``benchmarks/results/bench_gap-<date>-<commit>-<size>.md``
(``--out``: see ``benchmarks/report.py``).
"""

import argparse
import functools
import math
import time
import warnings
from pathlib import Path

import numpy as np
from ctr_data import make_zipf_ctr  # benchmarks/ is on sys.path
from distributed import Client, LocalCluster
from peers import penalty_args
from report import OUT_HELP, size_label, write_result
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification


def objective(X, y, coef, intercept, alpha, l1_ratio):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    pen = l1_ratio * np.abs(coef).sum() + (1 - l1_ratio) * 0.5 * np.square(coef).sum()
    return np.logaddexp(0, -z).mean() + alpha * pen


def package_label():
    """Where the measured ``dask_asyncopt`` comes from: its checkout and commit."""
    import subprocess

    import dask_asyncopt

    root = Path(dask_asyncopt.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "?"
    return f"`{root}` at `{sha}`"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=100_000,
                   help="rows of make_sparse_classification (0: skip it)")
    p.add_argument("--n-features", type=int, default=100_000)
    p.add_argument("--ctr-samples", type=int, default=50_000,
                   help="rows of the Zipf click-through data (0: skip it)")
    p.add_argument("--ctr-bits", type=int, default=20, help="its 2**bits hashed columns")
    p.add_argument("--ctr-alpha", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--saga-tol", type=float, default=1e-6)
    p.add_argument("--saga-max-iter", type=int, default=10_000)
    p.add_argument("--long-epochs", type=int, default=60,
                   help="epochs of our tol=None fit that gives F* with saga")
    p.add_argument("--reference", choices=("saga", "liblinear"), default="saga")
    p.add_argument("--solvers", default="asyb,sync",
                   help="ours, comma-separated (adpsgd too; optimizer=amsgrad as asyb-amsgrad)")
    p.add_argument("--processes", action="store_true", help="process workers (else threads)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()
    problems = []
    if args.n_samples:
        X, y = make_sparse_classification(args.n_samples, args.n_features,
                                          random_state=args.seed)
        problems += [("uniform", X, y, "l1", 1e-5), ("uniform", X, y, "l2", 1e-5)]
    if args.ctr_samples:
        Xc, yc = make_zipf_ctr(args.ctr_samples, 2 ** args.ctr_bits, args.seed)
        problems.append(("zipf-ctr", Xc, yc, "l1", args.ctr_alpha))
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=args.processes,
                      dashboard_address=None) as cluster, Client(cluster):
        for name, X, y, penalty, alpha in problems:
            l1 = 1.0 if penalty == "l1" else 0.0
            tick = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                exact = (dict(solver="liblinear", intercept_scaling=100.0, tol=1e-8,
                              max_iter=1000) if args.reference == "liblinear" else
                         dict(solver="saga", tol=args.saga_tol, max_iter=args.saga_max_iter))
                ref = LogisticRegression(**penalty_args(penalty),
                                         C=1.0 / (X.shape[0] * alpha), **exact).fit(X, y)
            t_ref = time.perf_counter() - tick
            f_saga = objective(X, y, ref.coef_, ref.intercept_, alpha, l1)
            f_long = math.inf
            if args.long_epochs:
                long = AsyncSGDClassifier(loss="log_loss", penalty=penalty, alpha=alpha,
                                          max_iter=args.long_epochs, tol=None).fit(X, y)
                f_long = objective(X, y, long.coef_, long.intercept_, alpha, l1)
            f_star = min(f_saga, f_long)
            for solver in [*args.solvers.split(","), "scikit-learn SGDClassifier"]:
                tick = time.perf_counter()
                ours, _, optimizer = solver.partition("-")
                model = SGDClassifier if solver.startswith("scikit") else functools.partial(
                    AsyncSGDClassifier, solver=ours, **({"optimizer": optimizer}
                                                        if optimizer else {}))
                est = model(loss="log_loss", penalty=penalty, alpha=alpha).fit(X, y)
                t = time.perf_counter() - tick
                f = objective(X, y, est.coef_, est.intercept_, alpha, l1)
                hist = getattr(est, "history_", None)
                bound = "—"
                if hist is not None and "gap_bound" in hist:
                    last = hist.iloc[-1]
                    bound = f"{last['gap_bound']:.1e} / {last['gap_estimate']:.1e}"
                long_f = f"{f_long:.6f}" if args.long_epochs else "—"
                rows.append(f"| {name} | {penalty} | {alpha:g} | {solver} | {est.n_iter_} | "
                            f"{t:.1f} | {f:.6f} | {f_saga:.6f} ({ref.n_iter_[0]} iterations, "
                            f"{t_ref:.0f} s) | {long_f} | {(f - f_star) / f_star:.1e} | "
                            f"{bound} | {np.count_nonzero(est.coef_):,} / "
                            f"{np.count_nonzero(ref.coef_):,} |")
                print(rows[-1], flush=True)
    ctr = (f" and `make_zipf_ctr` ({args.ctr_samples:,} x 2^{args.ctr_bits}, 26 binary "
           f"non-zeros a row, Zipf columns; `--ctr-alpha {args.ctr_alpha:g}`)"
           if args.ctr_samples else "")
    uniform = (f"`make_sparse_classification` ({args.n_samples:,} x {args.n_features:,}, 20 "
               f"non-zeros a row, seed {args.seed})" if args.n_samples else "")
    text = "\n".join([
        "## Default settings against the exact optimum (`benchmarks/bench_gap.py`)",
        "",
        f"{uniform}{ctr if uniform else ctr.removeprefix(' and ')}, 2-worker "
        f"{'process' if args.processes else 'thread'} cluster, "
        "`AsyncSGDClassifier(loss='log_loss', penalty=..., alpha=..., solver=...)` with all "
        "other parameters at their defaults (so the default `tol=1e-3` decides when to stop).  "
        + (f"saga with `tol={args.saga_tol:g}`, at most {args.saga_max_iter} epochs.  "
           if args.reference == "saga" else
           "liblinear with `intercept_scaling=100, tol=1e-8`.  ")
        + f"Target: relative gap <= 1e-3.  Package measured: {package_label()}.",
        "",
        f"| data | penalty | alpha | solver | epochs | fit (s) | F ours | F {args.reference} | "
        f"F ours, {args.long_epochs} epochs | relative gap to the lower | "
        f"gap_bound / gap_estimate at the stop | non-zeros ours / {args.reference} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(text)
    tag = "-".join(filter(None, [args.n_samples and size_label(args.n_samples), args.ctr_samples
                                 and f"ctr{size_label(args.ctr_samples)}"]))
    write_result("bench_gap", text, tag=tag, out=args.out)


if __name__ == "__main__":
    main()
