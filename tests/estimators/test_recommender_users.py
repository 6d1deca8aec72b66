"""``MatrixFactorization`` as its users meet it (issue 21): raw ids of any hashable
type and their mapping, the unknown-id policy, ``rating_range``, ``similar_users``,
DataFrames of ratings, warm starts and ``partial_fit``, and dask collections that
stay on the workers.  Real clusters (the session's thread and process clusters),
small data."""

import pickle

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from dask_asyncopt import MatrixFactorization
from dask_asyncopt.datasets import make_ratings

from ..conftest import cluster_is_clean


def fast(**kw):
    return MatrixFactorization(**({"n_factors": 4, "max_iter": 3, "random_state": 0,
                                   "solver": "sync"} | kw))


@pytest.fixture(scope="module")
def tiny():
    return make_ratings(120, 80, 2_000, random_state=3)


@pytest.fixture(scope="module")
def reference(client, tiny):
    """The sync fit on integer ids that relabelled ids must reproduce."""
    with client.as_current():
        return fast().fit(*tiny)


def same_model(a, b):
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.global_mean_ == b.global_mean_


def relabel(ids, f):
    out = np.empty(ids.shape[0], dtype=object)
    out[:] = [f(int(i)) for i in ids]
    return out


# ------------------------------------------------------------------------ ids
def test_hashable_ids_in_the_same_order_give_the_same_model(client, tiny, reference):
    """Ids that sort as the integers do map to the same rows: the sync fit is the
    reference's, bit for bit, and every method speaks the raw ids."""
    X, y = tiny
    labels = {
        "strings": (lambda u: f"user-{u:04d}", lambda i: f"item-{i:04d}"),
        "tuples": (lambda u: (u // 10, u % 10), lambda i: ("item", i)),
    }
    for kind, (fu, fi) in labels.items():
        users, items = relabel(X[:, 0], fu), relabel(X[:, 1], fi)
        frame = pd.DataFrame({"user": users, "item": items})
        mf = fast().fit(frame, y)
        same_model(mf, reference)
        assert list(mf.user_ids_) == [fu(int(u)) for u in reference.user_ids_], kind
        assert mf.user_index_.get_loc(fu(7)) == reference.user_index_.get_loc(7)
        np.testing.assert_array_equal(mf.predict(frame), reference.predict(X))
        top, scores = mf.recommend(pd.Series([users[0], users[5]]), n=4)
        ref_top, ref_scores = reference.recommend([X[0, 0], X[5, 0]], n=4)
        assert top.tolist() == [[fi(int(i)) for i in row] for row in ref_top], kind
        np.testing.assert_array_equal(scores, ref_scores)
        near, sims = mf.similar_items([fi(3)], n=3)
        ref_near, ref_sims = reference.similar_items([3], n=3)
        assert near.tolist() == [[fi(int(i)) for i in ref_near[0]]]
        np.testing.assert_array_equal(sims, ref_sims)
    assert cluster_is_clean(client)


def test_narrow_and_spread_integer_ids_map_alike(client, tiny, reference):
    """Integer ids in a narrow range are mapped by marking the ids present, ids
    spread wide by hashing: either way rows follow the sorted ids, dtype kept."""
    X, y = tiny
    for ids in (X.astype(np.int32) + 5, X * 1_000_003 - 7):
        mf = fast().fit(ids, y)
        same_model(mf, reference)
        np.testing.assert_array_equal(mf.user_ids_, np.unique(ids[:, 0]))
        assert mf.item_ids_.dtype == ids.dtype


def test_float_ids_beyond_int64_do_not_wrap(client, tiny, reference):
    """Ids at and above 2**63 stay the distinct ids they are (floats spaced 2048
    apart at 2**63, floats above 2**64, uint64): no cast to int64 wraps them."""
    X, y = tiny
    columns = {
        "float64": (2.0**63 + 2048.0 * X[:, 0], 2.0**64 * (1.0 + X[:, 1])),
        "uint64": (np.uint64(2**63) + X[:, 0].astype(np.uint64),
                   np.uint64(2**64 - 1) - X[:, 1].astype(np.uint64)),
    }
    for kind, (users, items) in columns.items():
        mf = fast().fit(np.column_stack([users, items]), y)
        assert mf.user_ids_.dtype == users.dtype, kind
        np.testing.assert_array_equal(mf.user_ids_, np.unique(users))
        assert len(mf.user_ids_) == len(reference.user_ids_)
        assert len(mf.item_ids_) == len(reference.item_ids_)
        if kind == "float64":  # same order as the integers: the reference's model
            same_model(mf, reference)
        else:  # items reversed: a relabelling, same predictions up to the layout
            assert mf.user_index_.get_loc(np.uint64(2**63)) == 0
        np.testing.assert_array_equal(
            mf.predict(np.column_stack([users, items])),
            mf.predict(pd.DataFrame({"user": users, "item": items})))
    # 2**63 - 1 (an int) and 2.0**63 (a float) are different ids
    mf = fast().fit(np.array([[2**63 - 1, 0], [0, 1]], dtype=object), [1.0, 2.0])
    assert mf.user_index_.get_indexer(np.array([2.0**63])).tolist() == [-1]
    assert cluster_is_clean(client)


def test_mixed_ids_keep_their_first_appearance_and_compare_as_python(client, tiny):
    X, y = tiny
    users = relabel(X[:, 0], lambda u: u if u % 2 else f"odd-one-{u}")  # int and str
    mf = fast().fit(pd.DataFrame({"user": users, "item": X[:, 1]}), y)
    assert list(mf.user_ids_) == list(pd.unique(users))  # not comparable: as they come
    np.testing.assert_array_equal(mf.user_index_.get_indexer(users),
                                  pd.factorize(users)[0])
    assert np.isfinite(mf.predict(pd.DataFrame({"user": users, "item": X[:, 1]}))).all()
    # 1 == 1.0 == True in Python: one id
    ints = fast().fit(*tiny)
    known = int(ints.item_ids_[0])
    assert ints.predict([[1.0, float(known)]]) == ints.predict([[1, known]])
    assert cluster_is_clean(client)


def holed_part(j):
    """A partition of ratings; partition 2 lacks the user id of its row 3."""
    users = np.arange(10, dtype=float) + 10 * j
    if j == 2:
        users[3] = np.nan
    return pd.DataFrame({"user": users, "item": np.arange(10), "rating": 1.0})


def test_missing_or_unhashable_ids_are_errors_naming_the_column(client, tiny, reference):
    X, y = tiny
    Xf = X.astype(float)
    Xf[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"X's item column \(column 1\) contains a missing "
                                         r"item id \(NaN or None\) at row 1"):
        fast().fit(Xf, y)
    frame = pd.DataFrame({"uid": X[:, 0].astype(object), "iid": X[:, 1]})
    frame.loc[4, "uid"] = None
    with pytest.raises(ValueError, match=r"X's user column 'uid' contains a missing user "
                                         "id .* at row 4"):
        fast().fit(frame, y)
    bad = np.array([[[1], 2], [3, 4]], dtype=object)
    with pytest.raises(TypeError, match="user ids that are not hashable"):
        fast().fit(bad, [1.0, 2.0])
    with pytest.raises(ValueError, match="missing user id"):
        reference.predict([[np.nan, 1]])
    with pytest.raises(ValueError, match="item_ids contains a missing item id"):
        reference.similar_items([None])
    holed = dd.from_map(holed_part, range(4))
    with pytest.raises(ValueError, match=r"missing user id .* \(partition 2 of the dask"):
        fast().fit(holed)
    assert cluster_is_clean(client)


# ------------------------------------------------------------------ DataFrames
def test_a_dataframe_of_ratings_is_accepted_directly(client, tiny, reference):
    X, y = tiny
    by_name = pd.DataFrame({"rating": y, "day": 0, "item": X[:, 1], "user": X[:, 0]})
    by_position = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": y})
    for frame in (by_name, by_position):
        same_model(fast().fit(frame), reference)
    same_model(fast().fit(by_name[["user", "item"]], by_name["rating"]), reference)
    np.testing.assert_array_equal(reference.predict(by_name), reference.predict(X))
    with pytest.raises(ValueError, match="3 columns .user id, item id, rating."):
        fast().fit(by_position[["a", "b"]])
    with pytest.raises(ValueError, match=r"X must have shape \(n_ratings, 2\)"):
        fast().fit(by_position, y)
    with pytest.raises(ValueError, match="X's rating column 'c' contains NaN"):
        fast().fit(by_position.assign(c=np.where(np.arange(len(y)) == 9, np.nan, y)))
    assert cluster_is_clean(client)


def test_a_dataframe_of_ratings_is_scored_as_it_is_fitted(client, tiny, reference):
    """``score(frame)`` without ``y``, as ``fit(frame)``: the default scorer of a
    search calls ``score(X_test, None)`` after ``fit(X_train)``, and failed with a
    TypeError (every candidate's score NaN, the search picking the first)."""
    from sklearn.model_selection import KFold, cross_val_score

    X, y = tiny
    frame = pd.DataFrame({"user": X[:, 0], "item": X[:, 1], "rating": y})
    expected = reference.score(X, y)
    assert reference.score(frame) == expected
    assert reference.score(frame[["rating", "item", "user"]]) == expected
    assert reference.score(dd.from_pandas(frame, npartitions=2)) == pytest.approx(expected)
    weights = np.arange(len(y), dtype=float)
    assert reference.score(frame, sample_weight=weights) == reference.score(
        X, y, sample_weight=weights)
    cv = KFold(2)
    scores = cross_val_score(fast(), frame, cv=cv, error_score="raise")
    apart = [fast().fit(X[train], y[train]).score(X[test], y[test])
             for train, test in cv.split(X)]
    np.testing.assert_array_equal(scores, apart)
    with pytest.raises(ValueError, match="3 columns .user id, item id, rating."):
        reference.score(frame[["user", "item"]])
    assert cluster_is_clean(client)


# ----------------------------------------------------------- unknown ids, range
def test_unknown_ids_and_the_rating_range(client, tiny, reference):
    X, y = tiny
    pred = reference.predict(X)
    low, high = np.quantile(pred, [0.1, 0.9])
    mf = fast(rating_range=(low, high)).fit(X, y)
    same_model(mf, reference)  # training is unaffected
    np.testing.assert_array_equal(mf.predict(X), np.clip(pred, low, high))
    assert mf.score(X, y) != reference.score(X, y)
    top, scores = mf.recommend([X[0, 0]], n=50)
    ref_top, ref_scores = reference.recommend([X[0, 0]], n=50)
    np.testing.assert_array_equal(scores, np.clip(ref_scores, low, high))
    assert scores.min() >= low and scores.max() <= high

    # the policy: an unknown side contributes nothing (global mean + the known bias)
    mu = reference.global_mean_
    user, item = X[0]
    u, i = reference.user_index_.get_loc(user), reference.item_index_.get_loc(item)
    got = reference.predict(np.array([["new", item], [user, "new"], ["new", "new"]],
                                     dtype=object))
    np.testing.assert_allclose(got, [mu + reference.item_bias_[i],
                                     mu + reference.user_bias_[u], mu], rtol=0, atol=1e-15)
    items, scores = reference.recommend(["new"], n=5)
    best = np.argsort(-reference.item_bias_, kind="stable")[:5]
    np.testing.assert_array_equal(items[0], reference.item_ids_[best])
    np.testing.assert_allclose(scores[0], mu + reference.item_bias_[best], atol=1e-15)
    with pytest.raises(KeyError, match="unknown item id.s. 'new', 12345: fit saw no rating"):
        reference.similar_items([item, "new", 12345])
    with pytest.raises(KeyError, match="unknown user id.s. -1"):
        reference.similar_users([-1])

    for bad in [(5, 1), (1, np.inf), (1, 2, 3), ("a", "b")]:
        with pytest.raises(ValueError, match="rating_range must be None or .low, high."):
            fast(rating_range=bad).fit(X, y)
    with pytest.raises(ValueError, match="rating_range"):
        fast(rating_range="1-5").fit(X, y)
    assert cluster_is_clean(client)


def test_similar_users_stay_in_their_taste_group(client):
    """Users u0-u19 rate items 0-19 high and 20-39 low, u20-u39 the opposite."""
    users, items = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    users, items = users.ravel(), items.ravel()
    ratings = np.where((users < 20) == (items < 20), 5.0, 1.0)
    frame = pd.DataFrame({"user": [f"u{u}" for u in users], "item": items,
                          "rating": ratings})
    mf = MatrixFactorization(n_factors=4, max_iter=40, random_state=0).fit(frame)
    neighbours, sims = mf.similar_users(["u0", "u30"], n=5)
    assert {int(u[1:]) for u in neighbours[0]} <= set(range(1, 20))
    assert {int(u[1:]) for u in neighbours[1]} <= set(range(20, 40)) - {30}
    assert (sims > 0.9).all() and (sims <= 1.0).all()
    with pytest.raises(ValueError, match="n must be a positive integer"):
        mf.similar_users(["u0"], n=0)
    assert cluster_is_clean(client)


# ------------------------------------------------------------ continued fits
@pytest.mark.parametrize("params", [{}, {"learning_rate": "constant"},
                                    {"optimizer": "amsgrad", "eta0": 0.05}],
                         ids=["adagrad", "constant", "amsgrad"])
def test_warm_start_and_partial_fit_continue_exactly(client, params):
    """2 users x 4 items on 2 loops and 4 item blocks: every stratum holds one
    rating, so the loops' rating order cannot differ and a continued fit must be
    the uninterrupted fit, bit for bit: factors, biases, the step state (AdaGrad's
    G, AMSGrad's moments and counts) and the epoch count of the constant rule's
    ``eta0 / sqrt(epoch)``."""
    users, items = np.meshgrid(np.arange(2), np.arange(4), indexing="ij")
    X = np.column_stack([users.ravel(), items.ravel()])
    y = np.arange(8, dtype=float) % 5 + 1
    base = {"n_factors": 3, "init_scale": 0.5} | params
    whole = fast(max_iter=3, **base).fit(X, y)
    warm = fast(max_iter=1, **base).fit(X, y)
    warm.set_params(warm_start=True, max_iter=2).fit(X, y)
    steps = fast(**base).partial_fit(X, y).partial_fit(X, y).partial_fit(X, y)
    for mf in (warm, steps):
        same_model(mf, whole)
        assert mf.n_iter_ == 3 and mf.best_epoch_ == 3
        assert mf.history_["epoch"].tolist() == [1, 2, 3]
        np.testing.assert_array_equal(mf.history_["eta0"], whole.history_["eta0"])
    # without the step state (another rule's) the continuation differs
    other = fast(max_iter=1, **base).fit(X, y)
    other.set_params(warm_start=True, max_iter=2,
                     optimizer="sgd" if "optimizer" in params else "amsgrad",
                     eta0=base.get("eta0")).fit(X, y)
    assert not np.array_equal(other.user_factors_, whole.user_factors_)
    assert cluster_is_clean(client)


def test_partial_fit_folds_in_new_users_and_items(client, tiny):
    X, y = tiny
    frame = pd.DataFrame({"user": relabel(X[:, 0], lambda u: f"u{u:03d}"),
                          "item": X[:, 1], "rating": y})
    old = (X[:, 0] < 80) & (X[:, 1] < 60)
    mf = fast(max_iter=2).fit(frame[old])
    ids_before, mu = mf.user_ids_.copy(), mf.global_mean_
    items_before = mf.item_ids_.copy()
    batch = frame[~old]
    new_users = sorted(set(batch["user"]) - set(ids_before))
    new_items = sorted(set(batch["item"]) - set(items_before))
    assert new_users and new_items

    def batch_rmse():
        return float(np.sqrt(np.mean((mf.predict(batch) - batch["rating"]) ** 2)))

    before = batch_rmse()  # new ids: global mean plus the known biases
    mf.partial_fit(batch)
    assert list(mf.user_ids_) == list(ids_before) + new_users  # appended, sorted
    assert list(mf.item_ids_) == list(items_before) + new_items
    assert mf.user_factors_.shape == (len(ids_before) + len(new_users), 4)
    assert mf.global_mean_ == mu and mf.n_iter_ == 3
    assert mf.history_["epoch"].tolist() == [1, 2, 3]
    for _ in range(4):
        mf.partial_fit(batch)
    assert batch_rmse() < before
    # what partial_fit saw is left out of the recommendations too
    user = new_users[0]
    rated = set(batch.loc[batch["user"] == user, "item"])
    items, _ = mf.recommend([user], n=len(mf.item_ids_) - len(rated))
    assert not rated & set(items[0])
    with pytest.raises(ValueError, match="has 4 factors but n_factors=5"):
        mf.set_params(n_factors=5).partial_fit(batch)
    assert cluster_is_clean(client)


# ------------------------------------------------------------------- dask data
N_PARTS, PART_SIZE = 8, 6_000


def rating_part(j):
    """Partition ``j``: made on the worker that computes it (no data in the graph)."""
    rng = np.random.default_rng(j)
    users = rng.integers(0, 300, PART_SIZE)
    items = rng.integers(0, 200, PART_SIZE)
    ratings = 3.0 + np.sin(users) * np.cos(items) + 0.3 * rng.normal(size=PART_SIZE)
    return pd.DataFrame({"user": [f"user-{u:03d}" for u in users],
                         "item": items * 10**12, "rating": ratings})


def bytes_received(client):
    """Bytes the workers sent to anything but a worker (the client, through the
    scheduler or directly) since the last call: every such transfer is a
    ``get_data`` logged with its requester."""
    workers = set(client.nthreads())

    def drain(dask_worker):
        log = list(dask_worker.transfer_outgoing_log)
        dask_worker.transfer_outgoing_log.clear()
        return [(e["who"], e["total"]) for e in log]

    logs = client.run(drain)
    return sum(total for log in logs.values() for who, total in log if who not in workers)


def test_dask_ratings_stay_on_the_workers(client):
    """A dask DataFrame of string ids made on the workers: the fit moves only ids,
    counts and sums to the client (the ratings are shuffled worker to worker),
    measured from the workers' transfer logs, while computing the same collection
    moves all of it; the model is the in-memory fit's up to the rounding of the
    global mean."""
    frame = dd.from_map(rating_part, range(N_PARTS))
    local = pd.concat([rating_part(j) for j in range(N_PARTS)], ignore_index=True)
    data_bytes = int(local.memory_usage(deep=True).sum())
    bytes_received(client)

    mf = fast(early_stopping=True, n_iter_no_change=5).fit(frame)
    assert bytes_received(client) < 0.02 * data_bytes
    assert "valid_rmse" in mf.history_ and np.isfinite(mf.history_["valid_rmse"]).all()
    dask_fit = fast().fit(frame)
    assert bytes_received(client) < 0.02 * data_bytes
    assert frame.compute().shape == local.shape
    assert bytes_received(client) > 0.9 * data_bytes  # the measure sees partitions

    memory_fit = fast().fit(local)
    np.testing.assert_array_equal(dask_fit.user_ids_, memory_fit.user_ids_)
    np.testing.assert_array_equal(dask_fit.item_ids_, memory_fit.item_ids_)
    assert dask_fit.global_mean_ == pytest.approx(memory_fit.global_mean_, rel=1e-14)
    np.testing.assert_allclose(dask_fit.predict(local), memory_fit.predict(local),
                               rtol=1e-12)
    lazy = dask_fit.predict(frame)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), memory_fit.predict(local), rtol=1e-12)

    # the rated pairs stayed on the workers too
    with pytest.raises(ValueError, match="fitted on a dask collection.*exclude_seen=False"):
        dask_fit.recommend(["user-001"])
    items, _ = dask_fit.recommend(["user-001"], n=3, exclude_seen=False)
    assert items.shape == (1, 3)

    # a dask batch with new users and items, folded in on the workers
    new = dd.from_pandas(pd.DataFrame({"user": ["user-new", "user-001"],
                                       "item": [7, 0], "rating": [4.0, 2.0]}),
                         npartitions=1)
    dask_fit.partial_fit(new)
    assert list(dask_fit.user_ids_[-1:]) == ["user-new"]
    assert dask_fit.item_ids_[-1] == 7 and dask_fit.n_iter_ == 4
    assert dask_fit.global_mean_ == pytest.approx(memory_fit.global_mean_, rel=1e-14)
    assert cluster_is_clean(client)


