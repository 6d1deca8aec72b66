"""Benchmark: a wide hashed model -- per-epoch time and memory against the model's width.

Run from the repository root::

    python benchmarks/bench_wide.py [--n-samples 50000 --nnz-per-row 26 \
        --bits 20 23 26 --epochs 5 --rounds 2 --alpha 2e-6 --out benchmarks/results --tag TAG]

    # the issue's size, with the exact objective gap of both (F* from 40-epoch fits)
    python benchmarks/bench_wide.py --n-samples 200000 --bits 20 26 --epochs 5 \
        --rounds 2 --long-epochs 40

    # does a 2**28-column model (268M coefficients) fit and train on 2 workers?
    python benchmarks/bench_wide.py --bits 28 --n-samples 20000 --rounds 1 --epochs 3 \
        --no-peer --tag 2p28

The same rows (``--n-samples`` rows of ``--nnz-per-row`` click-through-like
features: 26 fields whose values have Zipf popularity, each token hashed by a
64-bit multiplicative hash whose top ``bits`` bits name the column, so every
width sees the same non-zeros up to collisions; rows of unit norm; clicks from a
sparse logistic model of the tokens) are fitted at each width ``2**bits`` by

* ours: ``AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha, max_iter=epochs,
  tol=None)`` (the default solver: AsyB-ProxSGD with SVRG) on
  ``LocalCluster(processes=True, n_workers=2, threads_per_worker=1)``;
* the in-run peer: scikit-learn's ``SGDClassifier`` with the same loss, penalty
  and alpha, ``max_iter=epochs, tol=None``.

Every fit runs in a fresh child process (so peak memory is the fit's own), in
rounds ``A B A B`` over the widths (the machine is shared: ratios and ranges,
not absolute times).  Reported per fit: wall time of ``fit``, the steady
per-epoch time (median of epochs 2.. from ``history_["time"]``; epoch 1 also
builds the blocks and takes the first snapshot), the exact objective
``mean log-loss + alpha |w|_1`` of the result, and the peak RSS of each process
(``VmHWM``: the driver, each worker); with ``--long-epochs N``, one more fit of
each (``tol=None``, N epochs) per width gives ``F*``, the lowest objective any
fit reached, and the report gives each fit's gap ``(F - F*) / F*`` and the
first epoch of ours (its ``history_`` objective is exact: the snapshot pass)
within ``1e-3`` of ``F*``, with its time; the workers' peak above their RSS before
the fit, per coefficient, bounds what the store costs (the data shards
included).  Ratios: ours at each width against ours at the narrowest (same
rows, same non-zeros), and ours against scikit-learn at the same width.

The report goes to stdout and to ``benchmarks/results/bench_wide-<date>-<commit>-<tag>.md``
(see ``benchmarks/report.py``).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
from report import OUT_HELP, mb, proc_status, size_label, write_result  # benchmarks/ on sys.path

N_FIELDS_DEFAULT = 26
HISTORY_KEYS = ("epochs", "history", "history_time")
HASH = np.uint64(0x9E3779B97F4A7C15)
HASH2 = np.uint64(0xD6E8FEB86659FD93)


# ------------------------------------------------------------------------- data
def make_ctr(n_samples, nnz_per_row, bits, seed=0):
    """Click-through-like rows hashed into ``2**bits`` columns (module docstring)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.25, size=(n_samples, nnz_per_row)), 1 << 40)
    tokens = (ranks.astype(np.uint64) << np.uint64(6)) | np.arange(
        nnz_per_row, dtype=np.uint64)
    with np.errstate(over="ignore"):
        cols = ((tokens * HASH) >> np.uint64(64 - bits)).astype(np.int64)
        effect_u = ((tokens * HASH2) >> np.uint64(11)).astype(np.float64) / 2.0**53
    # 30% of the tokens carry an effect, uniform in [-2, 2)
    effect = np.where(effect_u < 0.3, effect_u / 0.3 * 4.0 - 2.0, 0.0)
    logit = -1.0 + 1.5 * effect.sum(axis=1) / np.sqrt(nnz_per_row)
    y = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    rows = np.repeat(np.arange(n_samples), nnz_per_row)
    X = sp.csr_matrix((np.full(rows.shape[0], 1.0 / np.sqrt(nnz_per_row)),
                       (rows, cols.ravel())), shape=(n_samples, 1 << bits))
    X.sum_duplicates()
    return X, y


