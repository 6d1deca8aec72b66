"""``python -m dask_asyncopt`` (``__main__.py``): the demo, at a small size, on the
test cluster (the active client)."""

import re

import numpy as np
import pytest

from dask_asyncopt import __main__ as cli


def test_demo_fits_both_models_and_reports_them(capsys):
    cli.main(["demo", "--n-samples", "4000", "--n-features", "800", "--alpha", "1e-4"])
    out = capsys.readouterr().out
    assert out.startswith("data: 4,000 rows x 800 sparse features")
    assert "AsyncSGDClassifier (asyb" in out and "scikit-learn SGDClassifier" in out
    objectives = [float(v) for v in re.findall(r"objective ([\d.]+)", out)]
    accuracies = [float(v) for v in re.findall(r"test accuracy ([\d.]+)", out)]
    assert len(objectives) == len(accuracies) == 2
    assert objectives[0] <= objectives[1] * 1.05  # ours is no worse than SGDClassifier's
    assert min(accuracies) > 0.6
    assert re.search(r"staleness mean [\d.]+ / max \d+, compute fraction \d+%", out)


def test_logistic_objective():
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([1, 0])
    coef, intercept = np.array([[0.5, -1.0]]), np.array([0.25])
    z = (X @ coef.ravel() + 0.25) * np.array([1.0, -1.0])
    want = np.logaddexp(0, -z).mean() + 0.1 * 1.5
    assert cli.logistic_objective(X, y, coef, intercept, 0.1) == pytest.approx(want)


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit):
        cli.main([])
    assert "demo" in capsys.readouterr().err
