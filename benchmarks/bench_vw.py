"""Vowpal Wabbit and scikit-learn against ours on wide hashed click-through data.

Run from the repository root (needs the ``bench`` extra: ``pip install
vowpalwabbit``)::

    python benchmarks/bench_vw.py --n-samples 500000 --bits 20
    python benchmarks/bench_vw.py --n-samples 200000 --bits 24
    python benchmarks/bench_vw.py --n-samples 200000 --bits 26

(``--rounds 1 --passes 1,3,9 --long-epochs 30 --saga-timeout 600`` shortens a
run; ``--no-saga`` skips the exact solver, which otherwise runs until it
converges, reaches ``--saga-max-iter`` epochs or is stopped after
``--saga-timeout`` seconds and reported unfinished.)

The problem, for every method: L1-penalised logistic regression on the same
rows (``ctr_data.make_zipf_ctr``: Zipf column popularity, 26 binary non-zeros a
row, hashed into ``2**bits`` columns),

    F(w, b) = mean_i log(1 + exp(-y_i (x_i.w + b))) + alpha * ||w||_1,

the intercept ``b`` unpenalised, computed here from each method's coefficients.
``F*`` is the lowest value any run reached (a 40-epoch ``tol=None`` fit of
ours, scikit-learn's exact ``LogisticRegression(solver="saga")`` when it
finishes within ``--saga-max-iter`` epochs); gaps are ``(F - F*) / F*``.

Methods, each fit in a process of its own (peak RSS per process is that
process's high-water mark, ``VmHWM``):

* ours: ``AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=alpha)``,
  every other parameter at its default, on ``LocalCluster(processes=True,
  n_workers=2, threads_per_worker=1)``; timed from ``fit`` to its return (the
  cluster started and the Numba kernels loaded by a small fit before).  Its
  time to a target is the fit's time less the epochs after the first one
  whose exact objective (``history_``) reached it.
* Vowpal Wabbit 9 (``pip install vowpalwabbit``; the wheel has no ``vw`` binary,
  so its command-line arguments go to ``vowpalwabbit.Workspace`` in a process
  of its own, timed from ``Workspace(...)`` to ``finish()``),
  logistic loss, ``-b bits``, ``--holdout_off``, ``--no_bias_regularization``
  (the constant is our unpenalised intercept), reading a cache file written
  beforehand (writing the text file and its cache is not timed: a VW user
  makes them once), ``--passes p`` for p in ``--passes``, each a fresh run;
  the model read back from ``--readable_model``.  Two learners:
  its default (adaptive, normalised, invariant SGD) and ``--ftrl``.
* scikit-learn ``SGDClassifier(loss="log_loss", penalty="l1", alpha=alpha)``
  with ``max_iter=k, tol=None`` for k in (1, 5, 20) and at its defaults.

**Mapping VW's ``--l1`` onto alpha.**  ``vw --help`` says only "L_1 lambda"
(and ``--l1_state``: "amount of accumulated implicit l1 regularization");
neither learner scales it per sample as our ``alpha`` is.  FTRL-proximal keeps
for each weight the *sum* of every gradient it has seen and solves
``argmin_w <z, w> + l1 |w| + ...`` with it: ``l1`` weighs against the sum of
the losses of all examples seen, not their mean.  One pass over ``n`` rows
therefore minimises ``sum_i loss_i + l1 |w|_1``, i.e. ``alpha = l1 / n``, and
``p`` passes (the sum counts each row ``p`` times) ``alpha = l1 / (n p)``: the
FTRL runs get ``--l1 alpha * n * p``.  The default learner truncates the
weights by ``l1`` times its global learning rate at each example (truncated
gradient, accumulated in ``l1_state``), while its adaptive, normalised
per-weight steps are far longer for rare features: ``--l1 alpha`` leaves every
weight non-zero and ends 3x above F* (measured on 20k rows), ``--l1 alpha * n``
is its best of ``alpha * {1, n, 4n}``; it gets ``alpha * n`` for any number of
passes.  No value makes it minimise F (its truncation is not our objective's
proximal step): its gap is reported as it is.

Time to ``F*(1 + 1e-2)`` and ``F*(1 + 1e-3)``: VW's and scikit-learn's the
shortest run (passes, epochs) that reached it; the final gap "at equal wall
time" is each peer's gap in its longest run that took no longer than our
default fit.  Rounds interleave the methods (ours, VW default, VW FTRL,
scikit-learn) so that the shared machine's drift hits all alike; the report
gives each time's range over the rounds.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from report import OUT_HELP, number_label, size_label, write_result  # benchmarks/ on sys.path

HERE = Path(__file__).resolve().parent
#: VW's constant (intercept) feature: hash 11650396 masked to the table
VW_CONSTANT = 11650396
TARGETS = (1e-2, 1e-3)
SGD_EPOCHS = (1, 5, 20)


# ------------------------------------------------------------------ the problem
def objective(X, y, coef, intercept, alpha):
    """``(F, non-zeros)`` of the coefficients (intercept unpenalised)."""
    coef = np.asarray(coef, dtype=np.float64).ravel()
    z = (X @ coef + float(intercept)) * np.where(y == 1, 1.0, -1.0)
    return float(np.logaddexp(0, -z).mean() + alpha * np.abs(coef).sum()), int(
        np.count_nonzero(coef))


def peak_rss_mb(pid="self"):
    """A process's high-water mark of resident memory (``VmHWM``), in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ------------------------------------------------------------ child processes
