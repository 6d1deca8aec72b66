"""The elastic-net penalty (``objective/penalties.py``): its value, its proximal map and
the closed-form composition of many maps, against one-step-at-a-time references."""

import math

import numpy as np
import pytest

from dask_asyncopt.objective import penalties
from dask_asyncopt.objective.penalties import ElasticNet

from ..reference import (
    L1_RATIOS,
    make_history,
    ref_compose,
    ref_prox,
    ref_prox_params,
    ref_prox_steps,
)


def test_prox_params():
    a, c = penalties.prox_params(0.2, 0.5, 0.3)
    assert a == pytest.approx(0.2 * 0.5 * 0.3)
    assert c == pytest.approx(1.0 + 0.2 * 0.5 * 0.7)


@pytest.mark.parametrize("l1_ratio", [0.0, 0.4, 1.0])
def test_prox_and_its_scaled_form(l1_ratio):
    """``prox(v, a, c)``: soft-threshold by ``a`` then divide by ``c``, the sign kept;
    ``prox_scaled`` is the map of the step ``eta * scale``."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(scale=2.0, size=300), [0.0, -0.0, 1e-300, -1e-300]])
    eta, alpha = 0.3, 0.8
    n_zero = 0
    for v in values:
        a, c = ref_prox_params(eta, alpha, l1_ratio)
        got = penalties.prox(v, a, c)
        want = ref_prox(v, eta, alpha, l1_ratio)
        assert got == pytest.approx(want, rel=1e-15, abs=0.0)
        n_zero += got == 0.0
        for scale in (0.0, 0.5, 3.0):
            assert penalties.prox_scaled(v, eta * alpha, l1_ratio, scale) == pytest.approx(
                ref_prox(v, eta, alpha, l1_ratio, scale), rel=1e-14, abs=0.0)
    if l1_ratio > 0:
        assert n_zero > 5  # thresholded to exactly zero
    else:
        assert n_zero == 2  # pure L2 never reaches zero
    assert penalties.prox(-3.0, 1.0, 1.0) == -2.0  # pure L1: no division


def test_compose_appends_maps():
    steps = [ref_prox_params(eta, 0.5, 0.3) for eta in (0.1, 0.05, 0.2)]
    d, s = 1.0, 0.0
    for eta in (0.1, 0.05, 0.2):
        d, s = penalties.compose(d, s, eta, 0.5, 0.3)
    assert (d, s) == pytest.approx(ref_compose(steps), rel=1e-14)
    # the composition applied once equals the maps one after the other
    for v in (2.0, -0.7, 0.01):
        assert penalties.catch_up(v, 1.0, 0.0, d, s) == pytest.approx(
            ref_prox_steps(v, steps), rel=1e-12, abs=1e-15)


def test_sparse_penalty_scale():
    counts = np.array([4, 1, 0, 2])
    np.testing.assert_array_equal(penalties.sparse_penalty_scale(8, counts),
                                  [2.0, 8.0, 8.0, 4.0])  # unseen coordinates: as if once
    out = np.full(4, np.nan)
    got = penalties.sparse_penalty_scale(8, counts, unpenalised=1, out=out)
    assert got is out
    np.testing.assert_array_equal(out, [2.0, 0.0, 8.0, 4.0])
    # averaged over the rows, every coordinate it touches gets the full penalty once
    rows = [[0, 3], [0, 1], [0], [0, 3]] * 2
    scale = penalties.sparse_penalty_scale(8, np.bincount(np.concatenate(rows)))
    per_coord = np.zeros(4)
    for r in rows:
        per_coord[r] += scale[r] / len(rows)
    np.testing.assert_allclose(per_coord[[0, 1, 3]], 1.0)


# --------------------------------------------------------------------------
# Closed-form composition (lazy updates)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("penalty", sorted(L1_RATIOS))
def test_catch_up_equals_step_by_step(penalty):
    rng = np.random.default_rng(len(penalty))
    hist_d, hist_s, steps = make_history(rng, L1_RATIOS[penalty], n_steps=30)
    values = np.concatenate([rng.normal(scale=1.5, size=200), [0.0, -0.0, 1e-12, -3.0, 5.0]])
    n_zero = 0
    for i, v in enumerate(values):
        lo = int(rng.integers(0, 30))
        hi = int(rng.integers(lo, 31))
        if i < 5:
            lo, hi = 0, 30
        got = penalties.catch_up(v, hist_d[lo], hist_s[lo], hist_d[hi], hist_s[hi])
        want = ref_prox_steps(v, steps[lo:hi])
        assert got == pytest.approx(want, rel=1e-10, abs=1e-13), (v, lo, hi)
        if want == 0.0:
            n_zero += 1
            assert got == 0.0
        else:
            assert math.copysign(1.0, got) == math.copysign(1.0, v)
    if L1_RATIOS[penalty] > 0:
        assert n_zero > 10  # many values are thresholded to exactly zero
    else:
        assert n_zero == 2  # pure L2 never reaches zero (only the zero inputs)


def test_catch_up_hand_values():
    # two steps: a = 0.5, c = 2 each: m -> (m - .5)/2 -> ((m - .5)/2 - .5)/2
    d = [1.0, 2.0, 4.0]
    s = [0.0, 0.5, 0.5 + 0.5 * 2.0]
    assert penalties.catch_up(3.0, d[0], s[0], d[2], s[2]) == pytest.approx(0.375)
    assert penalties.catch_up(-3.0, d[0], s[0], d[2], s[2]) == pytest.approx(-0.375)
    assert penalties.catch_up(1.4, d[0], s[0], d[2], s[2]) == 0.0
    assert penalties.catch_up(1.25, d[1], s[1], d[2], s[2]) == pytest.approx(0.375)


# --------------------------------------------------------------------------
# ElasticNet
# --------------------------------------------------------------------------
@pytest.mark.parametrize("l1_ratio", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("skip", [-1, 3])
def test_elastic_net_value(l1_ratio, skip):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(9, 2))
    keep = np.arange(9) != skip
    want = 0.7 * (l1_ratio * np.abs(w[keep]).sum()
                  + (1 - l1_ratio) * 0.5 * np.square(w[keep]).sum())
    assert ElasticNet(0.7, l1_ratio).value(w, skip) == pytest.approx(want, rel=1e-13)
    assert ElasticNet(0.0, l1_ratio).value(w, skip) == 0.0
    # the intercept is left out whatever its size; the array is not modified
    w2 = w.copy()
    if skip >= 0:
        w2[skip] = 1e6
    assert ElasticNet(0.7, l1_ratio).value(w2, skip) == pytest.approx(want, rel=1e-13)
    assert skip < 0 or w2[skip, 0] == 1e6


def test_elastic_net_named_and_prox_1d():
    assert ElasticNet.named("l2", 0.1, 0.9) == ElasticNet(0.1, 0.0)
    assert ElasticNet.named("l1", 0.1, 0.2) == ElasticNet(0.1, 1.0)
    assert ElasticNet.named("elasticnet", 0.1, 0.3) == ElasticNet(0.1, 0.3)
    assert ElasticNet.named(None, 0.1, 0.3) == ElasticNet(0.0, 0.0)
    assert set(penalties.PENALTIES) == {"l2", "l1", "elasticnet", None}
    pen = ElasticNet(0.5, 0.4)
    for v in (1.3, -0.02, 0.0, -4.0):
        assert pen.prox_1d(v, 0.2) == pytest.approx(ref_prox(v, 0.2, 0.5, 0.4), rel=1e-15)
    with pytest.raises(AttributeError):  # frozen: the solvers share one instance
        pen.alpha = 1.0


def _logistic(X, s, w):
    """Mean log loss (labels ``s`` in +-1), its gradient and the rows' derivatives."""
    z = s * (X @ w)
    d = -s / (1.0 + np.exp(z))
    return np.logaddexp(0, -z).mean(), X.T @ d / X.shape[0]


