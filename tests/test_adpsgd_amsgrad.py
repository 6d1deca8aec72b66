"""solver="adpsgd" with optimizer="amsgrad": AMSGrad state per replica."""

import numpy as np
import pytest
from dask_asyncopt.replica import Replica
from dask_asyncopt.rules import AMSGradRule, pack_steps

from dask_asyncopt import AsyncSGDClassifier

from .conftest import cluster_is_clean, logistic_objective, ridge_gap

ALPHA = 1e-4


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_two_replicas_amsgrad_reach_optimum(data, optimum, penalty, client):
    """Default settings plus optimizer="amsgrad": a 1e-3 relative gap."""
    X, y = data
    est = AsyncSGDClassifier(loss="log_loss", penalty=penalty, alpha=ALPHA, solver="adpsgd",
                             optimizer="amsgrad").fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, ALPHA,
                           1.0 if penalty == "l1" else 0.0)
    gap = (f - optimum(penalty)) / optimum(penalty)
    assert gap <= 1e-3, gap
    h = est.history_
    # the history's objective is the exact objective of the consensus returned
    np.testing.assert_allclose(h.objective.iloc[-1], f, rtol=1e-9)
    assert h.exchanges.sum() > 0 and h.consensus_distance.max() > 0
    assert cluster_is_clean(client)


def _steps(rng, n_coords, n_steps):
    return pack_steps([(np.sort(rng.choice(n_coords, 3, replace=False)),
                        rng.normal(size=(3, 1)), np.ones(3), 2) for _ in range(n_steps)])


def test_replica_amsgrad_is_dense_amsgrad_and_averages_caught_up_values():
    """Lazy moments: an exchange averages the values *after* the momentum drift of
    the steps a coordinate missed (a replica sending its stored values would not)."""
    n = 12
    rule = AMSGradRule(lr=0.1)
    a = Replica(1, 2, n, 1, rule=AMSGradRule(lr=0.1), alpha=0.01, l1_ratio=0.5)
    b = Replica(0, 2, n, 1, rule=AMSGradRule(lr=0.1), alpha=0.01, l1_ratio=0.5)
    refs = [np.zeros((n, 1)), np.zeros((n, 1))]
    states = [rule.init(n, 1), rule.init(n, 1)]
    for replica, ref, state, seed in zip((a, b), refs, states, (1, 2), strict=True):
        steps = _steps(np.random.default_rng(seed), n, 20)
        replica.apply_grads(steps[1], steps[0], *steps[2:4], np.full(20, 2), 0)
        rule.update(state, ref, *steps, alpha=0.01, l1_ratio=0.5, skip=-1)
        rule.materialise(state, ref)  # the dense iterate
        assert not np.allclose(replica.w, ref)  # lazily behind on untouched coordinates
    values, known = a.outgoing()
    np.testing.assert_allclose(values, refs[0], rtol=1e-12)
    d, known = b.exchange(values, known)
    a.absorb(d, known)
    mean = (refs[0] + refs[1]) / 2
    np.testing.assert_allclose(a.values(), mean, rtol=1e-12)
    np.testing.assert_allclose(b.values(), mean, rtol=1e-12)
    # moments stay per replica: b's are still its own steps' moments
    np.testing.assert_allclose(b.state["m"], states[1]["m"], rtol=1e-12)
    assert not np.allclose(a.state["m"], b.state["m"])
    assert a.stats()["pushes"] == 1 and a.own() == 40


def test_amsgrad_dense_regressor_and_plain_gradients(data, client):
    """Dense ridge regression (intercept unpenalised) and the non-variance-reduced
    path (hinge loss, decaying step) on replicas."""
    assert ridge_gap(solver="adpsgd", optimizer="amsgrad") <= 1e-3
    Xs, ys = data
    clf = AsyncSGDClassifier(loss="hinge", penalty="l1", alpha=ALPHA, solver="adpsgd",
                             optimizer="amsgrad", max_iter=8, random_state=0).fit(Xs, ys)
    assert clf.score(Xs, ys) > 0.8
    assert (np.diff(clf.history_.eta0) <= 0).all() and clf.history_.eta0.iloc[-1] < 0.03
    assert cluster_is_clean(client)
