"""A fit that fails or is interrupted releases its data at once, and many fits in a
row do not grow the workers' memory (process workers)."""

import gc

import numpy as np
import psutil
import pytest

from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization
from dask_asyncopt.datasets import make_ratings
from dask_asyncopt.progress import FitProgress

from ..conftest import cluster_is_clean

X, y = make_ratings(300, 200, 8000, random_state=0)


def _interrupt_after_first_epoch(monkeypatch, exc):
    def callback(self, row):
        raise exc

    monkeypatch.setattr(FitProgress, "__call__", callback)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("stopped by the user")])
def test_an_interrupted_factorisation_releases_its_data_at_once(exc, process_client,
                                                                monkeypatch):
    """The traceback is kept (as IPython keeps it): the scattered rating parts must
    not live as long as it does."""
    _interrupt_after_first_epoch(monkeypatch, exc)
    with process_client.as_current(), pytest.raises(type(exc)) as info:
        MatrixFactorization(n_factors=4, max_iter=5, random_state=0).fit(X, y)
    assert info.traceback  # still alive here
    assert cluster_is_clean(process_client)
    assert not sum(process_client.run(lambda dask_worker: len(dask_worker.data)).values())


def test_an_interrupted_linear_fit_releases_its_data_at_once(process_client, monkeypatch):
    rng = np.random.default_rng(0)
    Xl = rng.normal(size=(2000, 10))
    yl = (Xl[:, 0] > 0).astype(int)
    _interrupt_after_first_epoch(monkeypatch, KeyboardInterrupt())
    with process_client.as_current(), pytest.raises(KeyboardInterrupt) as info:
        AsyncSGDClassifier(max_iter=5, random_state=0).fit(Xl, yl)
    assert info.traceback
    assert cluster_is_clean(process_client)
    assert not sum(process_client.run(lambda dask_worker: len(dask_worker.data)).values())


@pytest.mark.slow
def test_worker_memory_is_flat_over_100_factorisations(process_client):
    def rss():
        process_client.run(gc.collect)
        return process_client.run(lambda: psutil.Process().memory_info().rss)

    with process_client.as_current():
        for seed in range(20):  # warm-up: kernels loaded, Dask's bounded logs filling
            MatrixFactorization(n_factors=4, max_iter=2, random_state=seed).fit(X, y)
        before = rss()
        for seed in range(100):
            MatrixFactorization(n_factors=4, max_iter=2, random_state=seed).fit(X, y)
        after = rss()
    growth = {w: (after[w] - before[w]) / 2**20 for w in before}
    assert all(g <= 5.0 for g in growth.values()), growth