def test_dask_pairs_and_their_errors(client, tiny, reference):
    X, y = tiny
    pairs = (da.from_array(X, chunks=(500, 2)), da.from_array(y, chunks=500))
    frame = dd.from_pandas(pd.DataFrame({"user": X[:, 0], "item": X[:, 1], "rating": y}),
                           npartitions=3)
    for X_in, y_in in [pairs, (frame[["user", "item"]], frame["rating"]), (frame, None)]:
        mf = fast().fit(X_in, y_in)
        np.testing.assert_allclose(mf.predict(X), reference.predict(X), rtol=1e-12)
    with pytest.raises(ValueError, match="X has 3 partitions and y 2"):
        fast().fit(frame[["user", "item"]], frame["rating"].repartition(npartitions=2))
    with pytest.raises(TypeError, match="both be dask collections"):
        fast().fit(pairs[0], y)
    with pytest.raises(ValueError, match="3 columns"):
        fast().fit(frame[["user", "item"]])
    with pytest.raises(ValueError, match="X has 0 ratings"):
        fast().fit(frame[frame["rating"] > 100])
    assert cluster_is_clean(client)


def test_process_workers_fit_string_ids_from_dask(process_client, tiny, reference):
    """Ids, parts and pieces cross processes (serialised): the same model."""
    X, y = tiny
    frame = pd.DataFrame({"user": relabel(X[:, 0], lambda u: f"u{u:04d}"),
                          "item": X[:, 1], "rating": y})
    with process_client.as_current():
        mf = fast().fit(dd.from_pandas(frame, npartitions=3))
        np.testing.assert_allclose(mf.predict(frame), reference.predict(X), rtol=1e-12)
        assert mf.user_index_.get_loc("u0007") == reference.user_index_.get_loc(7)
    assert cluster_is_clean(process_client)


def test_clone_and_pickle_keep_the_mapping(client, tiny):
    X, y = tiny
    frame = pd.DataFrame({"user": relabel(X[:, 0], lambda u: ("u", u)),
                          "item": relabel(X[:, 1], lambda i: f"i{i}"), "rating": y})
    mf = fast(rating_range=(1, 5)).fit(frame)
    assert clone(mf).get_params() == mf.get_params()
    assert {"rating_range", "warm_start"} <= set(mf.get_params())
    again = pickle.loads(pickle.dumps(mf))
    np.testing.assert_array_equal(again.predict(frame), mf.predict(frame))
    np.testing.assert_array_equal(again.recommend([("u", 3)])[0], mf.recommend([("u", 3)])[0])
    assert again.user_index_.get_loc(("u", 3)) == mf.user_index_.get_loc(("u", 3))
    assert cluster_is_clean(client)
