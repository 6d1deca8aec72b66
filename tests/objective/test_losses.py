"""Per-sample losses (``objective/losses.py``) against the NumPy references of
``tests/reference.py``."""

import math

import numpy as np
import pytest

from dask_asyncopt.objective import losses

from ..reference import ref_dloss, ref_loss

ALL_LOSSES = {**losses.CLASSIFICATION_LOSSES, **losses.REGRESSION_LOSSES}


def kinks(name, y, eps):
    """Points ``p`` where the loss (or its documented piecewise form) changes branch."""
    if name == "log_loss":
        return [18.0 * y, -18.0 * y]  # switch to the asymptotic forms
    if name in ("hinge", "squared_hinge"):
        return [1.0 * y]
    if name == "modified_huber":
        return [1.0 * y, -1.0 * y]
    if name == "squared_error":
        return []
    return [y - eps, y + eps]


EPSILONS = (0.1, 0.7)


def loss_grid(name):
    """(p, y, eps) triples covering every branch of the loss."""
    p = np.concatenate([np.linspace(-4.0, 4.0, 81), [-30.0, -19.5, -12.0, 12.0, 19.5, 30.0],
                        [-1.0 - 1e-3, -1.0 + 1e-3, 1.0 - 1e-3, 1.0 + 1e-3]])
    if name in losses.CLASSIFICATION_LOSSES:
        ys = (-1.0, 1.0)
        epss = (0.1,)
    else:
        ys = (-2.5, -0.3, 0.0, 1.7)
        epss = EPSILONS
    return [(pi, yi, e) for e in epss for yi in ys for pi in p]


def _values(code, triples, fn):
    return np.array([fn(code, p, y, e) for p, y, e in triples])


def test_loss_codes_are_distinct_and_complete():
    assert sorted(ALL_LOSSES.values()) == list(range(8))
    assert set(losses.CLASSIFICATION_LOSSES).isdisjoint(losses.REGRESSION_LOSSES)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_value_matches_numpy(name):
    code = ALL_LOSSES[name]
    triples = loss_grid(name)
    p, y, e = (np.array(v) for v in zip(*triples, strict=True))
    got = _values(code, triples, losses.loss_value)
    want = ref_loss(name, p, y, e)
    # log_loss uses exp(-z) / -z beyond |z| > 18 (relative error < 1e-7 there).
    rtol = 1e-7 if name == "log_loss" else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300)
    assert np.all(got >= 0.0)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_derivative_matches_numpy(name):
    code = ALL_LOSSES[name]
    triples = [t for t in loss_grid(name)
               if all(abs(t[0] - k) > 1e-9 for k in kinks(name, t[1], t[2]))]
    p, y, e = (np.array(v) for v in zip(*triples, strict=True))
    got = _values(code, triples, losses.loss_derivative)
    want = ref_dloss(name, p, y, e)
    rtol = 1e-7 if name == "log_loss" else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_derivative_is_finite_difference_of_value(name):
    code = ALL_LOSSES[name]
    h = 1e-6
    triples = [t for t in loss_grid(name)
               if all(abs(t[0] - k) > 1e-4 for k in kinks(name, t[1], t[2]))]
    fd = np.array([(losses.loss_value(code, p + h, y, e) - losses.loss_value(code, p - h, y, e))
                   / (2 * h) for p, y, e in triples])
    got = _values(code, triples, losses.loss_derivative)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)
    # the grid really exercises non-zero slopes
    assert np.count_nonzero(np.abs(got) > 1e-3) > len(triples) // 4


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_loss_and_derivative_agree_with_the_separate_functions(name):
    code = ALL_LOSSES[name]
    triples = loss_grid(name)
    got = np.array([losses.loss_and_derivative(code, p, y, e) for p, y, e in triples])
    np.testing.assert_allclose(got[:, 0], _values(code, triples, losses.loss_value),
                               rtol=1e-14, atol=1e-300)
    # the log loss computes the derivative from exp(-z), not exp(z): rounding only
    np.testing.assert_allclose(got[:, 1], _values(code, triples, losses.loss_derivative),
                               rtol=1e-13, atol=1e-300)


