"""Benchmark: one fit on real deployments, side by side with scikit-learn's SGD.

Run from the repository root (as root for the namespaced hosts)::

    python benchmarks/bench_cluster.py [--n-samples 1000000 --n-features 100000 \\
        --alpha 5e-6 --rounds 3 --rtts 0 1 5 --solvers asyb sync adpsgd]

The problem: L1-penalised logistic regression on ``make_sparse_classification``
data (20 non-zeros a row), ``F = mean(log-loss) + alpha |w|_1``.  ``F_target`` is
the objective scikit-learn's ``SGDClassifier`` reaches in 5 epochs; its fit
is timed in every round, next to ours.

Deployments, all with 2 worker threads (single-threaded workers but
``cli-1x2``), started by this script and kept for the whole run (``benchmarks/deploy.py``):

* ``threads``: a thread ``LocalCluster`` (the embedded default's layout);
* ``processes``: ``LocalCluster(processes=True)``;
* ``cli``: ``dask scheduler`` + 2 ``dask worker --nthreads 1`` CLI processes
  (nannies on), over TCP on 127.0.0.1;
* ``cli-1x2`` (``--threaded``): ``dask scheduler`` + one ``dask worker --nthreads
  2``: the fit's two loops share one worker process;
* ``hosts``: the same, each process in its own Linux network namespace
  (veth pairs to a bridge), with a user-space delay giving ``--rtts`` ms of
  round trip between any two hosts, the driver included (switched between
  fits; the round trips it really adds are measured and reported).

Every round runs scikit-learn, then each deployment x solver (x round trip)
once, in the same order. While one deployment fits, the processes of the
others are stopped (``SIGSTOP``, resumed after): idle schedulers, nannies and
workers still wake up for their heartbeats and monitors, and eight of them
took about a fifth of the cores from the fit being measured. A fit runs
``--max-iter`` epochs with ``tol=None``; its *time to target* is from
``fit()`` being called (data placement included) to the history row of the
first epoch whose exact objective is ``<= F_target`` (recorded when the row
is). With ``--dask-data`` the data is also given as a dask array already
persisted on the cluster (what a cluster user has): the fit then places
nothing from the client. Reported per configuration: the median time to
target, its ratio to the thread cluster's and to scikit-learn's (paired within
rounds), the kernels' share of loop time and the calls that crossed processes
per epoch (``history_``).

``MatrixFactorization`` runs on the same deployments (``--mf-solvers``, none:
skipped): ``make_ratings(--mf-users, --mf-items, --mf-ratings)``, a 90/10
split, rank 32, ``--mf-epochs`` epochs; reported per configuration: the fit's
wall time and its ratio to the thread cluster's (paired within rounds), the
test RMSE, the kernels' share and the remote calls per epoch.
"""

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import cli_cluster, measure_rtts, netns_cluster, netns_unavailable  # noqa: E402
from report import OUT_HELP, size_label, write_result  # noqa: E402

SK_EPOCHS = 5


def objective(X, y, coef, intercept, alpha):
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return float(np.logaddexp(0, -z).mean() + alpha * np.abs(coef).sum())


def sklearn_fit(X, y, alpha):
    from sklearn.linear_model import SGDClassifier

    start = time.perf_counter()
    sk = SGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, max_iter=SK_EPOCHS,
                       tol=None, random_state=0).fit(X, y)
    return time.perf_counter() - start, objective(X, y, sk.coef_, sk.intercept_, alpha)


@contextlib.contextmanager
def row_clock():
    """Record ``time.perf_counter()`` when each history row reaches the fit's
    progress callback (the driver's clock, while the loops wait)."""
    from dask_asyncopt.progress import FitProgress

    stamps = []
    show = FitProgress.__call__

    def stamped(self, row):
        stamps.append((row.get("epoch"), time.perf_counter()))
        return show(self, row)

    FitProgress.__call__ = stamped
    try:
        yield stamps
    finally:
        FitProgress.__call__ = show


