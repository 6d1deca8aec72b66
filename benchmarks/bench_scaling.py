"""Benchmark: badly scaled features, against the same data standardised.

Run from the repository root::

    python benchmarks/bench_scaling.py [--n-samples 8000 --n-features 30 --seeds 0 1 2]

The problem: L2 logistic regression (alpha 1e-4) on correlated Gaussian
features with logistic noise, ``F = mean(log-loss) + alpha/2 |w|^2``; ``F*``
from scikit-learn's ``LogisticRegression(newton-cholesky, tol=1e-12)``.
Variants: the standardised data, one column multiplied by 1000, and columns
multiplied by scales spanning 1e-3..1e3 (log-spaced).  For every solver x
optimizer (default settings, ``tol=None``, 30 epochs, a 2-worker thread
cluster): the epochs until the exact objective in ``history_`` is within a
relative 1e-3 of ``F*``, and the final relative gap.  scikit-learn's
``SGDClassifier`` (defaults, same alpha) is the peer: its final gap.

What is measured is epochs, not time: the claim is that a column's scale
does not change how many epochs a fit needs (the preconditioned steps and
AMSGrad's column scales are invariant to it), which a thread cluster shows
as well as any.
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import OUT_HELP, write_result  # noqa: E402

ALPHA = 1e-4
SPREADS = ("standardised", "one column x1000", "1e-3..1e3")


def problem(spread, seed, n, d):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) @ np.linalg.cholesky(0.7 * np.eye(d) + 0.3)
    y = (X @ rng.normal(size=d) + rng.logistic(size=n) > 0).astype(int)
    scale = np.ones(d)
    if spread == "one column x1000":
        scale[0] = 1000.0
    elif spread == "1e-3..1e3":
        scale = np.logspace(-3, 3, d)
    return X * scale, y


def objective(X, y, coef, intercept):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return float(np.logaddexp(0, -z).mean() + ALPHA * 0.5 * np.square(coef).sum())


def run(args):
    from distributed import Client, LocalCluster
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    from dask_asyncopt import AsyncSGDClassifier

    rows = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        for seed in args.seeds:
            for spread in SPREADS:
                X, y = problem(spread, seed, args.n_samples, args.n_features)
                ref = LogisticRegression(C=1.0 / (X.shape[0] * ALPHA), solver="newton-cholesky",
                                         tol=1e-12, max_iter=1000).fit(X, y)
                f_star = objective(X, y, ref.coef_, ref.intercept_)
                sk = SGDClassifier(loss="log_loss", alpha=ALPHA, random_state=seed).fit(X, y)
                rows.setdefault(("scikit-learn SGD", "-", spread), []).append(
                    (None, (objective(X, y, sk.coef_, sk.intercept_) - f_star) / f_star))
                for optimizer in ("sgd", "amsgrad"):
                    for solver in ("asyb", "sync", "adpsgd"):
                        est = AsyncSGDClassifier(
                            loss="log_loss", alpha=ALPHA, solver=solver, optimizer=optimizer,
                            max_iter=args.max_iter, tol=None, random_state=seed).fit(X, y)
                        gaps = (est.history_["objective"].to_numpy() - f_star) / f_star
                        reached = np.flatnonzero(gaps <= 1e-3)
                        final = (objective(X, y, est.coef_, est.intercept_) - f_star) / f_star
                        rows.setdefault((optimizer, solver, spread), []).append(
                            (int(reached[0]) + 1 if len(reached) else None, final))
                        print(optimizer, solver, spread, seed, rows[optimizer, solver, spread][-1],
                              file=sys.stderr, flush=True)

    def epochs(v):
        got = [e for e, _ in v if e is not None]
        missed = len(v) - len(got)
        text = "-" if not got else f"{statistics.median(got):g} ({min(got)}-{max(got)})"
        return text + (f", {missed} of {len(v)} not within {args.max_iter}" if missed else "")

    lines = [f"{args.n_samples} x {args.n_features}, seeds {args.seeds}; epochs to a relative "
             f"gap 1e-3 (median, range) and the largest final gap after {args.max_iter} epochs.",
             "", "| optimizer | solver | " + " | ".join(SPREADS) + " |",
             "|---|---|" + "---|" * len(SPREADS)]
    for optimizer, solver in sorted({k[:2] for k in rows}, key=lambda k: k[0] != "sgd"):
        cells = []
        for spread in SPREADS:
            v = rows[optimizer, solver, spread]
            worst = max(g for _, g in v)
            cells.append(f"gap {worst:.1e}" if optimizer.startswith("scikit") else
                         f"{epochs(v)}; gap {worst:.1e}")
        lines.append(f"| {optimizer} | {solver} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-samples", type=int, default=8000)
    p.add_argument("--n-features", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-iter", type=int, default=30)
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()
    text = run(args)
    print(text)
    write_result("bench_scaling", text, tag=f"{args.n_samples // 1000}k", out=args.out)


if __name__ == "__main__":
    main()
