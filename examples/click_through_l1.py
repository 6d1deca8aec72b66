"""Click-through prediction: L1-penalised logistic regression on hashed features.

A synthetic impression log (site, ad, device, hour, ad position, user segment)
whose click probability follows a logistic model with an ad x segment
interaction; every field value and the crossed feature are hashed into
``2**hash_bits`` columns (the "hashing trick": no vocabulary, unseen values
need no refit).  ``AsyncSGDClassifier`` fits an L1-logistic model on the
sparse matrix with AsyB-ProxSGD; the L1 penalty keeps the model small.  The
script reports the test log-loss and ROC AUC against a constant-CTR baseline
and the share of non-zero weights.

    python examples/click_through_l1.py                  # small, < 1 minute
    python examples/click_through_l1.py --size large
    python examples/click_through_l1.py --n-samples 300000 --verbose 2
    python examples/click_through_l1.py --scheduler tcp://host:8786
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils import murmurhash3_32

from dask_asyncopt import AsyncSGDClassifier

SIZES = {"small": 50_000, "medium": 400_000, "large": 2_000_000}

# field -> number of distinct values (Zipf-distributed: a few sites and ads dominate)
FIELDS = {"site": 5_000, "ad": 20_000, "device": 5, "hour": 24, "position": 4,
          "segment": 200}


def make_impressions(n, seed):
    """Field values per impression and a click drawn from a logistic model."""
    rng = np.random.default_rng(seed)
    values = {}
    for field, cardinality in FIELDS.items():
        ranks = rng.zipf(1.3, size=n) if cardinality > 100 else rng.integers(
            1, cardinality + 1, size=n)
        values[field] = (np.minimum(ranks, cardinality) - 1).astype(np.int32)
    # true effects: most values do nothing (what L1 should find), some matter a lot
    logit = np.full(n, -2.2)
    for field, cardinality in FIELDS.items():
        effect = rng.normal(scale=0.8, size=cardinality) * (rng.random(cardinality) < 0.3)
        logit += effect[values[field]]
    cross = rng.normal(scale=1.0, size=(FIELDS["ad"], FIELDS["segment"]))
    keep = rng.random(FIELDS["ad"]) < 0.05  # a few ads appeal to particular segments
    logit += (cross * keep[:, None])[values["ad"], values["segment"]]
    clicks = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return values, clicks


def hash_features(values, hash_bits):
    """One hashed column per field value and per ad x segment pair (murmurhash3)."""
    n = len(next(iter(values.values())))
    n_features = 2**hash_bits
    tokens = list(values.items())
    tokens.append(("ad_x_segment", values["ad"] * np.int32(FIELDS["segment"])
                   + values["segment"]))
    cols = [murmurhash3_32(v, seed=seed, positive=True) % n_features
            for seed, (_, v) in enumerate(tokens)]
    rows = np.repeat(np.arange(n), len(tokens)).reshape(n, -1).T.ravel()
    cols = np.concatenate(cols)
    # value 1/sqrt(tokens): rows of unit norm, so one step size suits every row
    data = np.full(len(cols), 1.0 / np.sqrt(len(tokens)))
    X = sp.csr_matrix((data, (rows, cols)), shape=(n, n_features))
    X.sum_duplicates()  # two tokens of a row may hash to one column
    return X


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="number of impressions: " + ", ".join(
                            f"{k} {v:,}" for k, v in SIZES.items()))
    parser.add_argument("--n-samples", type=int, default=None,
                        help="number of impressions (overrides --size)")
    parser.add_argument("--hash-bits", type=int, default=18, help="2**bits hashed columns")
    parser.add_argument("--alpha", type=float, default=None,
                        help="L1 strength (default 1.5 / training rows: more data, "
                             "weaker prior)")
    parser.add_argument("--max-iter", type=int, default=20, help="epochs at most")
    parser.add_argument("--verbose", type=int, default=1,
                        help="0 silent, 1 progress bar, 2 bar and per-epoch log lines")
    parser.add_argument("--scheduler", default=None,
                        help="address of a Dask scheduler (default: an embedded local "
                             "cluster)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.n_samples or SIZES[args.size]

    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)  # the active client: fit runs there
    t0 = time.perf_counter()
    values, clicks = make_impressions(n, args.seed)
    X = hash_features(values, args.hash_bits)
    n_train = int(0.8 * n)
    X_train, X_test = X[:n_train], X[n_train:]
    y_train, y_test = clicks[:n_train], clicks[n_train:]
    print(f"{n:,} impressions ({y_train.mean():.1%} clicked), {X.shape[1]:,} hashed "
          f"columns, {X.nnz / n:.1f} non-zeros a row; made in "
          f"{time.perf_counter() - t0:.1f} s")

    alpha = args.alpha or 1.5 / n_train
    clf = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha,
                             max_iter=args.max_iter, tol=1e-4, random_state=args.seed,
                             verbose=args.verbose)
    t0 = time.perf_counter()
    clf.fit(X_train, y_train)
    wall = time.perf_counter() - t0

    p = clf.predict_proba(X_test)[:, 1]
    baseline = log_loss(y_test, np.full(len(y_test), y_train.mean()))
    last = clf.history_.iloc[-1]
    print(f"fit (alpha {alpha:.2g}): {clf.n_iter_} epochs in {wall:.1f} s (including "
          f"placing the data and compiling on first use), objective "
          f"{last.objective:.4f}, staleness mean {last.staleness_mean:.2f} / max "
          f"{int(last.staleness_max)}")
    print(f"test log-loss {log_loss(y_test, p):.4f} (constant CTR: {baseline:.4f}), "
          f"ROC AUC {roc_auc_score(y_test, p):.3f}")
    print(f"non-zero weights: {np.count_nonzero(clf.coef_):,} of {clf.coef_.size:,}")
    if client is not None:
        client.close()


if __name__ == "__main__":
    main()
