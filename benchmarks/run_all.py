"""Run every benchmark; each run writes its raw result to ``benchmarks/results/``.

Run from the repository root (needs ``pip install -e ".[bench,plot]"``)::

    python benchmarks/run_all.py [--only bench_sgd bench_mf ...] [--dry-run]

Runs each benchmark script, one after the other, with the arguments in
:data:`RUNS` (default: one run with the script's defaults).  Every run writes a
new file ``benchmarks/results/<benchmark>-<date>-<commit>-<tag>.md`` (see
``benchmarks/report.py``); nothing under ``docs/`` is rewritten: copy the
headline numbers into ``docs/performance.md`` by hand.  On a 2-core machine the
whole run takes tens of minutes.  Run it on an otherwise idle machine: every
script measures wall time.
"""

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SCRIPTS = sorted(p.stem for p in HERE.glob("bench_*.py"))
#: Arguments of each run (default: one run with the script's defaults).
RUNS = {
    # the foundation's targets at two data sizes (dask-ml's time depends on the size),
    # then at 1M on data of another seed, at the default and a 5x weaker penalty
    "bench_sgd": [[], ["--n-samples", "1000000"],
                  *[["--n-samples", "1000000", "--data-seed", "11", "--alpha", alpha,
                     "--dml-budget", "60"]
                    for alpha in ("5e-6", "1e-6")]],
    "bench_straggler": [["--repeats", "3", "--both"]],
    # the wide models of issue 20, VW's home ground: 2^20 to 2^26 hashed columns (the
    # widest with 5-epoch fits of ours; the script's defaults are the 500k rows)
    "bench_vw": [["--n-samples", "100000", "--bits", "20", "--alpha", "1e-5", "--passes",
                  "1,2,4,8,16", "--long-epochs", "80", "--no-saga"],
                 ["--n-samples", "100000", "--bits", "24", "--alpha", "1e-5", "--rounds", "1",
                  "--passes", "1,4,16", "--long-epochs", "60", "--no-saga"],
                 ["--n-samples", "100000", "--bits", "26", "--alpha", "1e-5", "--rounds", "1",
                  "--passes", "1,4", "--long-epochs", "0", "--ours-max-iter", "5",
                  "--no-saga"]],
}


def commands(names):
    """The command lines of the runs of ``names``, relative to the repository root."""
    return [(name, [sys.executable, f"benchmarks/{name}.py", *extra])
            for name in names for extra in RUNS.get(name, [[]])]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", choices=SCRIPTS, default=SCRIPTS)
    p.add_argument("--dry-run", action="store_true",
                   help="print the command lines and run nothing")
    args = p.parse_args()
    runs = commands(args.only)
    if args.dry_run:
        for _, cmd in runs:
            print(" ".join(shlex.quote(a) for a in ["python", *cmd[1:]]))
        return
    before = set(RESULTS.glob("*")) if RESULTS.is_dir() else set()
    for name, cmd in runs:
        tick = time.perf_counter()
        print(f"== {' '.join(cmd[1:])}", flush=True)
        # relative path: the scripts quote their command line in the result file
        subprocess.run(cmd, check=True, cwd=HERE.parent)
        print(f"== {name}: {time.perf_counter() - tick:.0f} s", flush=True)
    new = sorted(set(RESULTS.glob("*")) - before) if RESULTS.is_dir() else []
    print("new results:", *(f"  {f.relative_to(HERE.parent)}" for f in new), sep="\n")


if __name__ == "__main__":
    main()
