"""Update rules (``objective/rules.py``) against the dense NumPy AMSGrad of
``tests/reference.py``.

The reference is the textbook dense update: every coordinate every step (a zero
gradient and no proximal map where a step does not touch it), so it shares
nothing with the lazy closed-form catch-up under test.
"""

import numpy as np
import pytest

from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.objective.rules import AMSGradRule, AMSGradState, pack_steps

from ..reference import L1_RATIOS, NumpyAMSGrad, dense_of, pack, random_steps


@pytest.mark.parametrize("penalty", list(L1_RATIOS))
@pytest.mark.parametrize("density", [1.0, 0.05])
def test_amsgrad_rule_equals_dense_numpy(penalty, density):
    """Lazy, sparse AMSGrad == dense AMSGrad over 150 steps (dense and sparse steps),
    also when the steps arrive packed several at a time and with reads in between."""
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
        if rng.random() < 0.3:  # a read of some coordinates mid-way
            ids = np.sort(rng.choice(n, 5, replace=False))
            rule.materialise(state, w, ids)
            np.testing.assert_allclose(w[ids], ref.x[ids], rtol=1e-10, atol=1e-12)
    rule.materialise(state, w)
    assert state.t[0] == 150
    np.testing.assert_allclose(w, ref.x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state.m, ref.m, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(state.vhat, ref.vhat, rtol=1e-10, atol=1e-14)
    if penalty != "l2":
        assert ref.zeroed > 0  # the L1 prox really acted


def test_amsgrad_set_lr_catches_up_with_the_old_step():
    rng = np.random.default_rng(1)
    n, K = 30, 1
    rule = AMSGradRule(lr=0.1)
    state, w = rule.init(n, K), np.zeros((n, K))
    ref = NumpyAMSGrad(n, K, 0.1, 0.9, 0.999, 1e-8, 0.01, 1.0)
    for lr in [0.1, 0.02]:
        rule.set_lr(state, w, lr)
        ref.lr = lr
        for step in random_steps(rng, n, K, 60, 0.1):
            rule.update(state, w, *pack_steps([step]), penalty=ElasticNet(0.01, 1.0),
                        skip=-1)
            ref.step(*dense_of(step, n, K))
    rule.materialise(state, w)
    np.testing.assert_allclose(w, ref.x, rtol=1e-10, atol=1e-12)


def test_set_lr_changes_the_state_not_the_rule():
    """The step lives in the state (one rule serves every block's state)."""
    rule = AMSGradRule(lr=0.1, beta1=0.8, beta2=0.95, eps=1e-6)
    a, b = rule.init(3, 2), rule.init(3, 2)
    rule.set_lr(a, np.zeros((3, 2)), 0.02)
    assert a.lr[0] == 0.02 and b.lr[0] == 0.1 and rule.lr == 0.1
    assert (rule.beta1, rule.beta2, rule.eps) == (0.8, 0.95, 1e-6)


def test_state_layout_and_copy():
    rule = AMSGradRule(lr=0.03)
    state = rule.init(5, 3)
    assert isinstance(state, AMSGradState)
    assert state._fields == ("m", "v", "vhat", "last", "t", "lr", "coord_lr")
    assert state.m.shape == state.v.shape == state.vhat.shape == (5, 3)
    assert state.last.shape == (5,) and state.last.dtype == np.int64
    assert list(state.t) == [0] and list(state.lr) == [0.03]
    assert list(state.coord_lr) == [1.0] * 5  # every coordinate takes the whole step
    copy = state.copy()
    copy.m[0, 0] = 1.0
    copy.t[0] = 7
    copy.coord_lr[2] = 0.5
    # an independent copy
    assert state.m[0, 0] == 0.0 and state.t[0] == 0 and state.coord_lr[2] == 1.0
    # set_scales: coordinate j steps by lr / column_scale[j], in the state
    rule.set_scales(state, np.zeros((5, 3)), np.array([1.0, 2.0, 4.0, 1.0, 0.5]))
    np.testing.assert_array_equal(state.coord_lr, [1.0, 0.5, 0.25, 1.0, 2.0])


def test_pack_steps():
    rng = np.random.default_rng(4)
    steps = random_steps(rng, 10, 2, 4, 0.4)
    for got, want in zip(pack_steps(steps), pack(steps), strict=True):
        np.testing.assert_array_equal(got, want)
