"""``partial_fit`` of the linear estimators: scikit-learn's semantics (one
pass, the schedule going on, ``classes`` on the first call), the blocks kept
on the cluster between calls, released by ``fit``, failures and garbage
collection; on real thread and process clusters."""

import gc
import pickle
import time

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier, SGDRegressor

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor

from ..conftest import cluster_is_clean


def _data(n=6000, d=200, seed=0, n_classes=2):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.03, random_state=seed, format="csr")
    X.data = rng.normal(size=X.nnz)
    scores = X @ rng.normal(size=(d, n_classes)) + 0.1 * rng.normal(size=(n, n_classes))
    y = scores[:, 0] > 0 if n_classes == 2 else np.argmax(scores, axis=1)
    return X, y.astype(int)


def _store_keys(client):
    """Keys of the model stores (blocks, replicas) the scheduler holds."""
    return client.run_on_scheduler(lambda dask_scheduler: sorted(
        k for k in dask_scheduler.tasks
        if str(k).startswith(("asyncopt-block-", "asyncopt-replica-"))))


def _released(client, wait=5.0):
    """Whether the scheduler forgets every store (releases are asynchronous)."""
    deadline = time.monotonic() + wait
    while _store_keys(client):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("solver", ["asyb", "sync", "adpsgd"])
@pytest.mark.parametrize("optimizer", ["sgd", "amsgrad"])
def test_stream_keeps_its_store_and_learns_as_sklearn(client, solver, optimizer):
    X, y = _data()
    clf = AsyncSGDClassifier(loss="log_loss", solver=solver, optimizer=optimizer,
                             random_state=0)
    ref = SGDClassifier(loss="log_loss", random_state=0)
    keys = set()
    for _ in range(3):
        for start in range(0, X.shape[0], 2000):
            part = slice(start, start + 2000)
            clf.partial_fit(X[part], y[part], classes=[0, 1])
            ref.partial_fit(X[part], y[part], classes=[0, 1])
            keys.add(tuple(_store_keys(client)))
    assert len(keys) == 1 and keys.pop()  # built once, kept between the calls
    assert clf.score(X, y) >= ref.score(X, y) - 0.02
    assert len(clf.history_) == 9 and clf.history_["epoch"].tolist() == list(range(1, 10))
    assert clf.n_iter_ == 1
    if solver == "adpsgd":  # a loop ends its pass with the chunk that completes it
        assert 3 * X.shape[0] <= clf.t_ <= 1.25 * 3 * X.shape[0]
    else:  # each row once per call
        assert clf.t_ == 3 * X.shape[0]
    del clf
    gc.collect()
    assert cluster_is_clean(client)


def test_one_call_is_one_epoch_of_plain_sgd(client):
    X, y = _data(n=3000, seed=1)
    params = dict(loss="log_loss", solver="sync", random_state=3)
    once = AsyncSGDClassifier(**params).partial_fit(X, y, classes=[0, 1])
    epoch = AsyncSGDClassifier(max_iter=1, tol=None, variance_reduction=None,
                               **params).fit(X, y)
    np.testing.assert_array_equal(once.coef_, epoch.coef_)
    np.testing.assert_array_equal(once.intercept_, epoch.intercept_)
    # the next call goes on from there as a warm-started epoch does
    once.partial_fit(X, y)
    epoch.set_params(warm_start=True).fit(X, y)
    np.testing.assert_allclose(once.coef_, epoch.coef_, rtol=1e-9, atol=1e-12)
    assert once.t_ == epoch.t_ == 2 * X.shape[0]


def test_sample_weight_scales_the_steps(client):
    """Weight 2 on every row with a constant step and no penalty is the
    unweighted pass at twice the step (same rows, same order: sync)."""
    X, y = _data(n=2000, seed=2)
    params = dict(loss="log_loss", solver="sync", penalty=None, learning_rate="constant",
                  random_state=0)
    heavy = AsyncSGDClassifier(eta0=0.01, **params).partial_fit(
        X, y, classes=[0, 1], sample_weight=np.full(X.shape[0], 2.0))
    fast = AsyncSGDClassifier(eta0=0.02, **params).partial_fit(X, y, classes=[0, 1])
    np.testing.assert_allclose(heavy.coef_, fast.coef_, rtol=1e-12)