def _optimum(X, s, pen, iters=6000):
    """The exact optimum by proximal gradient (step 1 / L, L = |X|^2 / (4 n))."""
    step = 4.0 * X.shape[0] / np.linalg.norm(X, 2) ** 2
    w = np.zeros((X.shape[1], 1))
    for _ in range(iters):
        _, g = _logistic(X, s, w)
        w = np.array([[pen.prox_1d(v, step)] for v in (w - step * g).ravel()])
    return w


def _bound(pen, X, s, w, blocks=2):
    loss, g = _logistic(X, s, w)
    terms = [pen.dual_terms(w[b::blocks], g[b::blocks]) for b in range(blocks)]
    return pen.gap_bound(terms, loss, pen.value(w)), loss + pen.value(w)


@pytest.mark.parametrize("l1_ratio", [0.0, 0.5, 1.0])
def test_gap_bound_bounds_the_distance_to_the_optimum_and_closes_there(l1_ratio):
    """The duality-gap bound from a snapshot's sums (split over two blocks) is at
    least ``F(w) - F*`` everywhere and vanishes at the optimum."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 12)) / math.sqrt(12)
    s = np.where(X @ rng.normal(size=(12, 1)) * 3 + rng.logistic(size=(150, 1)) > 0, 1.0, -1.0)
    pen = ElasticNet(0.02, l1_ratio)
    w_star = _optimum(X, s, pen)
    bound, f_star = _bound(pen, X, s, w_star)
    assert bound <= 1e-7 * f_star
    for scale in (1e-3, 1e-2, 0.1, 1.0):
        w = w_star + scale * rng.normal(size=w_star.shape)
        bound, f = _bound(pen, X, s, w)
        assert f - f_star <= bound < math.inf
    assert ElasticNet(0.0, 0.0).gap_bound([np.zeros((4, 1))], 0.5, 0.0) == math.inf


def test_dual_terms_leave_out_the_intercept_row():
    pen = ElasticNet(0.1, 0.5)
    w = np.array([[1.0], [100.0], [-2.0]])
    g = np.array([[0.3], [50.0], [-0.05]])
    np.testing.assert_allclose(pen.dual_terms(w, g, skip=1),
                               pen.dual_terms(w[[0, 2]], g[[0, 2]]))
    terms = pen.dual_terms(w[[0, 2]], g[[0, 2]])[:, 0]
    assert terms.tolist() == pytest.approx([0.3 + 0.1, 0.09 + 0.0025, 0.25 ** 2, 0.3])
