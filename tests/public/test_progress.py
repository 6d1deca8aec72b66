"""The progress bar and log lines that ``verbose`` asks for (``progress.py``), on real fits.

Log records are collected by a handler on the ``dask_asyncopt`` logger itself
(:func:`records`), not through ``caplog``: pytest >= 9.2 also attaches its shared
capture handlers to every non-propagating logger, ``distributed`` among them, and a
``LocalCluster`` (the session's cluster fixtures) sets every ``StreamHandler`` of the
``distributed`` logger to its ``silence_logs`` level (WARNING) until it closes --
pytest's capture handlers included, so ``caplog`` dropped every INFO record for the
rest of the session (issue 21: the per-epoch lines "were not captured").
"""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor, MatrixFactorization
from dask_asyncopt.datasets import make_ratings, make_sparse_classification
from dask_asyncopt.progress import FitProgress

ROOT = Path(__file__).resolve().parents[2]
X, y = make_sparse_classification(2000, 300, random_state=0)
XR, YR = make_ratings(300, 200, 6_000, random_state=0)
logger = logging.getLogger("dask_asyncopt")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.NOTSET)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    """The records the ``dask_asyncopt`` logger emits during the test (its level is
    left alone: what it emits is what the code under test decides)."""
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def test_verbose_1_shows_a_bar_with_objective_rate_and_staleness(client, capsys, caplog,
                                                                 records):
    caplog.set_level(logging.WARNING, logger="dask_asyncopt")  # as without logging set up
    clf = AsyncSGDClassifier(loss="log_loss", max_iter=3, tol=None, verbose=1,
                             random_state=0).fit(X, y)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "AsyncSGDClassifier(asyb)" in last
    assert "3/3" in last
    assert f"objective={clf.history_['objective'].iloc[-1]:.6g}" in last
    assert "updates/s=" in last and "staleness=" in last
    # verbose=1 is the bar only: no per-epoch log records
    assert records == []


def test_verbose_0_is_silent(client, capsys):
    AsyncSGDClassifier(max_iter=2, tol=None, random_state=0).fit(X, y)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_verbose_2_logs_each_epoch_and_restores_the_logger(client, capsys, records):
    level_before = logger.level
    assert logger.getEffectiveLevel() > logging.INFO  # INFO is off unless verbose asks
    AsyncSGDClassifier(max_iter=3, tol=None, verbose=2, random_state=0).fit(X, y)
    lines = [r.getMessage() for r in records]
    assert [m.split(":")[0] for m in lines] == ["epoch 1", "epoch 2", "epoch 3"]
    assert all(r.levelno == logging.INFO for r in records)
    assert "3/3" in capsys.readouterr().err
    assert logger.level == level_before
    # a later quiet fit stays quiet
    records.clear()
    AsyncSGDClassifier(max_iter=2, tol=None, random_state=0).fit(X, y)
    assert records == []


def test_early_stop_completes_the_bar(client, capsys):
    clf = AsyncSGDClassifier(max_iter=1000, tol=10.0, n_iter_no_change=1, verbose=1,
                             random_state=0).fit(X, y)
    assert clf.n_iter_ < 1000
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{clf.n_iter_}/{clf.n_iter_}" in last
    assert "100%" in last


def test_failed_fit_leaves_the_bar_where_it_failed(client, capsys):
    rng = np.random.default_rng(0)
    Xbig = rng.normal(loc=1e100, scale=1e99, size=(200, 3))
    est = AsyncSGDRegressor(learning_rate="constant", eta0=10.0, max_iter=5, tol=None,
                            verbose=2)
    level_before = logger.level
    with pytest.raises(FloatingPointError):
        est.fit(Xbig, rng.normal(size=200))
    err = capsys.readouterr().err
    assert "/5" in err and "5/5" not in err
    assert err.endswith("\n")  # closed: tqdm ends a closed bar's line
    assert logger.level == level_before


def test_bar_is_closed_and_logger_restored_on_error():
    out = io.StringIO()
    handlers_before = list(logger.handlers)
    with pytest.raises(RuntimeError, match="boom"):
        with FitProgress(verbose=2, total=4, desc="t", file=out) as progress:
            progress({"epoch": 1, "time": 0.5, "updates": 10, "objective": 1.0})
            raise RuntimeError("boom")
    assert progress.bar.disable  # tqdm marks a closed bar disabled
    assert progress.bar.total == 4 and progress.bar.n == 1
    assert logger.handlers == handlers_before


def test_bar_handler_writes_log_lines_when_logging_is_not_configured():
    """A script with no logging set up: verbose=2 lines appear on stderr, above the bar."""
    script = (
        "from dask_asyncopt import AsyncSGDClassifier\n"
        "from dask_asyncopt.datasets import make_sparse_classification\n"
        "if __name__ == '__main__':\n"
        "    X, y = make_sparse_classification(500, 50, random_state=0)\n"
        "    AsyncSGDClassifier(max_iter=2, tol=None, verbose=2).fit(X, y)\n"
        "    import logging\n"
        "    assert not logging.getLogger('dask_asyncopt').handlers\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.replace("\r", "\n").splitlines()
    logged = [line for line in lines if line.startswith("[dask_asyncopt] epoch")]
    assert [line.split(":")[0] for line in logged] == [
        "[dask_asyncopt] epoch 1", "[dask_asyncopt] epoch 2"]
    assert any("2/2" in line for line in lines)



def test_matrix_factorization_bar_shows_rmse_and_rate(client, capsys, caplog, records):
    """The recommender's own history rows drive the same bar (epoch, RMSEs, rate)."""
    caplog.set_level(logging.WARNING, logger="dask_asyncopt")  # as without logging set up
    mf = MatrixFactorization(n_factors=8, max_iter=3, early_stopping=True, tol=None,
                             verbose=1, random_state=0).fit(XR, YR)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    row = mf.history_.iloc[-1]
    assert "MatrixFactorization(asyb)" in last and "3/3" in last
    assert f"train_rmse={row['train_rmse']:.5g}" in last
    assert f"valid_rmse={row['valid_rmse']:.5g}" in last
    assert "updates/s=" in last
    assert records == []


def test_matrix_factorization_verbose_2_logs_each_epoch(client, capsys, records):
    level_before = logger.level
    assert logger.getEffectiveLevel() > logging.INFO
    MatrixFactorization(n_factors=8, max_iter=2, solver="sync", verbose=2,
                        random_state=0).fit(XR, YR)
    lines = [r.getMessage() for r in records]
    assert [m.split(":")[0] for m in lines] == ["epoch 1", "epoch 2"]
    assert "train RMSE" in lines[0]
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "MatrixFactorization(sync)" in last and "2/2" in last
    assert "valid_rmse" not in last  # no validation set without early_stopping
    assert logger.level == level_before
