"""plot_history: overlays of real fits' histories (Agg backend) and its errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization
from dask_asyncopt.datasets import make_ratings, make_sparse_classification
from dask_asyncopt.plotting import plot_history

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fits(client):
    X, y = make_sparse_classification(2000, 300, random_state=0)
    with client.as_current():
        return [AsyncSGDClassifier(solver=s, max_iter=4, tol=None, random_state=0).fit(X, y)
                for s in ("asyb", "sync")]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("x", ["time", "epoch"])
def test_overlays_fits(fits, x):
    ax = plot_history(fits, x=x)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [
        "AsyncSGDClassifier(solver='asyb')", "AsyncSGDClassifier(solver='sync')"]
    for line, est in zip(lines, fits, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), est.history_[x])
        np.testing.assert_array_equal(line.get_ydata(), est.history_["objective"])
    assert ax.get_xlabel() == ("epoch" if x == "epoch" else
                               "wall time since the fit started (s)")
    assert ax.get_legend() is not None


def test_single_estimator_own_axes_labels_and_column(fits):
    fig, ax = plt.subplots()
    out = plot_history(fits[0], x="epoch", y="staleness_mean", ax=ax, labels=["mine"],
                       marker="o")
    assert out is ax
    (line,) = ax.get_lines()
    assert line.get_label() == "mine" and line.get_marker() == "o"
    np.testing.assert_array_equal(line.get_ydata(), fits[0].history_["staleness_mean"])


def test_same_default_labels_are_numbered(fits):
    ax = plot_history([fits[0], fits[0]])
    assert [line.get_label() for line in ax.get_lines()] == [
        "AsyncSGDClassifier(solver='asyb') #1", "AsyncSGDClassifier(solver='asyb') #2"]


def test_dataframes_are_accepted():
    history = pd.DataFrame({"epoch": [1, 2], "time": [0.1, 0.3], "objective": [1.0, 0.5]})
    ax = plot_history(history)
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [0.1, 0.3])


def test_not_fitted():
    with pytest.raises(NotFittedError, match="AsyncSGDClassifier instance is not fitted"):
        plot_history([AsyncSGDClassifier()])


def test_unknown_column_lists_the_available_ones(fits):
    with pytest.raises(ValueError, match=r"y='accuracy' is not a history column; "
                                         r"available: epoch, time, samples"):
        plot_history(fits, y="accuracy")
    with pytest.raises(ValueError, match="x='wall' is not a history column"):
        plot_history(fits, x="wall")


def test_labels_must_match_the_fits(fits):
    with pytest.raises(ValueError, match="got 1 labels for 2 fits"):
        plot_history(fits, labels=["one"])
    with pytest.raises(ValueError, match="at least one"):
        plot_history([])


def test_missing_matplotlib_names_the_extra():
    # a fresh interpreter in which `import matplotlib` fails, as without the extra
    script = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import pandas as pd\n"
        "from dask_asyncopt.plotting import plot_history\n"
        "h = pd.DataFrame({'epoch': [1], 'time': [0.1], 'objective': [1.0]})\n"
        "try:\n"
        "    plot_history(h)\n"
        "except ImportError as e:\n"
        "    print(e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    # dask_asyncopt is not on PyPI (docs/install.md): the hint names commands that
    # install, matplotlib itself or the clone's `plot` extra (pyproject.toml)
    assert "dask_asyncopt.plotting needs matplotlib" in proc.stdout
    assert "`pip install matplotlib`" in proc.stdout
    assert '`pip install -e ".[plot]"`' in proc.stdout
    extras = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^plot = \[.*"matplotlib', extras, re.M)  # the extra it names


@pytest.fixture(scope="module")
def mf_fits(client):
    X, y = make_ratings(300, 200, 6_000, random_state=0)
    with client.as_current():
        return [MatrixFactorization(n_factors=8, max_iter=3, early_stopping=True, tol=None,
                                    solver=s, random_state=0).fit(X, y)
                for s in ("asyb", "sync")]


def test_matrix_factorization_fits_default_to_train_rmse(mf_fits):
    ax = plot_history(mf_fits)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [
        "MatrixFactorization(solver='asyb')", "MatrixFactorization(solver='sync')"]
    for line, est in zip(lines, mf_fits, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), est.history_["time"])
        np.testing.assert_array_equal(line.get_ydata(), est.history_["train_rmse"])
    assert ax.get_ylabel() == "train RMSE (progressive)"


def test_matrix_factorization_validation_rmse_by_epoch(mf_fits):
    ax = plot_history(mf_fits, x="epoch", y="valid_rmse", labels=["asyb", "sync"])
    for line, est in zip(ax.get_lines(), mf_fits, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(line.get_ydata(), est.history_["valid_rmse"])
    assert ax.get_ylabel() == "validation RMSE"
    # a linear model's column is not there: the error lists what is
    with pytest.raises(ValueError, match=r"y='objective' is not a history column; "
                                         r"available: .*train_rmse"):
        plot_history(mf_fits, y="objective")
