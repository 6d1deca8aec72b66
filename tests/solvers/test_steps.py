"""Step policies (``solvers/steps.py``): each policy's decision after an epoch, and the
stopping rule they share."""

import math

import pytest

from dask_asyncopt.solvers import steps
from dask_asyncopt.solvers.run import EpochResult
from dask_asyncopt.solvers.steps import (
    STOP,
    EarlyStopping,
    EpochSteps,
    GapStopping,
    HalvingSteps,
    RuleSteps,
    ScheduleSteps,
    halve_if_rose,
)


def result(objective, step=None, before=None, gap=None, estimate=None):
    return EpochResult({}, objective, step=step, before=before, gap_bound=gap,
                       gap_estimate=estimate)


def test_early_stopping_is_scikit_learns_rule():
    stop = EarlyStopping(0.1, 2)
    assert [stop.stalled(w) for w in (1.0, 0.95, 0.92, 0.5, 0.45, 0.44)] == [
        False, False, True, False, False, True]
    assert stop.best == 0.44 and stop.no_improve == 2
    never = EarlyStopping(None, 1)
    assert not any(never.stalled(1.0) for _ in range(10))
    resumed = EarlyStopping(0.1, 3, best=1.0, no_improve=2)
    assert resumed.stalled(0.95)  # the third epoch without an improvement of 0.1


def test_step_halved_only_when_the_objective_really_rose():
    assert halve_if_rose(4.0, 0.5, 0.49) == 4.0
    assert halve_if_rose(4.0, 0.5, 0.5 * (1 + 1e-15)) == 4.0  # rounding of a sum
    assert halve_if_rose(4.0, 0.5, 0.5001) == 2.0


def test_schedule_steps_divide_eta0_on_a_stall_only_when_adaptive():
    plain = ScheduleSteps(0.5, False, EarlyStopping(0.1, 1))
    assert plain.after(1, result(1.0), 1.0) == 0.5
    assert plain.after(2, result(0.95), 0.95) is STOP
    adaptive = ScheduleSteps(0.5, True, EarlyStopping(0.1, 1))
    assert adaptive.after(1, result(1.0), 1.0) == 0.5
    assert adaptive.after(2, result(0.95), 0.95) == pytest.approx(0.1)  # a stall: / 5
    assert adaptive.stopping.no_improve == 0  # and a fresh count
    assert adaptive.after(3, result(0.5), 0.5) == pytest.approx(0.1)
    tiny = ScheduleSteps(steps.MIN_ETA0, True, EarlyStopping(0.1, 1))
    tiny.after(1, result(1.0), 1.0)
    assert tiny.after(2, result(1.0), 1.0) is STOP  # too small to divide further


def test_halving_steps_take_the_first_epochs_step_and_halve_on_a_rise():
    policy = HalvingSteps(EarlyStopping(1e-3, 2))
    assert policy.after(1, result(0.8, step=0.4, before=1.0), 0.8) == 0.4
    assert policy.after(2, result(0.9), 0.9) == 0.2  # rose from 0.8
    assert policy.after(3, result(0.7), 0.7) == 0.2
    assert policy.after(4, result(0.6999), 0.6999) == 0.2
    assert policy.after(5, result(0.6998), 0.6998) is STOP  # 2 epochs below tol
    known = HalvingSteps(EarlyStopping(None, 1), step=1.0, previous=0.5)
    assert known.after(1, result(0.6, step=99.0, before=0.1), 0.6) == 0.5  # rose from 0.5


def test_rule_steps_with_variance_reduction():
    policy = RuleSteps(0.03, True, EarlyStopping(1e-3, 2), previous=1.0)
    assert policy.after(1, result(0.8), 0.8) == 0.03  # fell: constant
    assert not policy.rose and policy.previous == 0.8
    assert policy.after(2, result(0.9), 0.9) == 0.015  # rose: rolled back, halved
    assert policy.rose and policy.previous == 0.8  # the kept iterate's objective
    # a stall (2 epochs without improvement: 2 and 3) stops: the constant step
    # converges, a smaller one would only slow it
    assert policy.after(3, result(0.85), 0.85) is STOP


def test_rule_steps_stop_when_every_epoch_is_rolled_back():
    """An objective that rises epoch after epoch (each rolled back, the step halved)
    stops the fit after MAX_ROLLBACKS in a row; a fall in between starts the count
    again."""
    policy = RuleSteps(1.0, True, EarlyStopping(None, 1), previous=1.0)
    got = [policy.after(e, result(2.0), 2.0) for e in range(1, steps.MAX_ROLLBACKS + 1)]
    assert got[:-1] == [0.5 ** e for e in range(1, steps.MAX_ROLLBACKS)]
    assert got[-1] is STOP and policy.hopeless
    again = RuleSteps(1.0, True, EarlyStopping(None, 1), previous=1.0)
    for e in range(1, steps.MAX_ROLLBACKS):
        again.after(e, result(2.0), 2.0)
    assert again.after(steps.MAX_ROLLBACKS, result(0.5), 0.5) == 0.5 ** (
        steps.MAX_ROLLBACKS - 1)  # fell: kept, the step as it was
    assert not again.hopeless and again.in_a_row == 0