def objective(X, y, coef, intercept, alpha):
    """Mean log-loss + alpha * L1 (intercept unpenalised)."""
    z = (X @ np.ravel(coef) + intercept[0]) * np.where(y == 1, 1.0, -1.0)
    return float(np.logaddexp(0, -z).mean() + alpha * np.abs(coef).sum())


# ----------------------------------------------------------------- child fits
def child_ours(args):
    from distributed import Client, LocalCluster

    from dask_asyncopt import AsyncSGDClassifier

    X, y = make_ctr(args.n_samples, args.nnz_per_row, args.bits, args.data_seed)
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=None, memory_limit=0) as cluster, \
            Client(cluster) as client:
        # loads the kernels of a model wider than its data (the sparse snapshot path)
        small, ys = make_ctr(2000, args.nnz_per_row, 18, 99)
        AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=args.alpha, max_iter=2,
                           tol=None, random_state=0).fit(small, ys)
        before = client.run(proc_status, "VmRSS")
        est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=args.alpha,
                                 max_iter=args.epochs, tol=None, random_state=0)
        start = time.perf_counter()
        est.fit(X, y)
        wall = time.perf_counter() - start
        peaks = client.run(proc_status, "VmHWM")
        driver_peak = proc_status("VmHWM")  # before this script's objective
    times = est.history_["time"].to_numpy()
    return {
        "wall": wall, "epochs": np.diff(np.concatenate([[0.0], times])).tolist(),
        "history": est.history_["objective"].tolist(), "history_time": times.tolist(),
        "objective": objective(X, y, est.coef_, est.intercept_, args.alpha),
        "driver_peak": driver_peak,
        "worker_peaks": [peaks[w] for w in sorted(peaks)],
        "worker_before": [before[w] for w in sorted(before)],
        "nnz": int(X.nnz), "active": int(np.unique(X.indices).shape[0]),
    }


def child_sklearn(args):
    from sklearn.linear_model import SGDClassifier

    X, y = make_ctr(args.n_samples, args.nnz_per_row, args.bits, args.data_seed)
    est = SGDClassifier(loss="log_loss", penalty="l1", alpha=args.alpha,
                        max_iter=args.epochs, tol=None, random_state=0)
    start = time.perf_counter()
    est.fit(X, y)
    wall = time.perf_counter() - start
    driver_peak = proc_status("VmHWM")
    return {"wall": wall, "objective": objective(X, y, est.coef_, est.intercept_, args.alpha),
            "driver_peak": driver_peak}


def run_child(kind, bits, args, epochs=None):
    cmd = [sys.executable, __file__, "--child", kind, "--bits", str(bits),
           "--n-samples", str(args.n_samples), "--nnz-per-row", str(args.nnz_per_row),
           "--epochs", str(epochs or args.epochs), "--alpha", repr(args.alpha),
           "--data-seed", str(args.data_seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"error": f"exit {done.returncode}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------- report
def spread(values, fmt="{:.2f}"):
    values = sorted(values)
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(values[0])}-" \
           f"{fmt.format(values[-1])})"


def steady(epochs):
    return statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]