def child(args):
    """One fit in this process; prints ``RESULT <json>``."""
    data = np.load(Path(args.workdir) / "data.npz")
    X = sp.csr_matrix((data["data"], data["indices"], data["indptr"]), shape=data["shape"])
    y = data["y"]
    out = {}
    warnings.simplefilter("ignore")
    if args.child == "ours":
        from distributed import Client, LocalCluster

        from dask_asyncopt import AsyncSGDClassifier

        params = {"loss": "log_loss", "penalty": "l1", "alpha": args.alpha}
        if args.max_iter:
            params.update(max_iter=args.max_iter, tol=None)
        with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            AsyncSGDClassifier(**{**params, "max_iter": 2}).fit(X[:3000], y[:3000])
            tick = time.perf_counter()
            est = AsyncSGDClassifier(**params).fit(X, y)
            out["time"] = time.perf_counter() - tick
            out["workers_rss_mb"] = sorted(client.run(peak_rss_mb).values())
        hist = est.history_
        out["epochs"] = [[float(t), float(f)] for t, f in zip(hist["time"], hist["objective"],
                                                               strict=True)]
        for key in ("gap_bound", "gap_estimate"):
            if key in hist:
                out[key] = [float(g) for g in hist[key]]
        out["n_iter"] = int(est.n_iter_)
    elif args.child == "sgd":
        from sklearn.linear_model import SGDClassifier

        params = {} if args.max_iter == 0 else {"max_iter": args.max_iter, "tol": None}
        tick = time.perf_counter()
        est = SGDClassifier(loss="log_loss", penalty="l1", alpha=args.alpha, random_state=0,
                            **params).fit(X, y)
        out["time"] = time.perf_counter() - tick
        out["n_iter"] = int(est.n_iter_)
    elif args.child == "saga":
        from sklearn.linear_model import LogisticRegression

        tick = time.perf_counter()
        from peers import penalty_args

        est = LogisticRegression(**penalty_args("l1"), C=1.0 / (X.shape[0] * args.alpha),
                                 solver="saga", tol=args.saga_tol,
                                 max_iter=args.max_iter).fit(X, y)
        out["time"] = time.perf_counter() - tick
        out["n_iter"] = int(est.n_iter_[0])
    coef_path = Path(args.workdir) / f"coef-{args.child}-{os.getpid()}.npy"
    np.save(coef_path, np.append(np.ravel(est.coef_), est.intercept_[0]))
    out["coef"] = str(coef_path)
    out["rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


def run_child(args, kind, max_iter=0, timeout=None):
    """One fit in a fresh process (``subprocess.TimeoutExpired`` past ``timeout``)."""
    cmd = [sys.executable, __file__, "--child", kind, "--workdir", args.workdir,
           "--alpha", repr(args.alpha), "--max-iter", str(max_iter),
           "--saga-tol", repr(args.saga_tol)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    out = json.loads(lines[-1][7:])
    full = np.load(out.pop("coef"))
    out["coef"], out["intercept"] = full[:-1], full[-1]
    return out


# --------------------------------------------------------------- Vowpal Wabbit
def write_vw(X, y, path):
    """VW text format with the columns as integer feature names: VW takes an
    integer name as the weight's index (no hashing) in the default namespace,
    so its weights are our columns (its constant sits at a column the data
    avoids, see :func:`main`)."""
    labels = np.where(y == 1, "1", "-1")
    with open(path, "w") as f:
        for i in range(X.shape[0]):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            feats = " ".join(f"{j}:{v:g}" if v != 1 else str(j)
                             for j, v in zip(X.indices[lo:hi], X.data[lo:hi], strict=True))
            f.write(f"{labels[i]} | {feats}\n")


def vw_args(bits, learner, l1, passes, cache, model):
    args = ["--loss_function", "logistic", "-b", str(bits), "--holdout_off", "--quiet",
            "--no_bias_regularization",
            "--passes", str(passes), "--cache_file", str(cache), "--l1", repr(l1),
            "--readable_model", str(model)]
    if learner == "ftrl":
        args.append("--ftrl")
    return args


#: VW in a Python process of its own (the ``vowpalwabbit`` wheel ships no ``vw``
#: binary; ``Workspace`` takes the same arguments): the time printed covers VW's
#: setup, its passes and writing the model, not the interpreter's start and the
#: import; the peak RSS is the whole process's
VW_SCRIPT = (
    "import sys, time; from vowpalwabbit import Workspace; t = time.perf_counter(); "
    "w = Workspace(arg_list=sys.argv[1:]); w.finish(); "
    "print('VWTIME', time.perf_counter() - t); "
    "print('VWRSS', [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])")


def run_vw(argv):
    """Run VW in a process of its own; ``(seconds, peak RSS MB)``."""
    proc = subprocess.run([sys.executable, "-c", VW_SCRIPT, *argv], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"vw {' '.join(argv)} failed: {proc.stderr[-2000:]}")
    got = dict(ln.split(None, 1) for ln in proc.stdout.splitlines()
               if ln.startswith(("VWTIME", "VWRSS")))
    return float(got["VWTIME"]), int(got["VWRSS"].split()[1]) / 1024


def read_vw_model(path, n_features, constant):
    """Coefficients and intercept from a ``--readable_model`` file."""
    w = np.zeros(n_features)
    text = Path(path).read_text()
    body = text.split("\n:0\n", 1)[-1] if "\n:0\n" in text else text
    for m in re.finditer(r"^(\d+):(\S+)", body, flags=re.M):
        w[int(m.group(1))] = float(m.group(2).split(":")[0])
    b = w[constant]
    w[constant] = 0.0
    return w, b


# ---------------------------------------------------------------------- report
def spread(values, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if len(values) == 1 or lo == hi else (
        f"{lo:.{digits}f}–{hi:.{digits}f}")


def reach_ours(run, f_star, target):
    """Seconds our fit took to reach ``F*(1 + target)`` (None: not reached)."""
    epochs = run["epochs"]
    for t, f in epochs:
        if f <= f_star * (1 + target):
            return run["time"] - (epochs[-1][0] - t)
    return None


def reach_sweep(runs, f_star, target):
    """The shortest run of a sweep (passes, epochs) that reached the target."""
    times = [r["time"] for r in runs if r["F"] <= f_star * (1 + target)]
    return min(times) if times else None


def at_time(runs, limit, f_star):
    """Gap of the longest run of a sweep that took at most ``limit`` seconds."""
    within = [r for r in runs if r["time"] <= limit]
    if not within:
        return None
    best = max(within, key=lambda r: r["time"])
    return (best["F"] - f_star) / f_star, best["label"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=500_000)
    p.add_argument("--bits", type=int, default=20)
    p.add_argument("--alpha", type=float, default=2e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--passes", type=lambda s: [int(v) for v in s.split(",")],
                   default=[1, 2, 4, 8, 16, 32], help="VW passes, comma-separated")
    p.add_argument("--long-epochs", type=int, default=40,
                   help="epochs of our tol=None fit that gives F* with saga (0: none)")
    p.add_argument("--ours-max-iter", type=int, default=0,
                   help="our fits run this many epochs (tol=None) instead of the defaults")
    p.add_argument("--no-saga", action="store_true", help="skip the exact saga solver")
    p.add_argument("--saga-tol", type=float, default=1e-5)
    p.add_argument("--saga-max-iter", type=int, default=300)
    p.add_argument("--saga-timeout", type=float, default=1200,
                   help="seconds after which the saga fit is stopped and reported unfinished")
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-iter", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from ctr_data import make_zipf_ctr

    n_features = 2 ** args.bits
    constant = VW_CONSTANT % n_features
    X, y = make_zipf_ctr(args.n_samples, n_features, args.seed, avoid=(constant,))
    n = X.shape[0]
    print(f"data: {n:,} x {n_features:,}, {X.nnz / n:.1f} non-zeros a row, "
          f"{y.mean():.1%} positive, {len(np.unique(X.indices)):,} columns used", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_vw-") as workdir:
        args.workdir = workdir
        np.savez(Path(workdir) / "data.npz", data=X.data, indices=X.indices,
                 indptr=X.indptr, shape=np.array(X.shape), y=y)
        text, cache = Path(workdir) / "data.vw", Path(workdir) / "data.cache"
        tick = time.perf_counter()
        write_vw(X, y, text)
        run_vw(["-d", str(text), "-b", str(args.bits), "--cache_file", str(cache),
                      "--quiet", "--loss_function", "logistic", "--holdout_off"])
        prep = time.perf_counter() - tick
        model = Path(workdir) / "model.txt"
        runs = {"ours": [], "vw": [], "ftrl": [], "sgd": [], "sgd-default": []}

        def vw_round(learner):
            sweep = []
            for passes in args.passes:
                l1 = args.alpha * n * (passes if learner == "ftrl" else 1)
                wall, rss = run_vw(vw_args(args.bits, learner, l1, passes, cache, model))
                w, b = read_vw_model(model, n_features, constant)
                f, nnz = objective(X, y, w, b, args.alpha)
                sweep.append({"time": wall, "rss_mb": rss, "F": f, "nnz": nnz,
                              "label": f"{passes} passes"})
                print(f"vw {learner} {passes} passes: {wall:.2f} s, F {f:.6f}, nnz {nnz:,}, "
                      f"{rss:.0f} MB", flush=True)
            return sweep

        def sgd_round():
            sweep = []
            for k in SGD_EPOCHS:
                r = run_child(args, "sgd", k)
                r["F"], r["nnz"] = objective(X, y, r["coef"], r["intercept"], args.alpha)
                r["label"] = f"{k} epochs"
                sweep.append(r)
                print(f"sklearn SGD {k} epochs: {r['time']:.2f} s, F {r['F']:.6f}", flush=True)
            return sweep

        for r in range(args.rounds):
            ours = run_child(args, "ours", args.ours_max_iter)
            ours["F"], ours["nnz"] = objective(X, y, ours["coef"], ours["intercept"], args.alpha)
            print(f"round {r + 1}: ours {ours['time']:.2f} s, {ours['n_iter']} epochs, "
                  f"F {ours['F']:.6f}, RSS {ours['rss_mb']:.0f} / {ours['workers_rss_mb']} MB",
                  flush=True)
            runs["ours"].append(ours)
            runs["vw"].append(vw_round("default"))
            runs["ftrl"].append(vw_round("ftrl"))
            runs["sgd"].append(sgd_round())
            d = run_child(args, "sgd", 0)
            d["F"], d["nnz"] = objective(X, y, d["coef"], d["intercept"], args.alpha)
            runs["sgd-default"].append(d)

        long, f_long, nnz_long = None, np.inf, 0
        if args.long_epochs:
            long = run_child(args, "ours", args.long_epochs)
            f_long, nnz_long = objective(X, y, long["coef"], long["intercept"], args.alpha)
        saga = None
        if not args.no_saga:
            try:
                saga = run_child(args, "saga", args.saga_max_iter, timeout=args.saga_timeout)
            except subprocess.TimeoutExpired:
                saga = {"timed_out": args.saga_timeout}
                print(f"saga: stopped unfinished after {args.saga_timeout:.0f} s", flush=True)
            else:
                saga["F"], saga["nnz"] = objective(X, y, saga["coef"], saga["intercept"],
                                                   args.alpha)
                print(f"saga: {saga['time']:.1f} s, {saga['n_iter']} epochs, "
                      f"F {saga['F']:.6f}", flush=True)
    candidates = [f_long] + ([saga["F"]] if saga and "F" in saga else []) + [
        r["F"] for key in ("vw", "ftrl", "sgd") for sweep in runs[key] for r in sweep] + [
        r["F"] for r in runs["ours"]]
    f_star = min(candidates)
    text = report(args, X, y, runs, f_star, f_long, nnz_long, long, saga, prep)
    print(text)
    write_result("bench_vw", text, tag=f"{size_label(args.n_samples)}-2^{args.bits}-alpha"
                 f"{number_label(args.alpha)}", out=args.out)


def report(args, X, y, runs, f_star, f_long, nnz_long, long, saga, prep):
    n, n_features = X.shape
    gap = lambda f: (f - f_star) / f_star  # noqa: E731
    ours = runs["ours"]
    limit = min(r["time"] for r in ours)
    rows = []

    def row(name, times, reach, final, nnz, rss):
        rows.append(f"| {name} | {times} | {reach[0]} | {reach[1]} | {final} | {nnz} | {rss} |")

    row(f"ours, {f'{args.ours_max_iter} epochs' if args.ours_max_iter else 'defaults'} "
        "(2 process workers)", spread([r["time"] for r in ours]),
        [spread([reach_ours(r, f_star, t) for r in ours]) for t in TARGETS],
        ", ".join(f"{gap(r['F']):.1e} ({r['n_iter']} ep.)" for r in ours),
        f"{ours[0]['nnz']:,}",
        f"driver {spread([r['rss_mb'] for r in ours], 0)}, workers "
        f"{spread([max(r['workers_rss_mb']) for r in ours], 0)}")
    for key, name in (("vw", "VW default learner"), ("ftrl", "VW FTRL"),
                      ("sgd", "scikit-learn SGDClassifier")):
        sweeps = runs[key]
        longest = [s[-1] for s in sweeps]
        reach = []
        for t in TARGETS:
            got = [reach_sweep(s, f_star, t) for s in sweeps]
            reach.append(spread(got) if any(g is not None for g in got) else (
                f"not reached (best {min(gap(r['F']) for s in sweeps for r in s):.1e})"))
        equal = [at_time(s, limit, f_star) for s in sweeps]
        final = ", ".join("—" if e is None else f"{e[0]:.1e} ({e[1]})" for e in equal)
        row(name, f"{spread([r['time'] for r in longest])} ({longest[0]['label']})", reach,
            final, f"{longest[0]['nnz']:,}", spread([r["rss_mb"] for r in longest], 0))
    sweep_rows = []
    for key, name in (("vw", "VW default"), ("ftrl", "VW FTRL"), ("sgd", "sklearn SGD")):
        for i, r0 in enumerate(runs[key][0]):
            same = [s[i] for s in runs[key]]
            sweep_rows.append(
                f"| {name} | {r0['label']} | {spread([r['time'] for r in same])} | "
                f"{gap(min(r['F'] for r in same)):.1e} | {r0['nnz']:,} | "
                f"{spread([r['rss_mb'] for r in same], 0)} |")
    d = runs["sgd-default"]
    sweep_rows.append(f"| sklearn SGD | defaults ({d[0]['n_iter']} epochs) | "
                      f"{spread([r['time'] for r in d])} | {gap(min(r['F'] for r in d)):.1e} | "
                      f"{d[0]['nnz']:,} | {spread([r['rss_mb'] for r in d], 0)} |")
    ours_rows = [f"| {i + 1} | {t:.2f} | {gap(f):.2e} | " + " | ".join(
        f"{ours[0][key][i]:.2e}" if key in ours[0] else "—"
        for key in ("gap_bound", "gap_estimate")) + " |"
        for i, (t, f) in enumerate(ours[0]["epochs"])]
    finished = saga is not None and saga.get("n_iter", args.saga_max_iter) < args.saga_max_iter
    saga_line = ("not run (`--no-saga`)" if saga is None else
                 f"did not finish: stopped after {saga['timed_out']:.0f} s (`--saga-timeout`)"
                 if "timed_out" in saga else
                 f"{saga['time']:.1f} s, {saga['n_iter']} epochs "
                 f"({'finished' if finished else 'stopped at --saga-max-iter'}"
                 f", tol {args.saga_tol:g}), F = {saga['F']:.6f} (gap {gap(saga['F']):.1e}), "
                 f"{saga['nnz']:,} non-zeros, peak RSS {saga['rss_mb']:.0f} MB")
    data_mb = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20
    return "\n".join([
        f"## Vowpal Wabbit and scikit-learn on wide click-through data "
        f"(`benchmarks/bench_vw.py`, 2^{args.bits} columns)",
        "",
        f"`make_zipf_ctr` ({n:,} rows x 2^{args.bits} = {n_features:,} columns, "
        f"{X.nnz / n:.1f} non-zeros a row, {y.mean():.1%} positive, CSR {data_mb:.0f} MB), "
        f"L1 logistic regression, alpha = {args.alpha:g}; F* = {f_star:.6f} (lowest of every "
        "run" + (f"; our {args.long_epochs}-epoch `tol=None` fit: {f_long:.6f}, {nnz_long:,} "
                 f"non-zeros, {long['time']:.1f} s" if long else "") + ").  "
        + (f"Ours: `max_iter={args.ours_max_iter}, tol=None` (not the defaults).  "
           if args.ours_max_iter else "")
        + f"{args.rounds} interleaved rounds; times are "
        "ranges over the rounds, each fit in a process of its own; VW reads a cache file "
        f"(text + cache written once in {prep:.0f} s, not timed).  Loaded 2-core shared "
        "machine: compare within a round, not with other runs.",
        "",
        f"Exact solver, scikit-learn `LogisticRegression(solver='saga')`: {saga_line}.",
        "",
        "| method | time (s) | to F*(1+1e-2) (s) | to F*(1+1e-3) (s) | gap at our wall time "
        "(per round) | non-zeros | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Every run of the peers' sweeps (fresh process each; gap: best over the rounds):",
        "",
        "| peer | run | time (s) | gap | non-zeros | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
        *sweep_rows,
        "",
        "Our default fit, round 1, epoch by epoch (`history_`; `gap_bound`, `gap_estimate`: "
        "what the stopping rule watches):",
        "",
        "| epoch | time (s) | gap | gap_bound | gap_estimate |",
        "|---|---|---|---|---|",
        *ours_rows,
    ])


if __name__ == "__main__":
    main()
