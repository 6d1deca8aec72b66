"""Learning-rate schedules (``objective/schedules.py``) against scikit-learn's formulas."""

import math

import pytest

from dask_asyncopt.objective import schedules

from ..reference import ref_eta

NAMES = {schedules.CONSTANT: "constant", schedules.OPTIMAL: "optimal",
         schedules.INVSCALING: "invscaling", schedules.ADAPTIVE: "adaptive"}


def test_schedule_codes_are_distinct():
    assert sorted(schedules.SCHEDULES.values()) == [0, 1, 2, 3]
    assert {schedules.SCHEDULES[n]: n for n in schedules.SCHEDULES} == NAMES


@pytest.mark.parametrize("schedule", sorted(NAMES))
def test_step_size(schedule):
    for t in (1, 2, 7, 1000):
        got = schedules.step_size(schedule, 0.3, 1e-3, 40.0, 0.25, t)
        want = ref_eta(NAMES[schedule], 0.3, 1e-3, 40.0, 0.25, t)
        assert got == pytest.approx(want, rel=1e-14)
    # hand values
    assert schedules.step_size(schedules.OPTIMAL, 0.3, 0.5, 3.0, 0.25, 2) == pytest.approx(0.5)
    assert schedules.step_size(schedules.INVSCALING, 0.3, 0.5, 3.0, 0.5, 9) == pytest.approx(0.1)


@pytest.mark.parametrize("alpha", [1e-4, 0.5])
def test_optimal_t0_is_bottous_heuristic(alpha):
    """The first "optimal" step is the one a typical weight 1/sqrt(sqrt(alpha)) takes:
    ``1 / (alpha t0) = typw / max(1, |dloss(-typw, 1)|)`` (scikit-learn's rule)."""
    calls = []

    def dloss_at(p):
        calls.append(p)
        return 4.0  # the hinge's derivative is 1, a steeper loss's larger

    t0 = schedules.optimal_t0(alpha, dloss_at)
    typw = math.sqrt(1.0 / math.sqrt(alpha))
    assert calls == [pytest.approx(-typw)]
    assert 1.0 / (alpha * t0) == pytest.approx(typw / 4.0, rel=1e-12)
    # a derivative below 1 does not enlarge the first step
    assert 1.0 / (alpha * schedules.optimal_t0(alpha, lambda p: 0.1)) == pytest.approx(
        typw, rel=1e-12)
    # the schedule's first step (t = 1) is exactly that step
    assert schedules.step_size(schedules.OPTIMAL, 0.0, alpha, t0, 0.5, 1) == pytest.approx(
        typw / 4.0, rel=1e-12)


def test_svrg_step():
    """A user's step wins; else 1 / (L * largest squared row norm), never infinite."""
    assert schedules.svrg_step(0.25, 0.7, 123.0) == 0.7
    assert schedules.svrg_step(0.25, None, 8.0) == pytest.approx(0.5)
    assert schedules.svrg_step(2.0, None, 2.0) == pytest.approx(0.25)
    assert math.isfinite(schedules.svrg_step(1.0, None, 0.0))
