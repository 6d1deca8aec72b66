"""``python -m dask_asyncopt demo``: a real fit on the embedded default cluster."""

import argparse
import time

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

from .datasets import make_sparse_classification
from .estimators.linear_model import AsyncSGDClassifier


def logistic_objective(X, y, coef, intercept, alpha):
    """Mean log-loss + alpha * L1, the objective both models minimise."""
    z = (X @ coef.ravel() + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return np.logaddexp(0, -z).mean() + alpha * np.abs(coef).sum()


def demo(n_samples, n_features, alpha, seed):
    print(f"data: {n_samples:,} rows x {n_features:,} sparse features, 20 non-zeros a row "
          "(synthetic click-through-like)")
    X, y = make_sparse_classification(n_samples, n_features, random_state=seed)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2,
                                                        random_state=seed)
    models = {
        "dask_asyncopt AsyncSGDClassifier (asyb, embedded LocalCluster)":
            AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, random_state=seed),
        "scikit-learn SGDClassifier (1 core)":
            SGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, random_state=seed),
    }
    # Warm-up outside the timed region: cluster start and Numba kernels load once.
    AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, max_iter=1,
                       tol=None).fit(X_train[:2000], y_train[:2000])
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(X_train, y_train)
        wall = time.perf_counter() - start
        obj = logistic_objective(X_train, y_train, model.coef_, model.intercept_, alpha)
        print(f"\n{name}\n  epochs {model.n_iter_}, wall time {wall:.2f} s, "
              f"objective {obj:.5f}, test accuracy {model.score(X_test, y_test):.4f}, "
              f"non-zero coefficients {np.count_nonzero(model.coef_):,}")
        if hasattr(model, "history_"):
            last = model.history_.iloc[-1]
            print(f"  staleness mean {last.staleness_mean:.2f} / max "
                  f"{int(last.staleness_max)}, compute fraction "
                  f"{last.compute_fraction:.0%} (last epoch)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dask_asyncopt")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="fit a sparse L1-logistic model, compare scikit-learn")
    d.add_argument("--n-samples", type=int, default=200_000)
    d.add_argument("--n-features", type=int, default=100_000)
    d.add_argument("--alpha", type=float, default=5e-6)
    d.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.n_samples, args.n_features, args.alpha, args.seed)


if __name__ == "__main__":
    main()