def test_rule_steps_without_variance_reduction_decay():
    policy = RuleSteps(0.03, False, EarlyStopping(None, 1), previous=1.0)
    got = [policy.after(e, result(2.0 + e), 2.0 + e) for e in (1, 2, 3)]  # rises ignored
    assert got == pytest.approx([0.03 / math.sqrt(2), 0.03 / math.sqrt(3), 0.015])
    stalled = RuleSteps(0.03, False, EarlyStopping(1.0, 1), previous=1.0)
    stalled.after(1, result(1.0), 1.0)
    assert stalled.after(2, result(1.0), 1.0) == pytest.approx(0.03 / math.sqrt(2) / 5)
    assert stalled.after(3, result(0.0), 0.0) == pytest.approx(0.006 / 2)  # lr0 / 5 / sqrt(4)


@pytest.mark.parametrize("decay", [False, True])
def test_epoch_steps(decay):
    policy = EpochSteps(0.1, decay, EarlyStopping(None, 1), first_epoch=4)
    assert policy.step == (0.05 if decay else 0.1)  # a resumed fit's step at epoch 4
    assert policy.after(4, result(1.0), 1.0) == (0.1 / math.sqrt(5) if decay else 0.1)
    watched = EpochSteps(0.1, decay, EarlyStopping(0.01, 1))
    watched.after(1, result(1.0), 0.5)
    assert watched.after(2, result(0.1), 0.5) is STOP  # the watched value stalled


def test_gap_stopping_stops_on_the_certificate_not_on_a_slowdown():
    """``tol`` is the relative gap a snapshot certifies; an objective that barely
    moves (scikit-learn's rule would stop after 2 such epochs) does not stop it
    until it stalls below ``STALL_SHARE * tol``."""
    stop = GapStopping(1e-3, 2)
    slow = [1.0, 0.9995, 0.9991, 0.9988]
    assert not any(stop.stalled(w) or stop.reached(result(w, gap=2e-3)) for w in slow)
    assert stop.reached(result(0.9987, gap=1e-3))
    assert not stop.reached(result(0.9987))  # no certificate this epoch (the last one)
    assert not stop.reached(result(0.9987, gap=0.5, estimate=0.9e-3))  # needs tol / SAFETY
    assert stop.reached(result(0.9987, gap=0.5, estimate=0.4e-3))
    assert not GapStopping(None, 1).reached(result(1.0, gap=0.0))
    flat = GapStopping(1e-3, 2)
    assert [flat.stalled(w) for w in (1.0, 1.0 - 1e-6, 1.0 - 2e-6)] == [False, False, True]


def test_policies_stop_at_a_certified_epoch():
    halving = HalvingSteps(GapStopping(1e-3, 5))
    assert halving.after(1, result(0.8, step=0.4, before=1.0, gap=0.1), 0.8) == 0.4
    assert halving.after(2, result(0.7, gap=1e-4), 0.7) is STOP
    rule = RuleSteps(0.03, True, GapStopping(1e-3, 5), previous=1.0)
    assert rule.after(1, result(0.8, gap=5e-4), 0.8) is STOP
    assert rule.previous == 0.8


def test_extrapolated_gap_is_exact_under_linear_convergence():
    """Objectives ``F* + c r^k`` leave ``c r^k`` after epoch ``k``: the estimate is
    exact; a convergence that slows down is judged by its slowest rate; rises,
    stalls and short histories give no estimate."""
    f_star, c = 0.5, 0.1
    for r in (0.3, 0.9):
        f = [f_star + c * r**k for k in range(6)]
        assert steps.extrapolated_gap(f) == pytest.approx(c * r**5 / f_star, rel=1e-9)
    slowing = [1.0, 0.5, 0.3, 0.2, 0.15]  # decreases 0.5, 0.2, 0.1, 0.05: ratios 0.4, 0.5, 0.5
    left = 0.05 * 0.5 / 0.5
    assert steps.extrapolated_gap(slowing) == pytest.approx(left / (0.15 - left))
    assert steps.extrapolated_gap([1.0, 0.9, 0.8]) is None
    assert steps.extrapolated_gap([1.0, 0.9, 0.85, 0.86, 0.8]) is None
    assert steps.extrapolated_gap([1.0, 0.9, 0.85, 0.84, 0.83]) is None  # not shrinking


def test_extrapolated_gap_over_spans_reads_the_rate_through_noisy_epochs():
    """Decreases taken over ``span`` epochs: exact under linear convergence, and
    an epoch whose decrease was small by chance (so that single epochs' ratios
    look fast) does not make the rate look fast; a trail needs
    ``(RATE_EPOCHS + 1) * span + 1`` epochs and restarts after a rise."""
    f_star, c, r = 0.5, 0.1, 0.9
    f = [f_star + c * r**k for k in range(14)]
    assert steps.extrapolated_gap(f, span=4) == pytest.approx(c * r**13 / f_star, rel=1e-9)
    noisy = list(f)
    noisy[-1] = noisy[-2] - 0.2 * (noisy[-2] - noisy[-1])  # the last epoch moved little
    one_by_one = steps.extrapolated_gap(noisy)
    assert one_by_one is not None and one_by_one < 0.5 * (noisy[-1] - f_star) / f_star
    spanned = steps.extrapolated_gap(noisy, span=4)
    assert spanned > 0.5 * (noisy[-1] - f_star) / f_star
    trail = steps.ObjectiveTrail(span=4)
    estimates = [trail.add(x) for x in f]
    assert estimates[:12] == [None] * 12 and estimates[12] is not None
    assert trail.add(f[-1] + 1.0) is None and trail.objectives == [f[-1] + 1.0]
