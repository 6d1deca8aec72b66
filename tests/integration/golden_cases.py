"""Reference fits whose results must not change when the code is reorganised.

Every case is deterministic: ``solver="sync"`` (any number of loops) or a
single worker loop (``asyb``/``adpsgd`` with ``n_workers=1`` run their
exchanges in one order), an int ``random_state`` and a thread cluster.
``golden.npz`` holds what the code at the commit that introduced this file
produced; ``test_golden.py`` refits every case and compares bit for bit.

Regenerate only when a change of results is intended (and say so in the
CHANGELOG); only the cases whose results changed are replaced, and each keeps
``<case>/source``, the change its reference comes from::

    python -m tests.integration.golden_cases "<commit>: <the intended change>"

Cases without a ``source`` come from the commit that introduced this file
(the code before the reorganisation into layers).
"""

import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("golden.npz")


def _data():
    from dask_asyncopt.datasets import make_ratings, make_sparse_classification

    Xs, ys = make_sparse_classification(3000, 800, nnz_per_row=12, random_state=11)
    Xm, ym = make_sparse_classification(2400, 600, nnz_per_row=12, n_classes=3,
                                        random_state=12)
    rng = np.random.default_rng(13)
    Xd = rng.normal(size=(2000, 12)) * rng.uniform(0.5, 2.0, size=12)
    yd = Xd @ rng.normal(size=12) + 1.0 + 0.3 * rng.normal(size=2000)
    yc = (Xd[:, 0] + 0.5 * Xd[:, 1] + 0.5 * rng.normal(size=2000) > 0).astype(int)
    R, r = make_ratings(300, 200, 8000, random_state=14)
    return {"sparse": (Xs, ys), "multi": (Xm, ym), "dense_reg": (Xd, yd),
            "dense_clf": (Xd, yc), "ratings": (R, r)}


def _linear_cases():
    base = dict(max_iter=5, tol=None, random_state=0)
    out = {}
    for solver, loops in (("sync", 2), ("asyb", 1), ("adpsgd", 1)):
        w = dict(base, solver=solver, n_workers=loops)
        out[f"clf-l1-svrg-{solver}"] = ("clf", "sparse", dict(
            w, loss="log_loss", penalty="l1", alpha=1e-4))
        out[f"clf-hinge-sgd-{solver}"] = ("clf", "sparse", dict(
            w, loss="hinge", penalty="l2", alpha=1e-4))
        out[f"clf-multi-enet-{solver}"] = ("clf", "multi", dict(
            w, loss="log_loss", penalty="elasticnet", alpha=1e-4, l1_ratio=0.5))
        out[f"reg-l2-svrg-{solver}"] = ("reg", "dense_reg", dict(
            w, penalty="l2", alpha=1e-3))
        out[f"reg-sgd-invscaling-{solver}"] = ("reg", "dense_reg", dict(
            w, penalty="l2", alpha=1e-3, variance_reduction=None))
        out[f"clf-amsgrad-l1-{solver}"] = ("clf", "sparse", dict(
            w, loss="log_loss", penalty="l1", alpha=1e-4, optimizer="amsgrad"))
        out[f"clf-amsgrad-dense-{solver}"] = ("clf", "dense_clf", dict(
            w, loss="log_loss", penalty="l2", alpha=1e-3, optimizer="amsgrad"))
    # stopping rules and between-epoch step policies (deterministic: sync)
    out["clf-adaptive-sync"] = ("clf", "sparse", dict(
        solver="sync", n_workers=2, random_state=0, loss="log_loss", penalty="l1",
        alpha=1e-4, variance_reduction=None, learning_rate="adaptive", eta0=0.5,
        max_iter=30, tol=1e-3, n_iter_no_change=2))
    out["clf-default-tol-sync"] = ("clf", "sparse", dict(
        solver="sync", n_workers=2, random_state=0, loss="log_loss", penalty="l1",
        alpha=1e-4, max_iter=40))
    out["clf-early-stopping-sync"] = ("clf", "dense_clf", dict(
        solver="sync", n_workers=2, random_state=0, loss="log_loss", alpha=1e-3,
        early_stopping=True, max_iter=30))
    return out


def _mf_cases():
    base = dict(n_factors=6, max_iter=4, random_state=0)
    out = {}
    for solver, loops in (("sync", 2), ("asyb", 1), ("adpsgd", 1)):
        out[f"mf-adagrad-{solver}"] = dict(base, solver=solver, n_workers=loops)
        out[f"mf-amsgrad-{solver}"] = dict(base, solver=solver, n_workers=loops,
                                           optimizer="amsgrad")
    out["mf-constant-sync"] = dict(base, solver="sync", n_workers=2,
                                   learning_rate="constant", eta0=0.02)
    out["mf-early-stopping-sync"] = dict(base, solver="sync", n_workers=2, max_iter=12,
                                         early_stopping=True, tol=1e-3, n_iter_no_change=2)
    return out


LINEAR_CASES = _linear_cases()
MF_CASES = _mf_cases()


def fit_case(name):
    """Fit case ``name``; return its arrays (what the golden file stores)."""
    from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor, MatrixFactorization

    data = _data()
    if name in MF_CASES:
        X, y = data["ratings"]
        mf = MatrixFactorization(**MF_CASES[name]).fit(X, y)
        return {"user_factors": mf.user_factors_, "item_factors": mf.item_factors_,
                "user_bias": mf.user_bias_, "item_bias": mf.item_bias_,
                "train_rmse": mf.history_["train_rmse"].to_numpy(),
                "n_iter": np.array([mf.n_iter_, mf.best_epoch_])}
    kind, which, params = LINEAR_CASES[name]
    X, y = data[which]
    est = (AsyncSGDClassifier if kind == "clf" else AsyncSGDRegressor)(**params).fit(X, y)
    return {"coef": est.coef_, "intercept": est.intercept_,
            "objective": est.history_["objective"].to_numpy(),
            "n_iter": np.array([est.n_iter_, est.t_])}


def all_cases():
    return list(LINEAR_CASES) + list(MF_CASES)


def main(source):
    from distributed import Client, LocalCluster

    arrays = {}
    if GOLDEN.exists():
        with np.load(GOLDEN) as f:
            arrays = dict(f)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        for name in all_cases():
            got = fit_case(name)
            if all(f"{name}/{k}" in arrays and np.array_equal(v, arrays[f"{name}/{k}"])
                   for k, v in got.items()):
                continue
            arrays.update({f"{name}/{k}": v for k, v in got.items()})
            arrays[f"{name}/source"] = np.array(source)
            print("changed:", name, flush=True)
    np.savez_compressed(GOLDEN, **arrays)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "regenerated")
