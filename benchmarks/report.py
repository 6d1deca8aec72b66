"""Where a benchmark run's raw result goes: a new file per run in ``benchmarks/results/``.

Every ``benchmarks/bench_*.py`` ends with :func:`write_result`, which writes its
markdown report to ``benchmarks/results/<benchmark>-<YYYY-MM-DD>-<commit>-<tag>.md``
(UTC date of the run, short git commit of the checkout, ``<tag>`` the data size
or variant) under a header giving the command, date, commit and machine.  An
existing file is never overwritten (a second run of the same day and commit gets
``-2``, ``-3``, ...), and nothing under ``docs/`` is written: the current
numbers are copied into ``docs/performance.md`` by hand.

``--out`` of every script goes to :func:`result_path`: a directory (the file is
named as above in it), a ``.md`` file path (written as given), or ``-`` (the
report goes to stdout only).  The old ``--out docs/benchmarks.md`` means
``benchmarks/results/``.
"""

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]
#: where the scripts used to write; ``--out`` naming it means ``benchmarks/results/``
LEGACY_DOC = ROOT / "docs" / "benchmarks.md"

#: ``--out`` help shared by the scripts
OUT_HELP = ("where the raw result goes: a directory (default benchmarks/results/, a new "
            "file <benchmark>-<date>-<commit>-<tag>.md in it), a .md file, or - for "
            "stdout only")


def _git(*args):
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit():
    """``(short commit, has uncommitted changes)`` of this checkout; ``("nogit", False)``
    outside a git checkout."""
    sha = _git("rev-parse", "--short=7", "HEAD")
    if not sha:
        return "nogit", False
    changed = _git("status", "--porcelain", "--untracked-files=no")
    return sha, bool(changed)


def size_label(n):
    """``200000`` -> ``"200k"``, ``1000000`` -> ``"1m"``, ``1500`` -> ``"1500"``."""
    for div, unit in ((1_000_000, "m"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def number_label(x):
    """``1e-06`` -> ``"1e-6"``, ``5e-06`` -> ``"5e-6"`` (for file names)."""
    return f"{x:g}".replace("e-0", "e-").replace("e+0", "e")


def command(argv=None):
    """The command line of this run, as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    return "python " + " ".join(shlex.quote(a) for a in argv)


def machine():
    """``nproc``, CPU model, RAM and OS of this machine, in one line."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        ram = f", {pages * size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    return (f"`nproc` = {cores}, CPU `{model}`{ram}, {platform.system()} "
            f"{platform.release()}")



def proc_status(field, pid="self"):
    """``VmHWM`` (peak RSS) or ``VmRSS`` of a process, in bytes (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def mb(n):
    return f"{n / 2**20:,.0f} MB"


def result_path(benchmark, tag=None, out=None, when=None):
    """The file a run of ``benchmark`` writes (``None`` for ``out="-"``).

    ``out``: ``None`` (``benchmarks/results/``) or a directory -- a new file
    ``<benchmark>-<date>-<commit>[-<tag>].md`` in it, never an existing one --, or a
    path ending in ``.md``, used as given.
    """
    if out == "-":
        return None
    if out is not None and Path(out).resolve() == LEGACY_DOC:
        print(f"--out {out}: benchmark results no longer go into the docs; writing to "
              f"{_shown(RESULTS)}/ instead", file=sys.stderr, flush=True)
        out = None
    if out is not None and str(out).endswith(".md"):
        return Path(out)
    directory = RESULTS if out is None else Path(out)
    when = when or datetime.datetime.now(datetime.timezone.utc)
    sha, _ = git_commit()
    stem = f"{benchmark}-{when:%Y-%m-%d}-{sha}" + (f"-{tag}" if tag else "")
    path, i = directory / f"{stem}.md", 1
    while path.exists() or path.with_suffix(".png").exists():
        i += 1
        path = directory / f"{stem}-{i}.md"
    return path


def header(benchmark, argv=None, when=None):
    """The provenance lines every result file starts with."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    sha, dirty = git_commit()
    return "\n".join([
        f"<!-- Raw result of one run of benchmarks/{benchmark}.py, written by the script "
        "(benchmarks/report.py); do not edit. -->",
        "",
        f"- command: `{command(argv)}`",
        f"- date (UTC): {when:%Y-%m-%d %H:%M}",
        f"- commit: `{sha}`" + (" with uncommitted changes" if dirty else ""),
        f"- machine: {machine()}",
        "",
    ])


def write_result(benchmark, text, tag=None, out=None, path=None, argv=None):
    """Write ``text`` (the script's markdown report) as a new result file and return
    its path (``None`` when ``out`` is ``-``).  ``path``: a file from
    :func:`result_path` already chosen (to name companion files after it)."""
    if out == "-":
        return None
    if path is None:
        path = result_path(benchmark, tag, out)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header(benchmark, argv) + "\n" + text.strip("\n") + "\n")
    print(f"wrote {_shown(path)}", file=sys.stderr, flush=True)
    return path


def _shown(path):
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
