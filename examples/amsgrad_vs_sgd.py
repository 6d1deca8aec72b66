"""Adaptive (AMSGrad) vs plain steps on badly scaled sparse features.

Column scales spread over three decades (log-uniform in [1e-2, 1e1]) make a
single step size wrong for most coordinates: the default SVRG step, ``1 / L``
for the largest row, is tiny for the small-scale columns.  AMSGrad's
per-coordinate step (``1 / sqrt(vhat)``) adapts to each column.

    python examples/amsgrad_vs_sgd.py [--size small|medium|large]

Prints, for ``optimizer="sgd"`` and ``"amsgrad"`` (asynchronous, 2 workers on
the default embedded cluster), the objective after each of a few epochs.
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
    curves = {}
    for optimizer in ("sgd", "amsgrad"):
        est = AsyncSGDClassifier(loss="log_loss", penalty="l2", alpha=ALPHA,
                                 optimizer=optimizer, max_iter=args.epochs, tol=None,
                                 random_state=0).fit(X, y)
        curves[optimizer] = est.history_.objective.to_numpy()
    best = min(c.min() for c in curves.values())
    for optimizer, curve in curves.items():
        shown = ", ".join(f"{v:.5f}" for v in curve)
        print(f"{optimizer:>8}: {shown}")
        print(f"{'':>8}  final relative gap to the best: {(curve[-1] - best) / best:.1e}")


if __name__ == "__main__":
    main()
