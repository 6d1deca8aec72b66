"""The Sphinx site builds with warnings as errors (as CI builds it)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a Sphinx build in a subprocess, ~15 s

ROOT = Path(__file__).resolve().parents[2]


def test_docs_build_without_warnings(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"sphinx failed:\n{proc.stderr}\n{proc.stdout}"
    for page in ("index", "install", "user_guide", "cluster", "examples", "api",
                 "performance", "design"):
        assert (out / f"{page}.html").is_file(), page
    api = (out / "api.html").read_text()
    for name in ("AsyncSGDClassifier", "AsyncSGDRegressor", "plotting.plot_history",
                 "progress.FitProgress", "datasets.make_sparse_classification",
                 "cluster.get_client", "AsyncSGDClassifier.fit", "MatrixFactorization",
                 "MatrixFactorization.recommend", "MatrixFactorization.similar_items",
                 "metrics.rmse", "metrics.ndcg_at_k", "datasets.make_ratings"):
        assert f'id="dask_asyncopt.{name}"' in api, name
    # the notebook is offered for download, the example script is shown
    assert list((out / "_downloads").rglob("quickstart.ipynb"))
    examples = (out / "examples.html").read_text()
    assert "make_impressions" in examples and "similar_items" in examples
    assert 'id="recommender-matrixfactorization"' in (out / "user_guide.html").read_text()
