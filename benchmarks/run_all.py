"""Regenerate every table and plot of ``docs/benchmarks.md``.

Run from the repository root (needs ``pip install -e ".[bench,plot]"``)::

    python benchmarks/run_all.py [--only bench_sgd bench_mf ...]

Runs each benchmark script with its default arguments, one after the other
(each writes its own section of ``docs/benchmarks.md``); on a 2-core machine
the whole run takes tens of minutes.  Run it on an otherwise idle machine:
every script measures wall time.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p.stem for p in HERE.glob("bench_*.py"))
DOC = ["--out", "docs/benchmarks.md"]
#: Arguments of each run (default: one run with the script's defaults).
RUNS = {
    # the foundation's targets at two data sizes (dask-ml's time depends on the size),
    # then at 1M on data of another seed, at the default and a 5x weaker penalty
    "bench_sgd": [[], ["--n-samples", "1000000", "--section", "bench_sgd_1m"],
                  *[["--n-samples", "1000000", "--data-seed", "11", "--alpha", alpha,
                     "--dml-budget", "60", "--section", f"bench_sgd_1m_seed11_{alpha}"]
                    for alpha in ("5e-6", "1e-6")]],
    "bench_straggler": [["--repeats", "3", "--both", *DOC]],
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", choices=SCRIPTS, default=SCRIPTS)
    args = p.parse_args()
    for name in args.only:
        for extra in RUNS.get(name, [[]]):
            tick = time.perf_counter()
            print(f"== {name} {' '.join(extra)}", flush=True)
            # relative path: the scripts quote their command line in the report
            subprocess.run([sys.executable, f"benchmarks/{name}.py", *extra], check=True,
                           cwd=HERE.parent)
            print(f"== {name}: {time.perf_counter() - tick:.0f} s", flush=True)


if __name__ == "__main__":
    main()
