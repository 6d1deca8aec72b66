"""Benchmark: MatrixFactorization vs LIBMF and Surprise's SVD, in one run.

Run from the repository root::

    # the headline: 10^6 users x 10^5 items, 10M ratings, rank 32 and 128
    python benchmarks/bench_mf.py --n-users 1000000 --n-items 100000 \
        --n-ratings 10000000 --rank 32 128 --repeats 3

    # the small default (10k x 5k, 500k ratings, rank 32; a few minutes)
    python benchmarks/bench_mf.py

Data: ``make_ratings(n_users, n_items, n_ratings, rank=--true-rank (10),
noise=0.5, random_state=0)``, a random 90/10 train/test split.  ``--rank``
is the model rank of every method (one block of results per rank); the
data's own rank stays ``--true-rank``.  The target is LIBMF's test RMSE after
its 20 iterations (``libmf`` on PyPI, 2 threads, defaults otherwise; its
``predict`` is unreliable, so predictions are computed from its factors
``P[u] . Q[i]``, and its fallback, the training mean, for an id without
training ratings, as LIBMF's own ``mf_predict`` does).  For each method the
wall time to reach that RMSE:

* LIBMF: the wall time of its 20-iteration fit (its data conversion included);
* ours: a fresh ``MatrixFactorization(n_factors=rank)`` fit with ``max_iter=k``
  for the smallest ``k`` whose test RMSE reaches the target (scan k = 1, 2,
  ...); the time includes validation, id mapping, stratification, data
  placement, the epochs, gathering the model and teardown;
* Surprise ``SVD`` (single-threaded, its defaults): ``--surprise-epochs``
  epochs (default 20; at more than 2M ratings 2, as 20 would take most of an
  hour): the time of ``fit`` (Surprise's data set construction excluded) and
  its per-epoch time; its RMSE only when it ran 20 epochs.

Ours runs on ``LocalCluster(n_workers=2, threads_per_worker=1,
processes=True)`` (one cluster per rank, started and warmed up outside every
timed region).  LIBMF and Surprise each fit in a fresh child process (so
their peak memory is their own; the data is passed through a ``.npy`` file,
loaded before the clock starts).  Rounds are interleaved: LIBMF, ours, LIBMF,
ours, ...; the ratio ours / LIBMF is taken round by round and reported as a
range (the machine is shared: absolute times are noise).

Memory.  Peak RSS (``VmHWM``, reset before each fit through
``/proc/self/clear_refs``) of the driver, of each worker, and of LIBMF's
process, each above its RSS just before the fit.  Per factor row (users plus
items): our store's packed row (``[factors, bias, G]`` in float64: ``(rank +
2) * 8`` bytes), and the measured peak growth of the workers minus their rating
shards (16 bytes a rating) per row; the floor is ``rank * 8`` bytes (float64)
or ``rank * 4`` (float32, as LIBMF stores its factors); LIBMF's measured peak
growth minus its copy of the ratings (12 bytes a rating) per row.

Writes its report to a new file
``benchmarks/results/bench_mf-<date>-<commit>-<ratings>-ratings.md`` (``--out``:
see ``benchmarks/report.py``).  Needs ``pip install libmf scikit-surprise`` (the
``bench`` extra).
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from report import (  # benchmarks/ on sys.path
    OUT_HELP,
    machine,
    mb,
    proc_status,
    size_label,
    write_result,
)

SIZES = (10_000, 5_000, 500_000)
TRUE_RANK, SIGMA = 10, 0.5
REPEATS = 3
LIBMF_ITERS = 20
SHARD_BYTES = 16  # a rating in our shards: int32 user row, int32 item row, float64
LIBMF_NODE_BYTES = 12  # a rating in LIBMF's copy: int u, int v, float r


def load():
    return os.getloadavg()[0]


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def reset_peak():
    """Reset this process's ``VmHWM`` to its current RSS; returns that RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status("VmRSS")


# ----------------------------------------------------------------- child fits
def libmf_predict(P, Q, b, X):
    """LIBMF's prediction from its factors: ``P[u] . Q[i]``, or its fallback ``b``
    (the training mean) for a user or item without training ratings (LIBMF leaves
    their factors NaN) or beyond its rows."""
    u, i = X[:, 0], X[:, 1]
    known = (u < P.shape[0]) & (i < Q.shape[0])
    out = np.full(X.shape[0], b, dtype=np.float64)
    dots = np.einsum("nk,nk->n", P[u[known]], Q[i[known]])
    out[np.flatnonzero(known)[np.isfinite(dots)]] = dots[np.isfinite(dots)]
    return out


