"""Update rules (``objective/rules.py``) against the masked NumPy AMSGrad of
``tests/reference.py`` and against numbers worked out by hand.

The reference updates every coordinate with array operations and masks (a
coordinate a step does not touch keeps its values), so it shares nothing with
the packed per-entry kernel under test.
"""

import math

import numpy as np
import pytest

from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.rules import AMSGradRule, AMSGradState, pack_steps

from ..reference import L1_RATIOS, NumpyAMSGrad, dense_of, pack, random_steps


@pytest.mark.parametrize("penalty", list(L1_RATIOS))
@pytest.mark.parametrize("density", [1.0, 0.05])
def test_amsgrad_rule_equals_masked_numpy(penalty, density):
    """Packed per-coordinate AMSGrad == the masked NumPy one over 150 steps (dense and
    sparse), also when the steps arrive packed several at a time."""
    rng = np.random.default_rng(0)
    n, K, alpha, l1 = 40, 2, 0.5, L1_RATIOS[penalty]
    rule = AMSGradRule(lr=0.05, beta1=0.9, beta2=0.99, eps=1e-8)
    state, w = rule.init(n, K), np.zeros((n, K))
    ref = NumpyAMSGrad(n, K, 0.05, 0.9, 0.99, 1e-8, alpha, l1, skip=3)
    steps = random_steps(rng, n, K, 150, density)
    i = 0
    while i < len(steps):
        batch = steps[i:i + int(rng.integers(1, 6))]
        rule.update(state, w, *pack_steps(batch), penalty=ElasticNet(alpha, l1), skip=3)
        for step in batch:
            ref.step(*dense_of(step, n, K))
        i += len(batch)
    assert state.t[0] == 150
    np.testing.assert_allclose(w, ref.x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state.m, ref.m, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(state.vhat, ref.vhat, rtol=1e-10, atol=1e-14)
    if penalty != "l2":
        assert ref.zeroed > 0  # the L1 prox really acted


def test_two_steps_by_hand():
    """One coordinate, b1 = b2 = 1/2, eps = 0, L1 alpha = 0.3, lr = 0.1.

    Step 1, one row, gradient 2 (``r = 1``): ``m = 1, v = vhat = 2``,
    ``x = soft(-0.1 / sqrt 2, 0.03 / sqrt 2) = -0.07 / sqrt 2``.
    Step 2, two rows, gradient sum 4, reweighting sum 4 (``g / pen = 1``):
    ``m = 1, v = 1.5, vhat = 2``: ``x = soft(-0.17 / sqrt 2, 0.03 / sqrt 2)
    = -0.14 / sqrt 2``.  Coordinate 1 is in neither step: untouched.
    """
    rule = AMSGradRule(lr=0.1, beta1=0.5, beta2=0.5, eps=0.0)
    state, w = rule.init(2, 1), np.zeros((2, 1))
    w[1] = 0.25
    l1 = ElasticNet(0.3, 1.0)
    rule.update(state, w, *pack_steps([(np.array([0]), np.array([[2.0]]), np.ones(1), 1)]),
                penalty=l1, skip=-1)
    assert w[0, 0] == pytest.approx(-0.07 / math.sqrt(2), rel=1e-14)
    rule.update(state, w, *pack_steps([(np.array([0]), np.array([[4.0]]), np.array([4.0]),
                                        2)]), penalty=l1, skip=-1)
    assert w[0, 0] == pytest.approx(-0.14 / math.sqrt(2), rel=1e-14)
    assert (state.m[0, 0], state.v[0, 0], state.vhat[0, 0]) == (1.0, 1.5, 2.0)
    assert w[1, 0] == 0.25 and state.m[1, 0] == 0.0 and state.t[0] == 2


def test_l2_and_the_unpenalised_coordinate_by_hand():
    """L2 divides by ``1 + s alpha / sqrt(vhat)``; ``skip`` takes the plain step."""
    rule = AMSGradRule(lr=0.1, beta1=0.0, beta2=0.0, eps=0.0)
    state, w = rule.init(2, 1), np.zeros((2, 1))
    steps = pack_steps([(np.array([0, 1]), np.array([[3.0], [3.0]]), np.ones(2), 1)])
    rule.update(state, w, *steps, penalty=ElasticNet(2.0, 0.0), skip=1)
    # m = g = 3, vhat = 9: x = -0.1, then divided by 1 + 0.1 * 2 / 3
    assert w[0, 0] == pytest.approx(-0.1 / (1 + 0.2 / 3), rel=1e-14)
    assert w[1, 0] == pytest.approx(-0.1, rel=1e-14)


def test_zero_coordinates_stay_zero_whatever_the_reweighting():
    """A coordinate at 0 whose gradient estimates ``g / pen`` all lie within the L1
    threshold ``alpha`` is never moved, whatever its steps' reweighting (the
    optimum's zeros are a fixed point); one whose estimates exceed it moves."""
    rng = np.random.default_rng(3)
    alpha = 0.2
    rule = AMSGradRule(lr=0.5)
    state, w = rule.init(2, 1), np.zeros((2, 1))
    for _ in range(300):
        rows = int(rng.integers(1, 50))
        pen = rng.uniform(0.01, 500.0, size=2)  # pen / rows from 2e-4 to 500
        gh = np.array([rng.uniform(-alpha, alpha), rng.choice([-1.0, 1.0]) * 0.5])
        rule.update(state, w, *pack_steps([(np.array([0, 1]), (gh * pen)[:, None], pen,
                                            rows)]), penalty=ElasticNet(alpha, 1.0),
                    skip=-1)
        assert w[0, 0] == 0.0
    assert np.abs(state.m[0, 0]) > 0 and w[1, 0] != 0.0


@pytest.mark.parametrize("c", [1.5, -0.8, 0.15])
def test_exact_gradients_converge_to_the_prox_optimum(c):
    """``f(x) = (x - c)^2 / 2 + alpha |x|`` with its exact gradient, steps of random
    reweighting: the iterate ends at ``soft(c, alpha)``, exactly 0 when
    ``|c| <= alpha``."""
    rng = np.random.default_rng(5)
    alpha = 0.2
    rule = AMSGradRule(lr=0.05)
    state, w = rule.init(1, 1), np.zeros((1, 1))
    for _ in range(3000):
        rows = int(rng.integers(1, 20))
        pen = rng.uniform(0.5, 3.0) * rows
        grad = w[0, 0] - c
        rule.update(state, w, *pack_steps([(np.array([0]), np.array([[grad * pen]]),
                                            np.array([pen]), rows)]),
                    penalty=ElasticNet(alpha, 1.0), skip=-1)
    want = math.copysign(max(abs(c) - alpha, 0.0), c)
    if want == 0.0:
        assert w[0, 0] == 0.0
    else:
        assert w[0, 0] == pytest.approx(want, abs=1e-6)


def test_set_lr_and_scales_change_the_step():
    rule = AMSGradRule(lr=0.1, beta1=0.0, beta2=0.0, eps=0.0)
    state, w = rule.init(2, 1), np.zeros((2, 1))
    rule.set_lr(state, 0.02)
    rule.set_scales(state, np.array([1.0, 4.0]))
    steps = pack_steps([(np.array([0, 1]), np.array([[1.0], [1.0]]), np.ones(2), 1)])
    rule.update(state, w, *steps, penalty=ElasticNet(), skip=-1)
    np.testing.assert_allclose(w.ravel(), [-0.02, -0.005], rtol=1e-14)


def test_set_lr_changes_the_state_not_the_rule():
    """The step lives in the state (one rule serves every block's state)."""
    rule = AMSGradRule(lr=0.1, beta1=0.8, beta2=0.95, eps=1e-6)
    a, b = rule.init(3, 2), rule.init(3, 2)
    rule.set_lr(a, 0.02)
    assert a.lr[0] == 0.02 and b.lr[0] == 0.1 and rule.lr == 0.1
    assert (rule.beta1, rule.beta2, rule.eps) == (0.8, 0.95, 1e-6)


def test_state_layout_copy_and_given_moments():
    rule = AMSGradRule(lr=0.03)
    state = rule.init(5, 3)
    assert isinstance(state, AMSGradState)
    assert state._fields == ("m", "v", "vhat", "t", "lr", "coord_lr")
    assert state.m.shape == state.v.shape == state.vhat.shape == (5, 3)
    assert list(state.t) == [0] and list(state.lr) == [0.03]
    assert list(state.coord_lr) == [1.0] * 5  # every coordinate takes the whole step
    copy = state.copy()
    copy.m[0, 0] = 1.0
    copy.t[0] = 7
    copy.coord_lr[2] = 0.5
    # an independent copy
    assert state.m[0, 0] == 0.0 and state.t[0] == 0 and state.coord_lr[2] == 1.0
    # set_scales: coordinate j steps by lr / column_scale[j], in the state
    rule.set_scales(state, np.array([1.0, 2.0, 4.0, 1.0, 0.5]))
    np.testing.assert_array_equal(state.coord_lr, [1.0, 0.5, 0.25, 1.0, 2.0])
    given = tuple(np.full((5, 3), v) for v in (0.1, 0.2, 0.3))
    warm = rule.init(5, 3, moments=given)
    assert [float(a[0, 0]) for a in warm[:3]] == [0.1, 0.2, 0.3]
    warm.m[0, 0] = 9.0
    assert given[0][0, 0] == 0.1  # copied


def test_pack_steps():
    rng = np.random.default_rng(4)
    steps = random_steps(rng, 10, 2, 4, 0.4)
    for got, want in zip(pack_steps(steps), pack(steps), strict=True):
        np.testing.assert_array_equal(got, want)
