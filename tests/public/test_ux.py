"""What a user sees: the progress bar's end, the missing-matplotlib hint, and the
parameters that can disagree with the data, the cluster or the solver (checked
before any data moves: clipped or kept with a warning naming the numbers)."""

import io
import re
import sys
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor, MatrixFactorization
from dask_asyncopt.datasets import make_ratings, make_sparse_classification
from dask_asyncopt.progress import FitProgress
from dask_asyncopt.solvers.mf import sync_ticket

from ..conftest import cluster_is_clean

ROOT = Path(__file__).resolve().parents[2]
X, y = make_sparse_classification(1000, 200, random_state=0)
XR, YR = make_ratings(100, 60, 1_500, random_state=0)
ROW = {"time": 0.1, "updates": 4, "objective": 0.5, "staleness_mean": 0.0,
       "staleness_max": 0}


def our_warnings(record):
    """The parameter warnings among ``record`` (not, e.g., a port already in use)."""
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)
            and any(p in str(w.message) for p in ("n_blocks", "n_workers", "max_staleness",
                                                   "batch_size"))]


def fit_quietly(est, X, y):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        est.fit(X, y)
    return our_warnings(record)


# ------------------------------------------------------------------ progress bar
def test_text_bar_ends_full_at_the_epoch_the_fit_stopped(client, capsys):
    clf = AsyncSGDClassifier(loss="log_loss", max_iter=1000, tol=10.0, n_iter_no_change=1,
                             verbose=1, random_state=0).fit(X, y)
    n = clf.n_iter_
    assert n < 1000
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f" {n}/{n} " in last and "100%" in last, last
    assert cluster_is_clean(client)


def test_standalone_text_bar_ends_full_and_a_failure_does_not():
    out = io.StringIO()
    with FitProgress(verbose=1, total=1000, desc="t", file=out) as progress:
        for _ in range(7):
            progress(ROW)
    last = out.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert " 7/7 " in last and "100%" in last and "objective=0.5" in last, last
    out = io.StringIO()
    with pytest.raises(RuntimeError), FitProgress(verbose=1, total=1000, file=out) as p:
        p(ROW)
        raise RuntimeError("lost")
    assert p.bar.total == 1000 and p.bar.n == 1


def test_notebook_widget_ends_full_at_the_epoch_the_fit_stopped():
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm as notebook_tqdm

    with FitProgress(verbose=1, total=1000, desc="t", tqdm_class=notebook_tqdm) as progress:
        for _ in range(7):
            progress(ROW)
        widget = progress.bar.container.children[1]
        assert widget.max == 1000  # during the fit: max_iter long
    assert (widget.max, widget.value) == (7, 7)
    assert widget.bar_style == "success"  # green, full
    # a failed fit stays where it failed, red
    with pytest.raises(RuntimeError), FitProgress(
            verbose=1, total=1000, tqdm_class=notebook_tqdm) as progress:
        progress(ROW)
        raise RuntimeError("lost")
    widget = progress.bar.container.children[1]
    assert (widget.max, widget.value, widget.bar_style) == (1000, 1, "danger")


def test_notebook_widget_replaying_a_real_fit(client):
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm as notebook_tqdm

    clf = AsyncSGDClassifier(loss="log_loss", max_iter=1000, tol=10.0, n_iter_no_change=1,
                             random_state=0).fit(X, y)
    with FitProgress(verbose=1, total=clf.max_iter, tqdm_class=notebook_tqdm) as progress:
        for row in clf.history_.to_dict("records"):
            progress(row)
    widget = progress.bar.container.children[1]
    assert widget.max == widget.value == clf.n_iter_ < 1000
    assert cluster_is_clean(client)


# ------------------------------------------------------------- missing matplotlib
def test_missing_matplotlib_names_a_command_that_works(monkeypatch):
    from dask_asyncopt.plotting import plot_history

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    history = pd.DataFrame({"epoch": [1], "time": [0.1], "objective": [1.0]})
    with pytest.raises(ImportError) as info:
        plot_history(history)
    message = str(info.value)
    assert "pip install matplotlib" in message
    assert 'pip install -e ".[plot]"' in message
    assert "dask_asyncopt[plot]" not in message  # not installable: not on PyPI
    # the extra named for a clone exists (pyproject.toml: plot = ["matplotlib..."])
    assert re.search(r'^plot = \["matplotlib', (ROOT / "pyproject.toml").read_text(), re.M)


def test_no_page_or_message_names_the_uninstallable_extra():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "dask_asyncopt").rglob("*.py")]
    assert [f.name for f in files if "dask_asyncopt[" in f.read_text()] == []


# ------------------------------------------------- parameters against data/cluster
def test_n_blocks_above_the_coordinates_is_clipped_with_a_warning(client):
    Xd = np.random.default_rng(0).normal(size=(300, 3))
    yd = (Xd[:, 0] > 0).astype(int)
    for solver in ("asyb", "sync"):
        clf = AsyncSGDClassifier(loss="log_loss", n_blocks=8, solver=solver, max_iter=3,
                                 tol=None, random_state=0)
        with pytest.warns(UserWarning, match=r"n_blocks=8 is more than the model's 4 "
                                             r"coordinates \(3 feature\(s\) \+ the intercept\)"
                                             r": the fit uses 4 blocks"):
            clf.fit(Xd, yd)
        assert clf.score(Xd, yd) > 0.9
    assert cluster_is_clean(client)


def test_default_n_blocks_is_clipped_silently(client):
    # one coordinate (no intercept) on two workers: the default one block per worker
    # does not fit, and the user asked for nothing
    Xd = np.random.default_rng(0).normal(size=(200, 1))
    reg = AsyncSGDRegressor(fit_intercept=False, max_iter=3, tol=None, random_state=0)
    assert fit_quietly(reg, Xd, 2.0 * Xd[:, 0]) == []
    assert reg.coef_.shape == (1,)
    assert cluster_is_clean(client)


