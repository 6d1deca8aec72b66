"""Recommender: matrix factorisation of explicit ratings, then top-n and similar items.

Synthetic ratings from ``dask_asyncopt.datasets.make_ratings`` (a rank-10 model
with user and item biases, power-law activity and rating noise 0.5, so the
best possible test RMSE is about 0.5).  ``MatrixFactorization`` is fitted on
90% of the ratings with asynchronous stratified SGD on Dask; the script prints
the test RMSE next to the global mean's and the noise floor, recommends items
to a few users and lists the items most similar to the most rated one.  As the
data are synthetic, the recommendations are checked against the generating
model: the true mean rating of what is recommended, and the true-factor
similarity of the neighbours.

    python examples/recommender.py                    # small, < 1 minute
    python examples/recommender.py --size large
    python examples/recommender.py --n-ratings 300000 --verbose 2
    python examples/recommender.py --scheduler tcp://host:8786
"""

import argparse
import time

import numpy as np

from dask_asyncopt import MatrixFactorization
from dask_asyncopt.datasets import make_ratings
from dask_asyncopt.metrics import rmse

SIZES = {"small": 100_000, "medium": 1_000_000, "large": 10_000_000}


def shape_for(n_ratings):
    """Users and items for ``n_ratings``: ~50 ratings a user, ~100 an item."""
    return max(n_ratings // 50, 100), max(n_ratings // 100, 200)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="number of ratings: " + ", ".join(
                            f"{k} {v:,}" for k, v in SIZES.items()))
    parser.add_argument("--n-ratings", type=int, default=None,
                        help="number of ratings (overrides --size)")
    parser.add_argument("--n-factors", type=int, default=32, help="rank of the model")
    parser.add_argument("--max-iter", type=int, default=20, help="epochs")
    parser.add_argument("--verbose", type=int, default=1,
                        help="0 silent, 1 progress bar, 2 bar and per-epoch log lines")
    parser.add_argument("--scheduler", default=None,
                        help="address of a Dask scheduler (default: an embedded local "
                             "cluster)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.n_ratings or SIZES[args.size]
    if n < 1000:
        parser.error("--n-ratings must be at least 1000")

    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)  # the active client: fit runs there
    n_users, n_items = shape_for(n)
    X, y, truth = make_ratings(n_users, n_items, n, return_truth=True,
                               random_state=args.seed)
    rng = np.random.default_rng(args.seed)
    test = rng.random(n) < 0.1
    X_train, y_train, X_test, y_test = X[~test], y[~test], X[test], y[test]
    print(f"{n:,} ratings of {n_items:,} items by {n_users:,} users "
          f"({test.sum():,} held out); rating noise {truth['noise']}")

    mf = MatrixFactorization(n_factors=args.n_factors, max_iter=args.max_iter,
                             random_state=args.seed, verbose=args.verbose)
    t0 = time.perf_counter()
    mf.fit(X_train, y_train)
    wall = time.perf_counter() - t0
    print(f"fit: {mf.n_iter_} epochs in {wall:.1f} s (including placing the data and "
          f"compiling on first use), train RMSE {mf.history_['train_rmse'].iloc[-1]:.4f}")

    mean_only = rmse(y_test, np.full(y_test.shape, y_train.mean()))
    print(f"test RMSE {rmse(y_test, mf.predict(X_test)):.4f} (global mean: "
          f"{mean_only:.4f}; noise floor: {truth['noise']:.4f})")

    def true_rating(users, items):
        return (truth["mean"] + truth["user_bias"][users][:, None]
                + truth["item_bias"][items]
                + np.einsum("uk,unk->un", truth["user_factors"][users],
                            truth["item_factors"][items]))

    users = np.array([0, 1, 2])
    items, scores = mf.recommend(users, n=5)
    unseen = np.ones((users.shape[0], n_items), dtype=bool)
    for row, u in enumerate(users):
        unseen[row, X_train[X_train[:, 0] == u, 1]] = False
    print("recommendations (item: predicted rating):")
    for row, u in enumerate(users):
        print(f"  user {u}: " + ", ".join(
            f"{i}: {s:.2f}" for i, s in zip(items[row], scores[row], strict=True)))
    every = np.broadcast_to(np.arange(n_items), (users.shape[0], n_items))
    recommended = true_rating(users, items).mean()
    average = true_rating(users, every)[unseen].mean()
    print(f"true mean rating of the recommended items {recommended:.2f} "
          f"(of all unseen items: {average:.2f})")

    counts = np.bincount(X_train[:, 1], minlength=n_items)
    item = int(counts.argmax())
    neighbours, sims = mf.similar_items([item], n=5)
    Q = truth["item_factors"] / np.linalg.norm(truth["item_factors"], axis=1)[:, None]
    true_sims = Q[neighbours[0]] @ Q[item]
    print(f"items similar to item {item} (rated {counts[item]:,} times): " + ", ".join(
        f"{i} ({s:.2f})" for i, s in zip(neighbours[0], sims[0], strict=True)))
    print(f"true-factor cosine of those neighbours {true_sims.mean():.2f} (of all "
          f"items: {(Q @ Q[item]).mean():.2f})")
    if client is not None:
        client.close()


if __name__ == "__main__":
    main()