def our_fit(client, X, y, alpha, solver, max_iter, f_target):
    from dask_asyncopt import AsyncSGDClassifier

    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, solver=solver,
                             max_iter=max_iter, tol=None, random_state=0)
    with client.as_current(), row_clock() as stamps:
        start = time.perf_counter()
        est.fit(X, y)
        wall = time.perf_counter() - start
    h = est.history_
    hit = h.index[h["objective"] <= f_target]
    if len(hit):
        epoch = int(h.loc[hit[0], "epoch"])
        at = dict(stamps)[epoch] - start
        upto = h.loc[:hit[0]]
    else:
        epoch, at, upto = None, math.inf, h
    return {"wall": wall, "to_target": at, "epoch": epoch,
            "compute": float(upto["compute_fraction"].mean()),
            "calls": float(upto["remote_calls"].mean()),
            "final": float(h["objective"].iloc[-1])}


def mf_fit(client, data, solver, epochs):
    from dask_asyncopt import MatrixFactorization

    X_train, y_train, X_test, y_test = data
    model = MatrixFactorization(n_factors=32, max_iter=epochs, tol=None, solver=solver,
                                random_state=0)
    with client.as_current():
        start = time.perf_counter()
        model.fit(X_train, y_train)
        wall = time.perf_counter() - start
    h = model.history_
    rmse = float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
    return {"wall": wall, "rmse": rmse, "compute": float(h["compute_fraction"].iloc[1:].mean()),
            "calls": float(h["remote_calls"].mean())}


def mf_data(args):
    from dask_asyncopt.datasets import make_ratings

    X, y = make_ratings(args.mf_users, args.mf_items, args.mf_ratings, random_state=0)
    test = np.random.default_rng(1).random(len(y)) < 0.1
    return X[~test], y[~test], X[test], y[test]


def mf_report(args, results):
    lines = ["", f"MatrixFactorization: make_ratings({args.mf_users:,}, {args.mf_items:,}, "
             f"{args.mf_ratings:,}), 90/10 split, rank 32, {args.mf_epochs} epochs, "
             f"{args.rounds} rounds.", "",
             "| deployment | solver | RTT ms | fit time, s | vs threads | test RMSE | "
             "kernels' share | remote calls / epoch |", "|---|---|---|---|---|---|---|---|"]
    for (name, solver, rtt), runs in results.items():
        base = results.get(("threads", solver, None), [])
        lines.append(
            f"| {name} | {solver} | {'-' if rtt is None else rtt} | "
            f"{fmt(median([a['wall'] for a in runs]))} | "
            f"{fmt(median([a['wall'] / b['wall'] for a, b in zip(runs, base, strict=False)]))}"
            f" | {median([a['rmse'] for a in runs]):.4f} | "
            f"{fmt(median([a['compute'] for a in runs]))} | "
            f"{median([a['calls'] for a in runs]):.0f} |")
    return "\n".join(lines) + "\n"