def test_n_workers_above_the_workers_runs_with_a_warning(client):
    assert len(client.nthreads()) == 2
    clf = AsyncSGDClassifier(loss="log_loss", n_workers=3, max_iter=2, tol=None,
                             random_state=0)
    with pytest.warns(UserWarning, match=r"n_workers=3 worker loops on 2 Dask worker thread\(s\) "
                                         r"\(2 worker\(s\)\): loops share threads "
                                         r"\(up to 2 on one\)"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2 and clf.history_["samples"].iloc[-1] == 2 * X.shape[0]
    assert cluster_is_clean(client)


def test_n_workers_above_the_rows_is_clipped_with_a_warning(client):
    Xd, yd = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]), np.array([0, 1, 0])
    clf = AsyncSGDClassifier(loss="log_loss", n_workers=2 * 3, max_iter=2, tol=None)
    got = fit_quietly(clf, Xd, yd)
    assert "n_workers=6 but X has 3 row(s) (a worker loop needs at least one): the fit " \
           "runs 3 worker loop(s)" in got
    assert any("loops share threads" in m for m in got)  # 3 loops on 2 workers
    assert cluster_is_clean(client)


def test_n_workers_above_a_dask_inputs_row_chunks_is_clipped_with_a_warning(client):
    Xd = np.random.default_rng(0).normal(size=(400, 3))
    yd = (Xd[:, 0] > 0).astype(int)
    clf = AsyncSGDClassifier(loss="log_loss", n_workers=2, max_iter=2, tol=None)
    with pytest.warns(UserWarning, match=r"n_workers=2 but X has 1 row chunk\(s\).*: the "
                                         r"fit runs 1 worker loop\(s\); rechunk X"):
        clf.fit(da.from_array(Xd, chunks=(400, 3)), da.from_array(yd, chunks=400))
    assert clf.n_iter_ == 2
    assert cluster_is_clean(client)


@pytest.mark.parametrize("solver", ["sync", "adpsgd"])
def test_max_staleness_without_asyb_is_ignored_with_a_warning(client, solver):
    clf = AsyncSGDClassifier(loss="log_loss", solver=solver, max_staleness=2, max_iter=2,
                             tol=None, random_state=0)
    with pytest.warns(UserWarning, match=f"max_staleness=2 has no effect with "
                                         f"solver='{solver}'.*bounds solver='asyb' only"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2
    assert cluster_is_clean(client)


def test_n_blocks_with_adpsgd_is_ignored_with_a_warning(client):
    clf = AsyncSGDClassifier(loss="log_loss", solver="adpsgd", n_blocks=4, max_iter=2,
                             tol=None, random_state=0)
    with pytest.warns(UserWarning, match="n_blocks=4 has no effect with solver='adpsgd'"):
        clf.fit(X, y)
    assert cluster_is_clean(client)


def test_batch_size_above_a_loops_rows_is_one_exchange_without_a_warning(client):
    clf = AsyncSGDClassifier(loss="log_loss", batch_size=10 * X.shape[0], max_iter=2,
                             tol=None, random_state=0)
    assert fit_quietly(clf, X, y) == []
    assert clf.n_iter_ == 2
    assert cluster_is_clean(client)


def test_matching_parameters_fit_without_a_warning(client):
    for est, data in [(AsyncSGDClassifier(loss="log_loss", n_workers=2, n_blocks=2,
                                          max_staleness=4, max_iter=2, tol=None), (X, y)),
                      (MatrixFactorization(n_factors=4, n_workers=2, n_blocks=4,
                                           max_iter=2), (XR, YR))]:
        assert fit_quietly(est, *data) == []
    assert cluster_is_clean(client)


def test_mf_n_blocks_above_the_items_is_clipped_with_a_warning(client):
    n_items = np.unique(XR[:, 1]).size
    mf = MatrixFactorization(n_factors=4, n_blocks=n_items + 40, max_iter=2, random_state=0)
    with pytest.warns(UserWarning, match=f"n_blocks={n_items + 40} is more than the "
                                         f"{n_items} distinct item"):
        mf.fit(XR, YR)
    assert mf.n_iter_ == 2
    assert cluster_is_clean(client)


def test_mf_n_workers_above_the_users_is_clipped_with_a_warning(client):
    few = XR[:, 0] < 3  # three users
    mf = MatrixFactorization(n_factors=4, n_workers=5, max_iter=2, random_state=0)
    got = fit_quietly(mf, XR[few], YR[few])
    assert "n_workers=5 but the ratings have 3 distinct user(s) (a worker loop owns users " \
           "of its own): the fit runs 3 worker loop(s)" in got
    assert any("loops share threads" in m for m in got)
    assert cluster_is_clean(client)


@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_mf_fewer_item_blocks_than_loops_warns_and_completes(client, solver):
    # sync used to deadlock here (two loops holding the same ticket of one block)
    mf = MatrixFactorization(n_factors=4, n_blocks=1, n_workers=2, solver=solver,
                             max_iter=2, timeout=60, random_state=0)
    with pytest.warns(UserWarning, match=r"n_blocks=1 item block\(s\) for 2 worker loops"):
        mf.fit(XR, YR)
    assert mf.n_iter_ == 2
    assert cluster_is_clean(client)


def test_sync_tickets_give_every_loop_its_own_turn_at_a_block():
    for n_loops, n_blocks in [(2, 1), (5, 2), (3, 3), (2, 4)]:
        for block in range(n_blocks):
            tickets = [sync_ticket(0, w, block, n_loops, n_blocks) for w in range(n_loops)]
            assert sorted(tickets) == list(range(n_loops))