def test_loss_known_values():
    """A few hand-computed values, independent of any formula transcription."""
    v, d = losses.loss_value, losses.loss_derivative
    assert v(losses.LOG_LOSS, 0.0, 1.0, 0.0) == pytest.approx(math.log(2.0))
    assert d(losses.LOG_LOSS, 0.0, -1.0, 0.0) == pytest.approx(0.5)
    assert v(losses.HINGE, 0.25, -1.0, 0.0) == pytest.approx(1.25)
    assert v(losses.SQUARED_HINGE, 0.5, 1.0, 0.0) == pytest.approx(0.25)
    assert v(losses.MODIFIED_HUBER, -3.0, 1.0, 0.0) == pytest.approx(12.0)
    assert v(losses.SQUARED_ERROR, 3.0, 1.0, 0.0) == pytest.approx(2.0)
    assert v(losses.HUBER, 3.0, 1.0, 0.5) == pytest.approx(0.5 * 2.0 - 0.125)
    assert d(losses.HUBER, -3.0, 1.0, 0.5) == pytest.approx(-0.5)
    assert v(losses.EPSILON_INSENSITIVE, 3.0, 1.0, 0.5) == pytest.approx(1.5)
    assert v(losses.SQUARED_EPSILON_INSENSITIVE, 3.0, 1.0, 0.5) == pytest.approx(2.25)
    assert d(losses.SQUARED_EPSILON_INSENSITIVE, -1.0, 1.0, 0.5) == pytest.approx(-3.0)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_smoothness_bounds_the_curvature_of_exactly_the_smooth_losses(name):
    """``SMOOTHNESS`` (what proximal SVRG's step is made from) lists the losses with
    a Lipschitz derivative, and its constant bounds the derivative's slope (tight:
    reached within 1 %); hinge and epsilon-insensitive have jumps and are absent."""
    code = ALL_LOSSES[name]
    if name in ("hinge", "epsilon_insensitive"):
        assert code not in losses.SMOOTHNESS
        return
    bound = losses.SMOOTHNESS[code]
    y = 1.0 if name in losses.CLASSIFICATION_LOSSES else 0.3
    p = np.linspace(-6.0, 6.0, 4001)
    slopes = np.abs(np.diff(ref_dloss(name, p, y, 0.1)) / np.diff(p))
    assert slopes.max() <= bound * (1 + 1e-9)
    assert slopes.max() >= 0.99 * bound



@pytest.mark.parametrize("name", sorted(n for n, c in ALL_LOSSES.items()
                                        if c in losses.SMOOTHNESS))
def test_curvature_from_the_weighted_derivative(name):
    """``curvature_sums`` recovers ``weight * loss''`` from the weighted first
    derivative alone: a central difference of ``loss_derivative``, per output."""
    code = ALL_LOSSES[name]
    rng = np.random.default_rng(1)
    eps = 0.3
    classify = name in losses.CLASSIFICATION_LOSSES
    y = np.where(rng.random(2000) < 0.5, 1.0, -1.0) if classify else rng.normal(size=2000)
    p = rng.normal(scale=2.0, size=2000)
    away = [all(abs(a - k) > 1e-3 for k in kinks(name, b, eps)) for a, b in zip(p, y, strict=True)]
    p, y = p[away][:800].reshape(400, 2), y[away][:800].reshape(400, 2)
    d = np.vectorize(lambda a, b: losses.loss_derivative(code, a, b, eps))
    second = (d(p + 1e-6, y) - d(p - 1e-6, y)) / 2e-6
    W = rng.random((400, 2)) * 2.0
    got = losses.curvature_sums(code, W * d(p, y), W, eps)
    np.testing.assert_allclose(got, (W * second).sum(axis=0), rtol=1e-5, atol=1e-6)
    unweighted = losses.curvature_sums(code, d(p, y), np.empty((0, 0)), eps)
    np.testing.assert_allclose(unweighted, second.sum(axis=0), rtol=1e-5, atol=1e-6)
