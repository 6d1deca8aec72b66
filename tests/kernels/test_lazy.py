"""Numba kernels of the parameter store (``kernels/lazy.py``): lazy proximal
updates of a block against one-map-at-a-time references (``tests/reference.py``)."""

import numpy as np
import pytest

from dask_asyncopt.kernels import lazy
from dask_asyncopt.objective.penalties import sparse_penalty_scale

from ..reference import L1_RATIOS, make_history, ref_materialise


def make_block(rng, l1_ratio, n_coords=15, K=2):
    hist_d, hist_s, steps = make_history(rng, l1_ratio)
    now = len(steps)
    w = rng.normal(size=(n_coords, K))
    last = rng.integers(0, now + 1, size=n_coords).astype(np.int64)
    last[0] = 0  # the whole history
    last[1] = now  # already current
    return w, last, hist_d, hist_s, steps, now


@pytest.mark.parametrize("penalty", sorted(L1_RATIOS))
@pytest.mark.parametrize("skip", [-1, 6])
def test_gather(penalty, skip):
    rng = np.random.default_rng([len(penalty), skip + 1])
    w, last, hist_d, hist_s, steps, now = make_block(rng, L1_RATIOS[penalty])
    last[6] = 0
    want = ref_materialise(w, last, steps, now, skip)
    ids = np.array([0, 1, 6, 9, 3, 12], dtype=np.int64)
    w_before, last_before = w.copy(), last.copy()
    out = np.empty((ids.shape[0], w.shape[1]))
    lazy.gather(w, last, hist_d, hist_s, now, ids, skip, out)
    np.testing.assert_allclose(out, want[ids], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(w[ids], want[ids], rtol=1e-10, atol=1e-13)  # written back
    np.testing.assert_array_equal(last[ids], now)
    others = np.setdiff1d(np.arange(w.shape[0]), ids)
    np.testing.assert_array_equal(w[others], w_before[others])
    np.testing.assert_array_equal(last[others], last_before[others])
    if skip >= 0:
        np.testing.assert_array_equal(out[2], w_before[6])  # unpenalised: untouched
    else:
        assert not np.allclose(out[2], w_before[6])
    if penalty == "l1":  # coordinate 0 caught up over the whole history: thresholded
        assert np.count_nonzero(want[ids] == 0.0) > 0
        np.testing.assert_array_equal(out == 0.0, want[ids] == 0.0)
    # A second gather at the same point changes nothing.
    out2 = np.empty_like(out)
    lazy.gather(w, last, hist_d, hist_s, now, ids, skip, out2)
    np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("K", [1, 3])
def test_gather_packed_is_gather_plus_the_terms(K):
    rng = np.random.default_rng(K)
    w, last, hist_d, hist_s, steps, now = make_block(rng, L1_RATIOS["l1"])
    w = np.ascontiguousarray(np.repeat(w[:, :1], K, axis=1))
    drift = rng.normal(size=w.shape)
    counts = rng.integers(0, 4, size=w.shape[0]).astype(np.int32)
    n_rows = 37
    # the penalty scale n / n_j of sparse_penalty_scale, 0 for the unpenalised coordinate
    scale = sparse_penalty_scale(n_rows, counts, 6)
    precond = rng.uniform(0.1, 1, size=w.shape[0]).astype(np.float32)
    ids = np.array([0, 1, 6, 9, 3, 12], dtype=np.int64)
    want = np.empty((ids.shape[0], K))
    w2, last2 = w.copy(), last.copy()
    lazy.gather(w2, last2, hist_d, hist_s, now, ids, 6, want)
    out = np.full((ids.shape[0] + 2, 2 * K + 2), np.nan)
    lazy.gather_packed(w, last, hist_d, hist_s, now, ids, 6, drift, counts, n_rows, precond,
                       out[1:-1])
    np.testing.assert_array_equal(out[1:-1, :K], want)
    np.testing.assert_array_equal(out[1:-1, K:2 * K], drift[ids])
    np.testing.assert_array_equal(out[1:-1, 2 * K], scale[ids])
    np.testing.assert_array_equal(out[1:-1, 2 * K + 1], precond[ids])
    np.testing.assert_array_equal(w, w2)  # materialised as gather does
    np.testing.assert_array_equal(last, last2)
    assert np.isnan(out[[0, -1]]).all()  # only its rows written
    # the terms alone (reads of remote blocks): packed once, gathered by position
    terms = np.empty((w.shape[0], K + 2))
    lazy.pack_terms(drift, counts, n_rows, precond, 6, np.arange(w.shape[0]), terms)
    np.testing.assert_array_equal(terms[:, :K], drift)
    np.testing.assert_array_equal(terms[:, K], scale)
    out = np.full((ids.shape[0], 2 * K + 2), np.nan)
    lazy.gather_terms(terms, ids.astype(np.int32), out)
    assert np.isnan(out[:, :K]).all()
    np.testing.assert_array_equal(out[:, K:2 * K], drift[ids])
    np.testing.assert_array_equal(out[:, 2 * K], scale[ids])
    np.testing.assert_array_equal(out[:, 2 * K + 1], precond[ids])


def test_undo_log_restores_the_first_logged_values():
    """add_delta_logged logs each coordinate's value before the add; undo_log
    replays newest first, so a coordinate pushed twice ends at its oldest value."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=(10, 2))
    before = w.copy()
    log_ids = np.empty(12, dtype=np.int32)
    log_values = np.empty((12, 2))
    no_history = np.zeros(0, dtype=np.int32)
    hist_d, hist_s = np.ones(4), np.zeros(4)
    n_log = 0
    for ids in (np.array([1, 4, 7]), np.array([4, 5]), np.array([1, 4, 9])):
        delta = rng.normal(size=(ids.shape[0], 2))
        want = w.copy()
        want[ids] += delta
        lazy.add_delta_logged(w, no_history, hist_d, hist_s, 0, ids, delta, -1, log_ids,
                              log_values, n_log)
        np.testing.assert_array_equal(w, want)
        n_log += ids.shape[0]
    assert log_ids[:n_log].tolist() == [1, 4, 7, 4, 5, 1, 4, 9]
    lazy.undo_log(w, log_ids, log_values, n_log)
    np.testing.assert_array_equal(w, before)


def test_add_rows_is_fancy_add():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(20, 2))
    ids = rng.permutation(20)[:9]
    values = rng.normal(size=(9, 2))
    want = target.copy()
    want[ids] += values
    lazy.add_rows(target, ids, values)
    np.testing.assert_allclose(target, want, rtol=1e-15)


def test_gather_rows_is_fancy_indexing():
    """Into a strided view of a work array too (a loop's pull writes there)."""
    rng = np.random.default_rng(2)
    source = rng.normal(size=(20, 3))
    ids = np.array([7, 0, 19, 7, 4], dtype=np.int64)  # any order, repeats
    work = np.full((5, 6), np.nan)
    lazy.gather_rows(source, ids, work[:, 1:4])
    np.testing.assert_array_equal(work[:, 1:4], source[ids])
    assert np.isnan(work[:, [0, 4, 5]]).all()  # nothing written outside the view
    lazy.gather_rows(source, ids[:0], work[:0, 1:4])  # no ids: nothing to do


def _add_matching_reference(dst_ids, dst, src_ids, src):
    out = dst.copy()
    for q, j in enumerate(src_ids):
        out[dst_ids == j] += src[q]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_add_matching_adds_where_the_sorted_ids_meet(seed):
    """A loop's own update of a chunk (``src`` at ``src_ids``) added to a read of the
    next chunk (``dst`` at ``dst_ids``) on the coordinates both touch."""
    rng = np.random.default_rng(seed)
    dst_ids = np.sort(rng.choice(40, size=15, replace=False)).astype(np.int64)
    src_ids = np.sort(rng.choice(40, size=12, replace=False)).astype(np.int64)
    dst, src = rng.normal(size=(15, 2)), rng.normal(size=(12, 2))
    want = _add_matching_reference(dst_ids, dst, src_ids, src)
    assert not np.array_equal(want, dst)  # some ids meet
    lazy.add_matching(dst_ids, dst, src_ids, src)
    np.testing.assert_array_equal(dst, want)


def test_add_matching_edges():
    dst = np.zeros((3, 1))
    lazy.add_matching(np.array([1, 5, 9]), dst, np.array([0, 2, 4]), np.ones((3, 1)))
    np.testing.assert_array_equal(dst, 0.0)  # no common id
    lazy.add_matching(np.array([1, 5, 9]), dst, np.array([9, 10]), np.full((2, 1), 2.0))
    np.testing.assert_array_equal(dst.ravel(), [0.0, 0.0, 2.0])  # the last one only
    lazy.add_matching(np.array([1, 5, 9]), dst, np.array([1]), np.full((1, 1), 3.0))
    np.testing.assert_array_equal(dst.ravel(), [3.0, 0.0, 2.0])  # the first one only
    lazy.add_matching(np.array([1, 5, 9]), dst, np.zeros(0, dtype=np.int64),
                      np.zeros((0, 1)))
    np.testing.assert_array_equal(dst.ravel(), [3.0, 0.0, 2.0])  # nothing to add


def test_add_entries_is_fancy_add():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 50, size=30)
    ids = rng.permutation(30)[:11]
    values = rng.integers(0, 9, size=11)
    want = target.copy()
    want[ids] += values
    lazy.add_entries(target, ids, values)
    np.testing.assert_array_equal(target, want)


@pytest.mark.parametrize("penalty", sorted(L1_RATIOS))
@pytest.mark.parametrize("skip", [-1, 6])
def test_add_delta(penalty, skip):
    rng = np.random.default_rng([len(penalty), skip + 1, 2])
    w, last, hist_d, hist_s, steps, now = make_block(rng, L1_RATIOS[penalty])
    last[6] = 0
    want = ref_materialise(w, last, steps, now, skip)
    ids = np.array([6, 2, 0, 14, 1], dtype=np.int64)
    delta = rng.normal(size=(ids.shape[0], w.shape[1]))
    w_before, last_before = w.copy(), last.copy()
    lazy.add_delta(w, last, hist_d, hist_s, now, ids, delta, skip)
    np.testing.assert_allclose(w[ids], want[ids] + delta, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(last[ids], now)
    others = np.setdiff1d(np.arange(w.shape[0]), ids)
    np.testing.assert_array_equal(w[others], w_before[others])
    np.testing.assert_array_equal(last[others], last_before[others])
    if skip >= 0:
        np.testing.assert_allclose(w[6], w_before[6] + delta[0], rtol=1e-15)


@pytest.mark.parametrize("penalty", sorted(L1_RATIOS))
@pytest.mark.parametrize("skip", [-1, 6])
def test_catch_up_all(penalty, skip):
    rng = np.random.default_rng([len(penalty), skip + 1, 3])
    w, last, hist_d, hist_s, steps, now = make_block(rng, L1_RATIOS[penalty], n_coords=40)
    last[6] = 0
    want = ref_materialise(w, last, steps, now, skip)
    w_before, last_before = w.copy(), last.copy()
    lazy.catch_up_all(w, last, hist_d, hist_s, now, skip)
    np.testing.assert_allclose(w, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(last, now)
    if skip >= 0:
        np.testing.assert_array_equal(w[6], w_before[6])
    # coordinates with a non-empty catch-up really moved
    moved = (np.arange(40) != skip) & (last_before < now)
    assert np.all(np.any(w[moved] != w_before[moved], axis=1))
    np.testing.assert_array_equal(w[~moved], w_before[~moved])
    if penalty == "l1":
        assert np.count_nonzero(want == 0.0) > 0
        np.testing.assert_array_equal(w == 0.0, want == 0.0)


def test_catch_up_from_an_intermediate_point():
    """Materialising twice (at s1 then at s2) equals materialising once at s2."""
    rng = np.random.default_rng(9)
    hist_d, hist_s, steps = make_history(rng, 0.6)
    w = rng.normal(size=(10, 1))
    last = np.zeros(10, dtype=np.int64)
    w1, last1 = w.copy(), last.copy()
    lazy.catch_up_all(w1, last1, hist_d, hist_s, 7, -1)
    lazy.catch_up_all(w1, last1, hist_d, hist_s, 20, -1)
    want = ref_materialise(w, last, steps, 20, -1)
    np.testing.assert_allclose(w1, want, rtol=1e-10, atol=1e-13)




def test_materialise_writes_only_what_changes():
    """``last`` is written only for coordinates behind; an empty history (SVRG's
    identity maps, ``now == 0``) leaves everything as it is."""
    rng = np.random.default_rng(5)
    w, last, hist_d, hist_s, steps, now = make_block(rng, 1.0)
    want = ref_materialise(w, last, steps, now, -1)
    ids = np.arange(w.shape[0], dtype=np.int64)
    w0 = w.copy()
    lazy.materialise(w, last, hist_d, hist_s, now, ids, -1)
    np.testing.assert_allclose(w, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(last, now)
    np.testing.assert_array_equal(w[1], w0[1])  # already current: untouched
    w2, last2 = w0.copy(), np.zeros(w.shape[0], dtype=np.int64)
    lazy.materialise(w2, last2, hist_d, hist_s, 0, ids, -1)
    np.testing.assert_array_equal(w2, w0)
    np.testing.assert_array_equal(last2, 0)


@pytest.mark.parametrize("prox_d,prox_s", [(1.0, 0.0), (1.3, 0.4), (1.0, 0.7)])
def test_step_replica_is_add_then_prox(prox_d, prox_s):
    """A replica's eager step: ``w[ids] += delta``, then the composed map on every
    row but the intercept (none for the identity)."""
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(500, 3))
    ids = rng.choice(500, size=120, replace=False).astype(np.int64)
    delta = rng.normal(size=(120, 3))
    w = w0.copy()
    lazy.step_replica(w, ids, delta, prox_d, prox_s, 17)
    want = w0.copy()
    want[ids] += delta
    keep = want[17].copy()
    want = np.sign(want) * np.maximum(np.abs(want) - prox_s, 0.0) / prox_d
    want[17] = keep
    np.testing.assert_allclose(w, want, rtol=1e-13, atol=1e-15)
    if prox_s > 0:
        assert (w == 0).sum() > 10
