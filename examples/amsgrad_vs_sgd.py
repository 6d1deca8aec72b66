"""Per-coordinate steps on badly scaled sparse features.

Column scales spread over three decades (log-uniform in [1e-2, 1e1]) make a
single step size wrong for most coordinates: ``1 / L`` for the largest row is
tiny for the small-scale columns.  Both of the estimator's optimizers adapt
per coordinate: the default SVRG steps are preconditioned by each column's
``sqrt(rows touching it) / sum of squares`` (invariant to the column's scale) and
normalised per row, AMSGrad divides by ``sqrt(vhat)`` and by each column's scale.

    python examples/amsgrad_vs_sgd.py [--size small|medium|large]

Prints, for one step for every coordinate (``learning_rate="constant"`` at
``1 / L``), the default ``optimizer="sgd"`` and ``"amsgrad"`` (asynchronous,
2 workers on the default embedded cluster), the objective after each of a few
epochs.
"""

import argparse

import numpy as np
import scipy.sparse as sp

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification

SIZES = {"small": (20_000, 10_000), "medium": (100_000, 50_000),
         "large": (1_000_000, 500_000)}
ALPHA = 1e-5


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args()
    n, d = SIZES[args.size]
    X, y = make_sparse_classification(n, d, random_state=0)
    scales = 10.0 ** np.random.default_rng(1).uniform(-2, 1, size=d)
    X = (X @ sp.diags(scales)).tocsr()
    print(f"{n:,} rows x {d:,} features, column scales 1e-2..1e1; L2 logistic, "
          f"alpha {ALPHA:g}; objective after each epoch:")
    # 1 / L for the worst row: log loss curvature 1/4, the intercept's 1 included
    one_step = 1.0 / (0.25 * (X.multiply(X).sum(axis=1).max() + 1.0))
    runs = {"one step": {"learning_rate": "constant", "eta0": one_step},
            "sgd": {}, "amsgrad": {"optimizer": "amsgrad"}}
    curves = {}
    for name, params in runs.items():
        est = AsyncSGDClassifier(loss="log_loss", penalty="l2", alpha=ALPHA,
                                 max_iter=args.epochs, tol=None, random_state=0,
                                 **params).fit(X, y)
        curves[name] = est.history_.objective.to_numpy()
    best = min(c.min() for c in curves.values())
    for name, curve in curves.items():
        shown = ", ".join(f"{v:.5f}" for v in curve)
        print(f"{name:>8}: {shown}")
        print(f"{'':>8}  final relative gap to the best: {(curve[-1] - best) / best:.1e}")


if __name__ == "__main__":
    main()