def report(args, results):
    narrow = min(args.bits)
    lines = [
        f"Data: {args.n_samples:,} rows x {args.nnz_per_row} Zipf hashed tokens a row "
        f"(seed {args.data_seed}), L1 logistic regression, alpha={args.alpha:g}, "
        f"{args.epochs} epochs (tol=None).  Ours: AsyncSGDClassifier defaults (asyb, SVRG) "
        "on LocalCluster(processes=True, n_workers=2, threads_per_worker=1); peer: "
        "scikit-learn SGDClassifier (1 core).  Every fit in a fresh process, rounds "
        f"interleaved ({args.rounds}).  Medians (min-max) over rounds.", "",
        f"| columns | ours fit s | ours epoch s (2..) | epoch vs 2^{narrow} | sklearn fit s | "
        "ours / sklearn | objective ours / sklearn |",
        "|---|---|---|---|---|---|---|"]
    base = [steady(r["epochs"]) for r in results[("ours", narrow)] if "epochs" in r]
    for bits in args.bits:
        ours = [r for r in results[("ours", bits)] if "wall" in r]
        sk = [r for r in results.get(("sklearn", bits), []) if "wall" in r]
        ep = [steady(r["epochs"]) for r in ours]
        rel = [e / statistics.median(base) for e in ep] if base else []
        ratio = [o["wall"] / s["wall"] for o, s in zip(ours, sk, strict=False)]
        obj = (f"{statistics.median(r['objective'] for r in ours):.6g} / "
               f"{statistics.median(r['objective'] for r in sk):.6g}" if ours and sk else
               f"{statistics.median(r['objective'] for r in ours):.6g} / -" if ours else "-")
        lines.append(f"| 2^{bits} | {spread([r['wall'] for r in ours])} | {spread(ep, '{:.3f}')} "
                     f"| {spread(rel)} | {spread([r['wall'] for r in sk])} | {spread(ratio)} "
                     f"| {obj} |")
    if args.long_epochs:
        lines += gap_lines(args, results)
    lines += ["", "Peak RSS per process (VmHWM, median over rounds); store cost: the "
              "workers' peaks above their RSS before the fit, data shards included, per "
              "coefficient:", "",
              "| columns | coefficients | driver | worker 1 | worker 2 | workers above "
              "pre-fit, B/coef | sklearn process | data nnz / active columns |",
              "|---|---|---|---|---|---|---|---|"]
    for bits in args.bits:
        ours = [r for r in results[("ours", bits)] if "wall" in r]
        sk = [r for r in results.get(("sklearn", bits), []) if "wall" in r]
        if not ours:
            lines.append(f"| 2^{bits} | failed: {results[('ours', bits)]} |")
            continue
        n_coef = (1 << bits) + 1
        def med(f, ours=ours):
            return statistics.median(f(r) for r in ours)

        above = med(lambda r: sum(p - b for p, b in zip(r["worker_peaks"], r["worker_before"],
                                                        strict=True)))
        lines.append(
            f"| 2^{bits} | {n_coef:,} | {mb(med(lambda r: r['driver_peak']))} | "
            f"{mb(med(lambda r: r['worker_peaks'][0]))} | "
            f"{mb(med(lambda r: r['worker_peaks'][1]))} | {above / n_coef:.1f} | "
            f"{mb(statistics.median(r['driver_peak'] for r in sk)) if sk else '-'} | "
            f"{ours[0]['nnz']:,} / {ours[0]['active']:,} |")
    lines += ["", "Per-epoch times of each fit of ours (s):", ""]
    for bits in args.bits:
        for r in results[("ours", bits)]:
            if "epochs" in r:
                lines.append(f"- 2^{bits}: " + ", ".join(f"{e:.3f}" for e in r["epochs"]))
    return "\n".join(lines)


