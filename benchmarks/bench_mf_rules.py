"""Benchmark: ``MatrixFactorization`` with its AdaGrad default against ``optimizer="amsgrad"``.

Run from the repository root::

    python benchmarks/bench_mf_rules.py [--n-ratings 500000 --repeats 3]

Data: ``make_ratings(10_000, 5_000, N, rank=10, noise=0.5, random_state=0)``
(``bench_mf.py``'s), a random 90/10 train/test split.  Both fits use every
default (rank 32, ``max_iter=20``, ``tol=1e-4``) but ``optimizer``, on a
2-process-worker ``LocalCluster`` (``--threads``: thread workers), in rounds
(AdaGrad then AMSGrad, ``random_state`` = round), kernels loaded on every
worker before timing.  Reported: test RMSE over the noise's sigma (1 is the
floor), wall time of ``fit``, epochs, and AMSGrad's ratios to AdaGrad of the
same round.  Writes ``benchmarks/results/bench_mf_rules-<date>-<commit>-<ratings>.md``
(``--out``: see ``benchmarks/report.py``).
"""

import argparse
import os
import time

import numpy as np
from report import OUT_HELP, machine, size_label, write_result  # benchmarks/ on sys.path

SIGMA = 0.5
OPTIMIZERS = ("sgd", "amsgrad")  # sgd: AdaGrad, the default learning_rate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-ratings", type=int, default=500_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", action="store_true", help="thread workers (quick tries)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args()

    from distributed import Client, LocalCluster

    from dask_asyncopt import MatrixFactorization
    from dask_asyncopt.datasets import make_ratings

    X, y = make_ratings(10_000, 5_000, args.n_ratings, rank=10, noise=SIGMA, random_state=0)
    test = np.random.default_rng(0).random(len(y)) < 0.1
    runs = {o: [] for o in OPTIMIZERS}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=not args.threads,
                      dashboard_address=None) as cluster, Client(
            cluster, direct_to_workers=True):
        for optimizer in OPTIMIZERS:  # compile / load the kernels on every worker
            MatrixFactorization(optimizer=optimizer, max_iter=1).fit(X[:5000], y[:5000])
        for rep in range(args.repeats):
            for optimizer in OPTIMIZERS:
                mf = MatrixFactorization(optimizer=optimizer, random_state=rep)
                tick = time.perf_counter()
                mf.fit(X[~test], y[~test])
                seconds = time.perf_counter() - tick
                err = float(np.sqrt(np.mean((mf.predict(X[test]) - y[test]) ** 2)))
                runs[optimizer].append({"time": seconds, "rmse": err / SIGMA,
                                        "epochs": int(mf.n_iter_)})
                print(optimizer, rep, runs[optimizer][-1], flush=True)
    text = report(args, runs)
    print(text)
    write_result("bench_mf_rules", text, tag=f"{size_label(args.n_ratings)}-ratings",
                  out=args.out)


def report(args, runs):
    workers = "threads" if args.threads else "processes"
    ada, ams = runs["sgd"], runs["amsgrad"]
    lines = [
        "## MatrixFactorization: AdaGrad (default) vs optimizer=\"amsgrad\" "
        "(`benchmarks/bench_mf_rules.py`)",
        "",
        f"Machine: {machine()}; load {os.getloadavg()[0]:.1f} at the end; 2 single-threaded "
        f"Dask workers ({workers}).",
        f"Data: `make_ratings(10000, 5000, {args.n_ratings}, rank=10, noise={SIGMA})`, "
        f"random 90/10 split; default settings but `optimizer`; {args.repeats} rounds.",
        "",
        "| optimizer | test RMSE / sigma | fit (s) | epochs |",
        "|---|---|---|---|",
    ]
    for name, rs in (("AdaGrad (default)", ada), ("AMSGrad", ams)):
        cells = [" / ".join(fmt.format(r[key]) for r in rs)
                 for key, fmt in (("rmse", "{:.4f}"), ("time", "{:.2f}"), ("epochs", "{}"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rmse = [b["rmse"] / a["rmse"] for a, b in zip(ada, ams, strict=True)]
    secs = [b["time"] / a["time"] for a, b in zip(ada, ams, strict=True)]
    lines += ["", f"AMSGrad / AdaGrad, same round: test RMSE {min(rmse):.4f}-{max(rmse):.4f}, "
              f"time {min(secs):.2f}-{max(secs):.2f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