def test_new_parameters_or_coefficients_rebuild_from_coef(client):
    X, y = _data(n=2000, seed=3)
    clf = AsyncSGDClassifier(loss="log_loss", random_state=0).partial_fit(X, y, [0, 1])
    first = _store_keys(client)
    clf.partial_fit(X, y)
    assert _store_keys(client) == first
    clf.set_params(alpha=1e-3)  # another penalty: blocks of the new one
    clf.partial_fit(X, y)
    second = _store_keys(client)
    assert second and second != first
    clf.coef_ = np.zeros_like(clf.coef_)  # the user's coefficients are the start
    clf.intercept_ = np.zeros_like(clf.intercept_)
    clf.partial_fit(X[:10], y[:10])
    assert _store_keys(client) != second
    untouched = np.setdiff1d(np.arange(X.shape[1]), X[:10].indices)
    assert not clf.coef_[:, untouched].any()  # ten rows' steps from zero
    clf.fit(X, y)  # a full fit releases the kept blocks
    assert _released(client)


def test_pickles_and_clones_carry_no_store(client):
    X, y = _data(n=2000, seed=4)
    clf = AsyncSGDClassifier(loss="log_loss", random_state=0).partial_fit(X, y, [0, 1])
    copy = pickle.loads(pickle.dumps(clf))
    assert "_kept" not in copy.__dict__ and "_kept" in clf.__dict__
    np.testing.assert_array_equal(copy.predict(X), clf.predict(X))
    copy.partial_fit(X, y)  # starts from its coef_ on new blocks
    assert copy.score(X, y) > 0.9
    del clf, copy
    gc.collect()
    assert cluster_is_clean(client)


def test_multiclass_and_regressor_streams(client):
    X, y = _data(n=4000, seed=5, n_classes=3)
    clf = AsyncSGDClassifier(loss="log_loss", random_state=0, class_weight={2: 2.0})
    for start in range(0, 4000, 1000):
        clf.partial_fit(X[start:start + 1000], y[start:start + 1000], classes=[0, 1, 2])
    assert clf.coef_.shape == (3, X.shape[1]) and clf.score(X, y) > 0.8
    rng = np.random.default_rng(0)
    target = X @ rng.normal(size=X.shape[1])
    reg, ref = AsyncSGDRegressor(random_state=0), SGDRegressor(random_state=0)
    for _ in range(5):
        reg.partial_fit(X, target)
        ref.partial_fit(X, target)
    assert reg.coef_.shape == (X.shape[1],)
    assert reg.score(X, target) >= ref.score(X, target) - 0.05


def test_dask_batches_stay_on_the_workers(client):
    X, y = _data(n=3000, seed=6)
    dX = da.from_array(X.toarray(), chunks=(750, -1))
    dy = da.from_array(y, chunks=750)
    clf = AsyncSGDClassifier(loss="log_loss", random_state=0)
    for _ in range(3):
        clf.partial_fit(dX, dy, classes=[0, 1], sample_weight=da.ones(3000, chunks=750))
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match=r"labels \[7\] that are not in classes"):
        clf.partial_fit(dX, da.from_array(np.where(y == 1, 7, 0), chunks=750))
    clf.partial_fit(dX, dy)  # the failed call left the stream usable


@pytest.mark.parametrize(("call", "match"), [
    (lambda c, X, y: c.partial_fit(X, y), "classes must be passed on the first call"),
    (lambda c, X, y: c.partial_fit(X, y, classes=[0]), "greater than one"),
    (lambda c, X, y: c.set_params(class_weight="balanced").partial_fit(X, y, [0, 1]),
     "not supported by partial_fit"),
    (lambda c, X, y: c.partial_fit(X, y + 5, classes=[0, 1]), r"labels \[5, 6\]"),
    (lambda c, X, y: c.partial_fit(X, y, [0, 1]).partial_fit(X, y, [0, 1, 2]),
     "not the same as on the first call"),
    (lambda c, X, y: c.partial_fit(X, y, [0, 1]).partial_fit(X[:, :5], y),
     "features"),
])
def test_partial_fit_misuse_is_named(client, call, match):
    X, y = _data(n=200, d=20, seed=7)
    with pytest.raises(ValueError, match=match):
        call(AsyncSGDClassifier(random_state=0), X, y)


@pytest.mark.slow
def test_process_workers_keep_the_store_and_clean_up(process_client):
    X, y = _data(n=4000, seed=8)
    with process_client.as_current():
        clf = AsyncSGDClassifier(loss="log_loss", random_state=0)
        keys = set()
        for start in range(0, 4000, 1000):
            clf.partial_fit(X[start:start + 1000], y[start:start + 1000], classes=[0, 1])
            keys.add(tuple(_store_keys(process_client)))
        assert len(keys) == 1
        assert clf.score(X, y) > 0.9
        del clf
        gc.collect()
        assert cluster_is_clean(process_client)
        plugins = process_client.run(lambda dask_worker: [
            p for p in dask_worker.plugins if "asyncopt" in p])
        assert not any(plugins.values())