def persisted(client, X, y):
    """``X``, ``y`` as dask arrays held by the cluster (a chunk per worker)."""
    import dask.array as da

    n = X.shape[0]
    step = -(-n // len(client.nthreads()))
    parts = [X[s:s + step] for s in range(0, n, step)]
    Xd = da.concatenate([da.from_array(p, chunks=p.shape, asarray=False) for p in parts])
    yd = da.from_array(y, chunks=(tuple(p.shape[0] for p in parts),))
    return client.persist(Xd), client.persist(yd)


def deployment_pids(deployments, started):
    """``{deployment: pids to stop while another one fits}``: the process groups
    of the CLI and namespaced deployments ``started`` (by name), the worker
    processes of the process ``LocalCluster`` (its scheduler and nannies live in
    this process)."""
    import os

    pids = {"processes": list(deployments["processes"].run(os.getpid).values())}
    for name, dep in started.items():
        if dep is not None:
            pids[name] = [-p.pid for p in dep.processes]  # negative: the process group
    return pids


@contextlib.contextmanager
def others_stopped(pids, running):
    """Stop every deployment's processes but ``running``'s while the block runs."""
    import os
    import signal

    stopped = [pid for name, group in pids.items() if name != running for pid in group]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                # seen once: the process LocalCluster's nannies (in this process,
                # never stopped) restarted both its stopped workers; the run goes on
                # with the new ones (not stopped while others fit: noted in the log)
                print(f"process {pid} is gone (restarted by its nanny?)", flush=True)


def median(values):
    values = [v for v in values if math.isfinite(v)]
    return statistics.median(values) if values else math.inf


def fmt(value, digits=2):
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def run(args):
    import dask
    from distributed import Client, LocalCluster

    from dask_asyncopt.datasets import make_sparse_classification

    X, y = make_sparse_classification(args.n_samples, args.n_features,
                                      random_state=args.data_seed)
    stack = contextlib.ExitStack()
    deployments = {}
    with stack:
        # the process cluster's workers are stopped while others fit: its scheduler
        # (in this process) must not take their silence for a loss
        stack.enter_context(dask.config.set({"distributed.scheduler.worker-ttl": "1h"}))
        for name, processes in (("threads", False), ("processes", True)):
            cluster = stack.enter_context(LocalCluster(
                n_workers=2, threads_per_worker=1, processes=processes,
                dashboard_address=None))
            deployments[name] = stack.enter_context(Client(cluster, set_as_default=False))
        started = {"cli": stack.enter_context(cli_cluster(n_workers=2))}
        if args.threaded:
            started["cli-1x2"] = stack.enter_context(cli_cluster(n_workers=1, nthreads=2))
        for name, dep in started.items():
            deployments[name] = dep.client
        hosts = None
        why = netns_unavailable()
        if why is None and args.rtts:
            hosts = stack.enter_context(netns_cluster(n_workers=2, rtt_ms=0.0))
            deployments["hosts"] = hosts.client
        configs = [(d, s, None) for d in deployments if d != "hosts" for s in args.solvers]
        if hosts is not None:
            configs += [("hosts", s, rtt) for rtt in args.rtts for s in args.solvers]
        data = {name: (X, y) for name in deployments}
        if args.dask_data:
            for name in ("processes", "cli", "hosts"):
                if name in deployments:
                    data[name + "+dask"] = persisted(deployments[name], X, y)
            configs += [(d + "+dask", s, r) for d, s, r in configs
                        if d + "+dask" in data and s == args.solvers[0]]
        rtts = {}
        if hosts is not None:
            for rtt in args.rtts:
                hosts.set_rtt(rtt)
                rtts[rtt] = measure_rtts(hosts.client, n=30)
        mf_configs = [(d, m, r) for d, s, r in configs
                      if "+" not in d and s == args.solvers[0] for m in args.mf_solvers]
        mf = mf_data(args) if mf_configs else None
        mf_results = {c: [] for c in mf_configs}
        pids = deployment_pids(deployments, {**started, "hosts": hosts})
        # warm-up: every worker loads the kernels (Numba cache) once
        for client in deployments.values():
            our_fit(client, X[:4000], y[:4000], args.alpha, "asyb", 1, -math.inf)
            if mf is not None:
                mf_fit(client, [a[:20000] for a in mf], "asyb", 1)
        sk_times, f_target = [], None
        results = {c: [] for c in configs}
        for r in range(args.rounds):
            with others_stopped(pids, None):
                t, f = sklearn_fit(X, y, args.alpha)
            sk_times.append(t)
            f_target = f if f_target is None else f_target
            for config in configs:
                name, solver, rtt = config
                base = name.split("+")[0]
                if rtt is not None:
                    hosts.set_rtt(rtt)
                with others_stopped(pids, base):
                    res = our_fit(deployments[base], *data[name], args.alpha, solver,
                                  args.max_iter, f_target)
                res["sk"] = t
                results[config].append(res)
                print(f"round {r} {name} {solver} rtt={rtt}: to target "
                      f"{res['to_target']:.2f} s (epoch {res['epoch']}), wall "
                      f"{res['wall']:.2f} s, compute {res['compute']:.2f}, calls/epoch "
                      f"{res['calls']:.0f}; scikit-learn {t:.2f} s", flush=True)
            for config in mf_configs:
                name, solver, rtt = config
                if rtt is not None:
                    hosts.set_rtt(rtt)
                with others_stopped(pids, name):
                    res = mf_fit(deployments[name], mf, solver, args.mf_epochs)
                mf_results[config].append(res)
                print(f"round {r} MF {name} {solver} rtt={rtt}: wall {res['wall']:.2f} s, "
                      f"rmse {res['rmse']:.4f}, compute {res['compute']:.2f}", flush=True)
        text = report(args, results, sk_times, f_target, rtts, X)
        return text + (mf_report(args, mf_results) if mf_configs else "")


def report(args, results, sk_times, f_target, rtts, X):
    lines = [f"Data: {args.n_samples:,} x {args.n_features:,}, {X.nnz / X.shape[0]:.1f} "
             f"non-zeros a row, L1 alpha {args.alpha:g}, {args.rounds} rounds; "
             f"F_target = {f_target:.6f} (scikit-learn SGD, {SK_EPOCHS} epochs, median "
             f"{median(sk_times):.2f} s).", ""]
    if rtts:
        lines += ["Round trips the namespaced hosts really had (median of 30, ms):", "",
                  "| requested RTT | client -> scheduler | client -> actor | "
                  "worker -> worker actor | worker -> worker channel |",
                  "|---|---|---|---|---|"]
        for rtt, m in rtts.items():
            lines.append(f"| {rtt} | {m.get('scheduler', math.nan):.2f} | "
                         f"{m.get('client_actor', math.nan):.2f} | "
                         f"{m.get('worker_actor', math.nan):.2f} | "
                         f"{m.get('worker_channel', math.nan):.2f} |")
        lines.append("")
    lines += ["| deployment | solver | RTT ms | time to F_target, s | vs threads | "
              "vs scikit-learn | epochs | kernels' share | remote calls / epoch |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (name, solver, rtt), runs in results.items():
        base = results.get(("threads", solver, None), [])
        vs_threads = median([a["to_target"] / b["to_target"] for a, b in zip(runs, base,
                                                                            strict=False)])
        vs_sk = median([a["to_target"] / a["sk"] for a in runs])
        epochs = sorted({a["epoch"] for a in runs if a["epoch"] is not None})
        lines.append(
            f"| {name} | {solver} | {'-' if rtt is None else rtt} | "
            f"{fmt(median([a['to_target'] for a in runs]))} | {fmt(vs_threads)} | "
            f"{fmt(vs_sk)} | {','.join(map(str, epochs)) or '-'} | "
            f"{fmt(median([a['compute'] for a in runs]))} | "
            f"{median([a['calls'] for a in runs]):.0f} |")
    if any(rtt is not None for _, _, rtt in results):
        lines += ["", "At each round trip, each solver's time to target over sync's:", ""]
        for rtt in args.rtts:
            sync = results.get(("hosts", "sync", rtt))
            if not sync:
                continue
            for solver in args.solvers:
                if solver == "sync" or ("hosts", solver, rtt) not in results:
                    continue
                ratio = median([a["to_target"] / b["to_target"] for a, b in zip(
                    results[("hosts", solver, rtt)], sync, strict=False)])
                lines.append(f"- {rtt} ms: {solver} / sync = {fmt(ratio)}")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-samples", type=int, default=1_000_000)
    p.add_argument("--n-features", type=int, default=100_000)
    p.add_argument("--alpha", type=float, default=5e-6)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-iter", type=int, default=6)
    p.add_argument("--rtts", type=float, nargs="*", default=[0.0, 1.0, 5.0],
                   help="round trips of the namespaced hosts (none: no namespaces)")
    p.add_argument("--solvers", nargs="+", default=["asyb", "sync", "adpsgd"])
    p.add_argument("--mf-solvers", nargs="*", default=["asyb", "sync"])
    p.add_argument("--mf-users", type=int, default=50_000)
    p.add_argument("--mf-items", type=int, default=10_000)
    p.add_argument("--mf-ratings", type=int, default=2_000_000)
    p.add_argument("--mf-epochs", type=int, default=10)
    p.add_argument("--threaded", action="store_true",
                   help="also a CLI deployment of one worker process with 2 threads "
                        "(cli-1x2): a loop per thread, in one process")
    p.add_argument("--dask-data", action="store_true",
                   help="also fit from dask arrays persisted on the cluster")
    p.add_argument("--out", default=None, help=OUT_HELP)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    text = run(args)
    print(text)
    write_result("bench_cluster", text, tag=size_label(args.n_samples), out=args.out,
                 argv=argv)


if __name__ == "__main__":
    main()