def gap_lines(args, results, target=1e-3):
    """The objective gaps to ``F*`` (the lowest objective of any fit at the width)."""
    lines = ["", f"Exact objective gaps `(F - F*) / F*`, F* the lowest objective of any fit "
             f"at the width (the {args.long_epochs}-epoch fits included); ours: the first "
             f"epoch (`history_`) within {target:g} of F*, its time since `fit` began "
             "(its history time + the fit's set-up and teardown, the fit's wall less its "
             "last history time) and that time over scikit-learn's "
             f"{args.epochs}-epoch fit's (same round):", "",
             f"| columns | F* | ours {args.epochs} ep. gap | sklearn {args.epochs} ep. gap | "
             f"ours {args.long_epochs} ep. gap | sklearn {args.long_epochs} ep. gap | "
             f"ours: epoch to {target:g} | its time s | / sklearn {args.epochs} ep. | "
             f"ours to sklearn's {args.epochs}-ep. objective / sklearn's time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for bits in args.bits:
        ours = [r for r in results[("ours", bits)] if "wall" in r]
        sk = [r for r in results.get(("sklearn", bits), []) if "wall" in r]
        long_ours = [r for r in results.get(("ours-long", bits), []) if "wall" in r]
        long_sk = [r for r in results.get(("sklearn-long", bits), []) if "wall" in r]
        f_star = min(r["objective"] for r in ours + sk + long_ours + long_sk)
        def gap(f, f_star=f_star):
            return (f - f_star) / f_star

        reach, at, ratio, match = [], [], [], []
        for o, k in zip(ours, sk + [None] * len(ours), strict=False):
            if k is not None:  # ours' first epoch at or below scikit-learn's objective
                below = [i for i, f in enumerate(o["history"]) if f <= k["objective"]]
                if below:
                    t = o["history_time"][below[0]] + o["wall"] - o["history_time"][-1]
                    match.append(t / k["wall"])
            hit = [i for i, f in enumerate(o["history"]) if gap(f) <= target]
            if hit:
                i = hit[0]
                t = o["history_time"][i] + o["wall"] - o["history_time"][-1]
                reach.append(i + 1)
                at.append(t)
                if k is not None:
                    ratio.append(t / k["wall"])
        if not reach and long_ours:
            hist = long_ours[0]["history"]
            hit = [i for i, f in enumerate(hist) if gap(f) <= target]
            reach_text = (f"{hit[0] + 1} (the {args.long_epochs}-epoch fit)" if hit
                          else "not reached")
            if hit:
                lo = long_ours[0]
                t = lo["history_time"][hit[0]] + lo["wall"] - lo["history_time"][-1]
                at.append(t)
                ratio = [t / k["wall"] for k in sk]
        else:
            reach_text = spread(reach, "{:.0f}") if reach else "not reached"
        lines.append(
            f"| 2^{bits} | {f_star:.6f} | {spread([gap(r['objective']) for r in ours], '{:.1e}')} "
            f"| {spread([gap(r['objective']) for r in sk], '{:.1e}')} "
            f"| {spread([gap(r['objective']) for r in long_ours], '{:.1e}')} "
            f"| {spread([gap(r['objective']) for r in long_sk], '{:.1e}')} "
            f"| {reach_text} | {spread(at)} | {spread(ratio)} | {spread(match)} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=50_000)
    parser.add_argument("--nnz-per-row", type=int, default=N_FIELDS_DEFAULT)
    parser.add_argument("--bits", type=int, nargs="+", default=[20, 23, 26])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=2e-6)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--no-peer", action="store_true", help="skip scikit-learn")
    parser.add_argument("--long-epochs", type=int, default=0,
                        help="one more fit of each per width with this many epochs: F*")
    parser.add_argument("--child-timeout", type=float, default=1800)
    parser.add_argument("--child", choices=["ours", "sklearn"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=OUT_HELP)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    if args.child:
        args.bits = args.bits[0]
        out = child_ours(args) if args.child == "ours" else child_sklearn(args)
        print(json.dumps(out), flush=True)
        return
    results = {}
    for r in range(args.rounds):
        for bits in args.bits:
            for kind in ("ours",) + (() if args.no_peer else ("sklearn",)):
                got = run_child(kind, bits, args)
                results.setdefault((kind, bits), []).append(got)
                print(f"round {r + 1} 2^{bits} {kind}: "
                      f"{ {k: v for k, v in got.items() if k not in HISTORY_KEYS} }",
                      file=sys.stderr, flush=True)
    for bits in args.bits if args.long_epochs else ():
        for kind in ("ours",) + (() if args.no_peer else ("sklearn",)):
            got = run_child(kind, bits, args, args.long_epochs)
            results[(f"{kind}-long", bits)] = [got]
            print(f"{args.long_epochs} epochs 2^{bits} {kind}: wall {got.get('wall')}, "
                  f"objective {got.get('objective')}", file=sys.stderr, flush=True)
    text = report(args, results)
    print(text)
    tag = args.tag or f"{size_label(args.n_samples)}-" + "-".join(f"2p{b}" for b in args.bits)
    write_result("bench_wide", text, tag=tag, out=args.out)


if __name__ == "__main__":
    main()