def child(kind, data_dir, rank, epochs):
    """A LIBMF or Surprise fit in this (fresh) process; prints one JSON line."""
    Xtr, ytr = np.load(f"{data_dir}/Xtr.npy"), np.load(f"{data_dir}/ytr.npy")
    Xte, yte = np.load(f"{data_dir}/Xte.npy"), np.load(f"{data_dir}/yte.npy")
    if kind == "libmf":
        with contextlib.redirect_stdout(io.StringIO()):
            from libmf import mf as libmf
        train = np.column_stack([Xtr, ytr]).astype(np.float32)
        del Xtr, ytr
        libmf.MF(k=rank, nr_threads=2, nr_iters=1, quiet=True).fit(train[:1000])  # load
        before = reset_peak()
        model = libmf.MF(k=rank, nr_threads=2, nr_iters=epochs, quiet=True)
        started = time.perf_counter()
        model.fit(train)
        P, Q = model.p_factors(), model.q_factors()
        wall = time.perf_counter() - started
        peak = proc_status("VmHWM")
        score = rmse(yte, libmf_predict(P, Q, model.model.b, Xte))
    else:
        import pandas as pd
        from surprise import SVD, Dataset, Reader

        frame = pd.DataFrame({"u": Xtr[:, 0], "i": Xtr[:, 1], "r": ytr})
        reader = Reader(rating_scale=(float(ytr.min()), float(ytr.max())))
        trainset = Dataset.load_from_df(frame, reader).build_full_trainset()
        del frame
        before = reset_peak()
        algo = SVD(n_factors=rank, n_epochs=epochs, random_state=0)
        started = time.perf_counter()
        algo.fit(trainset)
        wall = time.perf_counter() - started
        peak = proc_status("VmHWM")
        score = None
        if epochs == 20:
            score = rmse(yte, [algo.predict(int(u), int(i)).est for u, i in Xte])
    print(json.dumps({"wall": wall, "rmse": score, "before": before, "peak": peak}))


