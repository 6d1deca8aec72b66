"""Every example script runs at its small size; the notebook executes.

Each script in ``examples/`` must accept ``--size small`` and finish in well
under a minute there.  They run in fresh interpreters, as a user runs them.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def _env():
    # the checkout under test, whatever copy of the package is installed
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _run(script, *args):
    """Run ``script --size small`` in a fresh interpreter; it must succeed."""
    proc = subprocess.run([sys.executable, str(script), "--size", "small", *args],
                          capture_output=True, text=True, timeout=120, env=_env(),
                          cwd=ROOT)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stderr[-3000:]}"
    return proc


def test_there_are_examples():
    assert SCRIPTS and (EXAMPLES / "quickstart.ipynb").is_file()


def _check_click_through(proc):
    out = proc.stdout
    assert out.startswith("50,000 impressions"), out
    model, baseline = map(float, re.search(
        r"test log-loss ([\d.]+) \(constant CTR: ([\d.]+)\)", out).groups())
    auc = float(re.search(r"ROC AUC ([\d.]+)", out).group(1))
    assert model < baseline and auc > 0.6, out
    nonzero, total = (int(v.replace(",", "")) for v in re.search(
        r"non-zero weights: ([\d,]+) of ([\d,]+)", out).groups())
    assert 0 < nonzero < total / 10, out  # L1: a sparse model
    assert "epoch" in proc.stderr  # the progress bar (verbose=1 by default)


def _check_recommender(proc):
    out = proc.stdout
    assert out.startswith("100,000 ratings"), out
    model, baseline, floor = map(float, re.search(
        r"test RMSE ([\d.]+) \(global mean: ([\d.]+); noise floor: ([\d.]+)\)",
        out).groups())
    assert floor < model < 1.35 * floor < baseline, out  # near the noise floor
    assert len(re.findall(r"^  user \d+: (?:\d+: [\d.-]+(?:, |$)){5}", out, re.M)) == 3, out
    recommended, average = map(float, re.search(
        r"true mean rating of the recommended items ([\d.-]+) \(of all unseen items: "
        r"([\d.-]+)\)", out).groups())
    assert recommended > average + 0.5, out
    assert re.search(r"items similar to item \d+ .*: (?:\d+ \([\d.-]+\)(?:, |$)){5}",
                     out, re.M), out
    neighbours, everyone = map(float, re.search(
        r"true-factor cosine of those neighbours ([\d.-]+) \(of all items: ([\d.-]+)\)",
        out).groups())
    assert neighbours > everyone + 0.3, out
    assert "MatrixFactorization(asyb)" in proc.stderr  # the progress bar (verbose=1)


def _check_straggler(proc):
    found = dict(re.findall(r"^\s*(sync|asyb|adpsgd): +[\d.]+ s, objective ([\d.]+)$",
                            proc.stdout, re.M))
    assert set(found) == {"sync", "asyb", "adpsgd"}, proc.stdout
    constant = float(re.search(r"constant model's objective ([\d.]+)", proc.stdout).group(1))
    # each solver learned the problem; how close they end depends on how the straggler's
    # duty cycle met the run (AD-PSGD's fast worker takes more samples), i.e. on timing
    assert max(float(v) for v in found.values()) < 0.9 * constant, proc.stdout


def _check_amsgrad(proc):
    gaps = dict(re.findall(r"^\s*(one step|sgd|amsgrad): .*\n\s*final relative gap to the "
                           r"best: ([\d.e+-]+)$", proc.stdout, re.M))
    assert set(gaps) == {"one step", "sgd", "amsgrad"}, proc.stdout
    # the point of the example: per-coordinate steps win on badly scaled columns
    assert max(float(gaps["sgd"]), float(gaps["amsgrad"])) < float(gaps["one step"]), proc.stdout


# what a script's output must show, beyond running (scripts without an entry must run)
CHECKS = {"click_through_l1.py": _check_click_through,
          "recommender.py": _check_recommender,
          "straggler.py": _check_straggler,
          "amsgrad_vs_sgd.py": _check_amsgrad}


@pytest.mark.slow  # fresh interpreters, each with its own embedded cluster
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_runs_at_small_size(script):
    proc = _run(script)
    if script.name in CHECKS:
        CHECKS[script.name](proc)


@pytest.mark.slow  # a Jupyter kernel running every cell
def test_quickstart_notebook_executes(monkeypatch):
    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # inherited by the kernel
    client = NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()  # raises CellExecutionError at the first failing cell
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    data = [o.get("data", {}) for o in outputs]
    # the progress bar (a widget when ipywidgets is installed, text otherwise)
    assert any("AsyncSGDClassifier(asyb)" in d.get("text/plain", "") for d in data) or any(
        "AsyncSGDClassifier(asyb)" in o.get("text", "") for o in outputs)
    assert any("image/png" in d for d in data)  # the history plot