def run_child(kind, data_dir, rank, epochs, timeout):
    cmd = [sys.executable, __file__, "--child", kind, "--data-dir", data_dir,
           "--rank", str(rank), "--epochs", str(epochs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} child failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(lines[-1])


# ----------------------------------------------------------------------- ours
def ours_fit(client, X, y, rank, **kw):
    """A fresh fit with the peaks of every process reset first: ``(wall, model,
    memory)`` with ``memory`` the driver's and each worker's RSS before the fit
    and peak during it."""
    from dask_asyncopt import MatrixFactorization

    before = client.run(reset_peak)
    driver_before = reset_peak()
    started = time.perf_counter()
    mf = MatrixFactorization(n_factors=rank, random_state=0, **kw).fit(X, y)
    wall = time.perf_counter() - started
    peaks = client.run(proc_status, "VmHWM")
    memory = {"driver": (driver_before, proc_status("VmHWM")),
              "workers": [(before[w], peaks[w]) for w in sorted(peaks)]}
    return wall, mf, memory


def run_rank(rank, data, data_dir, args):
    """Interleaved rounds of LIBMF and ours at one rank; Surprise once."""
    from distributed import Client, LocalCluster

    Xtr, ytr, Xte, yte = data
    out = {"rank": rank, "libmf": [], "ours": [], "scan": []}
    timeout = args.child_timeout
    libmf = run_child("libmf", data_dir, rank, LIBMF_ITERS, timeout)
    out["libmf"].append(libmf)
    target = libmf["rmse"]
    print(f"rank {rank}: LIBMF {libmf}", flush=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit=0) as cluster, \
            Client(cluster) as client:
        ours_fit(client, Xtr[:20_000], ytr[:20_000], rank, max_iter=2)  # Numba, actors
        k_star, first = None, None
        for k in range(1, args.max_epochs + 1):
            wall, mf, memory = ours_fit(client, Xtr, ytr, rank, max_iter=k)
            score = rmse(yte, mf.predict(Xte))
            out["scan"].append((k, wall, score))
            print(f"rank {rank}: ours max_iter={k}: {wall:.2f} s, RMSE {score:.4f}",
                  flush=True)
            if score <= target:
                k_star, first = k, {"wall": wall, "rmse": score, "memory": memory}
                break
        out["k"] = k_star
        if k_star is not None:
            out["ours"].append(first)
            # steady epochs: the median of epochs 2.. (epoch 1 also starts the blocks)
            times = mf.history_["time"].to_numpy()
            out["epoch_time"] = float(np.median(np.diff(times)) if k_star > 1 else times[0])
            for _ in range(args.repeats - 1):
                libmf = run_child("libmf", data_dir, rank, LIBMF_ITERS, timeout)
                out["libmf"].append(libmf)
                wall, mf, memory = ours_fit(client, Xtr, ytr, rank, max_iter=k_star)
                out["ours"].append({"wall": wall, "rmse": rmse(yte, mf.predict(Xte)),
                                    "memory": memory})
                print(f"rank {rank}: LIBMF {libmf['wall']:.2f} s, ours {wall:.2f} s",
                      flush=True)
    out["surprise"] = run_child("surprise", data_dir, rank, args.surprise_epochs,
                                timeout)
    print(f"rank {rank}: Surprise {out['surprise']}", flush=True)
    return out


# --------------------------------------------------------------------- report
def spread(values, fmt="{:.2f}"):
    values = sorted(values)
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{fmt.format(med)} [{fmt.format(values[0])}-{fmt.format(values[-1])}]"


def report(args, data_info, results, loads, wall):
    n_users, n_items, n_ratings = data_info["sizes"]
    n_rows = data_info["n_user_rows"] + data_info["n_item_rows"]
    n_train = data_info["n_train"]
    lines = [
        "## MatrixFactorization vs LIBMF and Surprise (`benchmarks/bench_mf.py`)",
        "",
        f"Machine: {machine()}; load average (1 min) {loads[0]:.1f} at start, "
        f"{loads[1]:.1f} at end (other agents share the machine); whole run {wall:.0f} s.",
        f"Data: `make_ratings({n_users}, {n_items}, {n_ratings}, rank={args.true_rank}, "
        f"noise={SIGMA}, random_state=0)`, random 90/10 split: {n_train} training "
        f"ratings of {data_info['n_user_rows']} users x {data_info['n_item_rows']} items "
        f"(noise floor sigma = {SIGMA}).",
        "Ours: `MatrixFactorization(n_factors=rank)` defaults (AdaGrad, solver asyb) on "
        "`LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`; LIBMF "
        f"`nr_threads=2`, {LIBMF_ITERS} iterations, defaults; Surprise `SVD` "
        "single-threaded, defaults; each peer in a fresh child process.  Rounds "
        "interleaved LIBMF, ours; times in seconds, median [min-max].",
        "",
        "| rank | LIBMF 20 it. (s) | target RMSE | ours epochs | ours to target (s) | "
        "ours / LIBMF per round | ours RMSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lib = [x["wall"] for x in r["libmf"]]
        target = r["libmf"][0]["rmse"]
        if r["k"] is None:
            lines.append(f"| {r['rank']} | {spread(lib)} | {target:.4f} | not reached in "
                         f"{args.max_epochs} | - | - | - |")
            continue
        ours = [x["wall"] for x in r["ours"]]
        ratios = [o / lb for o, lb in zip(ours, lib, strict=False)]
        lines.append(
            f"| {r['rank']} | {spread(lib)} | {target:.4f} | {r['k']} | {spread(ours)} | "
            f"**{spread(ratios)}** | {statistics.median(x['rmse'] for x in r['ours']):.4f} |")
    lines += ["", "Surprise `SVD` (1 thread): "
              f"{args.surprise_epochs} epochs timed (`fit` only, its data set built "
              "before the clock).", "",
              "| rank | Surprise epochs | Surprise fit (s) | per epoch (s) | "
              "/ LIBMF per iteration | / ours per epoch | Surprise 20 epochs (est.) / "
              "ours to target | Surprise RMSE |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["surprise"]
        per = s["wall"] / args.surprise_epochs
        lib_it = statistics.median(x["wall"] for x in r["libmf"]) / LIBMF_ITERS
        cells = ["-", "-"]
        if r["k"] is not None:
            ours = statistics.median(x["wall"] for x in r["ours"])
            cells = [f"{per / r['epoch_time']:.1f}", f"{20 * per / ours:.1f}"]
        score = "-" if s["rmse"] is None else f"{s['rmse']:.4f}"
        lines.append(f"| {r['rank']} | {args.surprise_epochs} | {s['wall']:.1f} | "
                     f"{per:.2f} | {per / lib_it:.1f} | {cells[0]} | {cells[1]} | {score} |")
    lines += [
        "",
        f"Memory ({n_rows} factor rows: users + items; peak RSS above the RSS before "
        "the fit, median over the fits; our workers' growth less their rating shards "
        f"({SHARD_BYTES} bytes a rating), LIBMF's less its copy of the ratings "
        f"({LIBMF_NODE_BYTES} bytes a rating)):",
        "",
        "| rank | floor float64 / float32 (B/row) | our store row (B) | ours, workers "
        "(B/row) | ours, driver peak growth | ours, worker peaks | LIBMF (B/row) | "
        "LIBMF peak growth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        k = r["rank"]
        lib_growth = statistics.median(x["peak"] - x["before"] for x in r["libmf"])
        lib_row = (lib_growth - LIBMF_NODE_BYTES * n_train) / n_rows
        if not r["ours"]:
            continue
        mems = [x["memory"] for x in r["ours"]]
        grow = statistics.median(sum(p - b for b, p in m["workers"]) for m in mems)
        ours_row = (grow - SHARD_BYTES * n_train) / n_rows
        driver = statistics.median(m["driver"][1] - m["driver"][0] for m in mems)
        peaks = " / ".join(mb(statistics.median(m["workers"][w][1] for m in mems))
                           for w in range(len(mems[0]["workers"])))
        lines.append(f"| {k} | {8 * k} / {4 * k} | {8 * (k + 2)} | {ours_row:,.0f} "
                     f"({ours_row / (8 * k):.1f}x floor) | {mb(driver)} | {peaks} | "
                     f"{lib_row:,.0f} | {mb(lib_growth)} |")
    for r in results:
        lines += ["", f"Our scan at rank {r['rank']} (single fresh fits with `max_iter=k`): "
                  + ", ".join(f"k={k}: {t:.1f} s, RMSE {s:.4f}" for k, t, s in r["scan"])]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-users", type=int, default=SIZES[0])
    p.add_argument("--n-items", type=int, default=SIZES[1])
    p.add_argument("--n-ratings", type=int, default=SIZES[2])
    p.add_argument("--rank", type=int, nargs="+", default=[32],
                   help="model rank of every method (several: one block each)")
    p.add_argument("--true-rank", type=int, default=TRUE_RANK,
                   help="rank of the data's generating model")
    p.add_argument("--repeats", type=int, default=REPEATS)
    p.add_argument("--max-epochs", type=int, default=20,
                   help="longest fit of our scan for LIBMF's RMSE")
    p.add_argument("--surprise-epochs", type=int, default=None,
                   help="Surprise epochs timed (default 20; 2 above 2M ratings)")
    p.add_argument("--child-timeout", type=float, default=3600)
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--child", choices=["libmf", "surprise"], help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.data_dir, args.rank[0], args.epochs)
        return
    if args.surprise_epochs is None:
        args.surprise_epochs = 20 if args.n_ratings <= 2_000_000 else 2

    from dask_asyncopt.datasets import make_ratings

    run_started = time.perf_counter()
    load_start = load()
    sizes = (args.n_users, args.n_items, args.n_ratings)
    X, y = make_ratings(*sizes, rank=args.true_rank, noise=SIGMA, random_state=0)
    perm = np.random.default_rng(0).permutation(y.shape[0])
    n_test = y.shape[0] // 10
    te, tr = perm[:n_test], perm[n_test:]
    data = (X[tr], y[tr], X[te], y[te])
    del X, y, perm, te, tr
    data_info = {"sizes": sizes, "n_train": int(data[1].shape[0]),
                 "n_user_rows": int(np.unique(data[0][:, 0]).shape[0]),
                 "n_item_rows": int(np.unique(data[0][:, 1]).shape[0])}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_mf-") as data_dir:
        for name, array in zip(("Xtr", "ytr", "Xte", "yte"), data, strict=True):
            np.save(f"{data_dir}/{name}.npy", array)
        for rank in args.rank:
            results.append(run_rank(rank, data, data_dir, args))
    text = report(args, data_info, results, (load_start, load()),
                  time.perf_counter() - run_started)
    print(text)
    ranks = "-".join(f"r{k}" for k in args.rank)
    write_result("bench_mf", text, tag=f"{size_label(args.n_ratings)}-ratings-{ranks}",
                 out=args.out)


if __name__ == "__main__":
    main()
