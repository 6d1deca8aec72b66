"""Step policies: what the driver does with the step between two epochs.

Every fit, whatever its topology, ends each epoch the same way (see
:func:`~.run.drive`): the history row is recorded, then the fit's policy
looks at the epoch's objective and at what the stopping rule watches and
returns the next epoch's step, or :data:`STOP`.

* :class:`ScheduleSteps` -- plain proximal SGD with scikit-learn's per-sample
  schedules: the step within an epoch is the schedule's; on a stall
  ``learning_rate="adaptive"`` divides ``eta0`` by 5, the others stop.
* :class:`HalvingSteps` -- proximal SVRG: a constant step, halved when an
  epoch raised the objective (a line search's answer to delays between loops
  and unlucky data); a stall stops.
* :class:`RuleSteps` -- an update rule (AMSGrad): constant and halved on a
  rise with variance reduction, where a stall stops the fit (as SVRG's: the
  iterates converge at a constant step, a smaller one only slows them; the
  two divisions by 5 this policy once made first doubled an L1 fit's epochs
  for a fifth of its gap); ``lr / sqrt(epoch)`` without, where a stall first
  divides the step by 5, at most twice.
* :class:`EpochSteps` -- matrix factorisation: constant for the adaptive rules,
  ``eta0 / sqrt(epoch)`` for plain SGD; stops only on a stall of what is
  watched (the validation RMSE with early stopping).

The stopping rule a policy consults: :class:`GapStopping` when the topology
measures each epoch's distance to the optimum from an exact snapshot (a
duality gap and the extrapolated decrease of the exact objective:
proximal SVRG fits under a penalty), else :class:`EarlyStopping`,
scikit-learn's objective-decrease rule.
"""

import logging
import math

import numpy as np

logger = logging.getLogger("dask_asyncopt")

#: what a policy returns to end the fit
STOP = None

# A rise smaller than this share of the objective is the rounding of sums taken
# in another order, not a step too long: at the optimum, halving on it took the
# step down 20 times in an 80-epoch fit (tf-idf-like data).
ROUNDING = 1e-12

#: ``learning_rate="adaptive"`` stops dividing ``eta0`` below this
MIN_ETA0 = 1e-6

#: a rule fit's stalls each divide its step by STALL_FACTOR, STALL_REDUCTIONS times
STALL_REDUCTIONS = 2
STALL_FACTOR = 5.0

#: :class:`GapStopping` stops when the extrapolated gap is below ``tol / SAFETY``
#: (the extrapolation can run below the true gap while the rate settles; the
#: user guide's "When a fit stops" gives the measurements)
SAFETY = 2.0

#: :func:`extrapolated_gap` takes the slowest of this many ratios of decreases
RATE_EPOCHS = 2

#: :class:`GapStopping`'s safety net: a stall is ``n_iter_no_change`` epochs that
#: improved the objective by less than this share of ``tol`` (relative)
STALL_SHARE = 1e-2

#: a fit whose objective rose this many epochs in a row (each rolled back, the
#: step halved) stops with a warning: it cannot make progress
MAX_ROLLBACKS = 8


def rose(previous, objective):
    """Whether an epoch raised the objective beyond the rounding of sums taken in
    another order (:data:`ROUNDING`)."""
    return objective > previous + ROUNDING * abs(previous)


class EarlyStopping:
    """scikit-learn's rule: stop after ``n_iter_no_change`` epochs without an
    improvement of at least ``tol`` on the best value watched (lower is
    better); ``tol=None`` never stops."""

    def __init__(self, tol, n_iter_no_change, best=math.inf, no_improve=0):
        self.tol = tol
        self.patience = n_iter_no_change
        self.best = best
        self.no_improve = no_improve

    def stalled(self, watched):
        if self.tol is None:
            return False
        self.no_improve = self.no_improve + 1 if watched > self.best - self.margin() else 0
        self.best = min(self.best, watched)
        return self.no_improve >= self.patience

    def margin(self):
        """The improvement on the best value that counts as one."""
        return self.tol

    def reached(self, result):
        """Whether the epoch's ``result`` proves the accuracy asked for (never, for
        this rule: see :class:`GapStopping`)."""
        return False


class GapStopping(EarlyStopping):
    """Stop once the epoch's gap to the optimum is within ``tol``: the fit is then
    within a relative gap ``(F - F*) / F* <= tol`` of the optimum.

    Variance-reduced fits take an exact snapshot after every epoch, which
    gives two measures of that gap (fields of the topology's ``EpochResult``):

    * ``gap_bound``, a duality gap: an upper bound, proof of the accuracy when
      it closes (see :meth:`~dask_asyncopt.objective.penalties.ElasticNet.gap_bound`);
    * ``gap_estimate``: the remaining decrease of the exact objective
      extrapolated from its linear rate over the last epochs
      (:func:`extrapolated_gap`); it must fall below ``tol / SAFETY``.

    Either stops the fit.  The bound is exact but, scaled by the largest
    gradient entry over a tiny ``alpha``, closes only near machine accuracy on
    ill-conditioned data such as click-through data, where the estimate
    follows the true gap closely (the user guide's "When a fit stops" gives
    the measurements).  An objective that merely slows down says nothing about
    the distance left (scikit-learn's rule stopped such fits several times
    ``tol`` above the optimum); the rate of that slowing down does.

    The objective-decrease rule stays as a safety net: ``n_iter_no_change``
    epochs without an improvement of :data:`STALL_SHARE` ``* tol`` of the
    objective (an asynchronous fit's noise floor).
    """

    def margin(self):
        return STALL_SHARE * self.tol * (abs(self.best) if math.isfinite(self.best) else 0.0)

    def reached(self, result):
        if self.tol is None:
            return False
        bound, estimate = result.gap_bound, result.gap_estimate
        return ((bound is not None and bound <= self.tol)
                or (estimate is not None and estimate <= self.tol / SAFETY))


def extrapolated_gap(objectives, span=1):
    """The relative gap ``(F - F*) / F*`` left after the last of ``objectives``
    (exact, decreasing, one per epoch), extrapolated from their linear rate, or
    ``None``.

    Linear convergence at rate ``r`` leaves ``d r / (1 - r)`` after a decrease
    ``d``; ``r`` is the slowest of the last :data:`RATE_EPOCHS` ratios of
    successive decreases (a convergence that slows down is not taken for a
    fast one).  A decrease is that over ``span`` epochs: where single epochs'
    decreases are noisy (AD-PSGD's: gossip makes successive ratios range from
    0.3 to 2.5 on click-through data), the rate is read from longer stretches,
    whose noise averages out.  ``None`` until there are that many decreases,
    or when the decreases do not shrink.
    """
    window = (RATE_EPOCHS + 1) * span + 1
    if len(objectives) < window:
        return None
    f = objectives[-window::span]
    drops = [a - b for a, b in zip(f, f[1:], strict=False)]
    if min(drops) <= 0.0:
        return None
    rate = max(b / a for a, b in zip(drops, drops[1:], strict=False))
    if rate >= 1.0:
        return None
    left = drops[-1] * rate / (1.0 - rate)
    return left / (f[-1] - left) if left < f[-1] else None


class ObjectiveTrail:
    """The exact objectives of a fit's last epochs kept, from which
    :func:`extrapolated_gap` reads the gap left (``gap_estimate``).

    A rise (the epoch is undone) or an epoch without progress starts the trail
    again: the rate is read only from decreases in a row.
    """

    def __init__(self, span=1):
        self.span = span
        self.objectives = []

    def add(self, objective):
        """Record an epoch's exact objective; the extrapolated relative gap or ``None``."""
        if self.objectives and objective >= self.objectives[-1]:
            self.objectives = []
        self.objectives = [*self.objectives[-(RATE_EPOCHS + 1) * self.span:], objective]
        return extrapolated_gap(self.objectives, self.span)


def certifies(settings, variance_reduced, alpha):
    """Whether a fit stops on its gap to the optimum (:class:`GapStopping`):
    proximal SVRG (an exact snapshot every epoch, whatever the topology) under a
    penalty, with a ``tol``, watching the objective (not a validation score).

    Not the update rules' fits: an AMSGrad fit's decrease slows down faster than
    linearly, which the extrapolation took for convergence (1.4e-3 above the
    optimum at ``tol=1e-3``).  Without a penalty no dual point is feasible and
    the objective's rate is that of an unregularised problem: the old rule.
    """
    watches_score = settings.validation is not None and settings.validation.watch
    return variance_reduced and alpha > 0 and settings.tol is not None and not watches_score


def duality_gap(penalty, parts, loss, value, curvature):
    """An upper bound on ``(F - F*) / F*`` at a snapshot, or ``inf``.

    ``parts``: per store (block or replica), the penalty's
    :meth:`~dask_asyncopt.objective.penalties.ElasticNet.dual_terms` of its
    coefficients at the snapshot's mean gradient and that gradient at the
    intercept (``None`` where there is none); ``loss`` and ``value``: the exact
    mean loss and penalty; ``curvature``: the rows' mean loss curvature per
    output.  The coefficients' part is a duality gap (rigorous, from a few
    sums per store).  The intercept is unpenalised: no dual point is feasible
    until its gradient is exactly 0, so its part is the Newton estimate of what
    moving it alone would still gain, ``g_b^2 / (2 c)``.
    """
    bound = penalty.gap_bound([t for t, _ in parts], loss, value)
    icpt = [g for _, g in parts if g is not None]
    if icpt:
        g = icpt[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = np.where(g == 0.0, 0.0, g * g / (2.0 * curvature))
        bound += float(newton.sum())
    objective = loss + value
    if not bound < objective:
        return math.inf
    return bound / (objective - bound)


def halve_if_rose(step, previous, objective):
    """The step keeps every row stable for the loss's curvature bound; delays
    between loops and unlucky data can still make it too long: halve it when an
    epoch raised the objective, as a line search would."""
    if not rose(previous, objective):
        return step
    logger.info("objective rose from %.6g to %.6g: step halved to %.3g", previous, objective,
                step / 2.0)
    return step / 2.0


class Rollbacks:
    """The policies' record of epochs that raised the exact objective.

    An epoch that rose is undone (the driver restores the iterate it started
    from, see :func:`~.run.drive`) and its step halved; the iterate the fit
    goes on from, and ends at, is then never worse than one it has seen.
    ``rose`` tells the driver about the epoch just judged; after
    :data:`MAX_ROLLBACKS` in a row the fit stops with a warning.
    """

    rose = False
    in_a_row = 0

    def judge(self, previous, objective):
        """Whether ``objective`` rose over ``previous``; the reference objective
        for the next epoch (the one kept)."""
        self.rose = previous is not None and rose(previous, objective)
        self.in_a_row = self.in_a_row + 1 if self.rose else 0
        return previous if self.rose else objective

    @property
    def hopeless(self):
        return self.in_a_row >= MAX_ROLLBACKS


class ScheduleSteps:
    """Plain proximal SGD: ``eta0`` of the per-sample schedule (module docstring)."""

    def __init__(self, eta0, adaptive, stopping):
        self.step = eta0
        self.adaptive = adaptive
        self.stopping = stopping

    def after(self, epoch, result, watched):
        if self.stopping.stalled(watched):
            if not self.adaptive or self.step <= MIN_ETA0:
                return STOP
            self.step = self.step / 5.0
            self.stopping.no_improve = 0
        return self.step


class HalvingSteps(Rollbacks):
    """Proximal SVRG's constant step (module docstring): an epoch that raised the
    objective is rolled back and the step halved.

    ``step`` and ``previous`` (the objective before the first epoch) may be
    unknown when the fit starts (the loops take the first snapshot and set
    the step): they are then taken from the first epoch's result.
    """

    def __init__(self, stopping, step=None, previous=None):
        self.stopping = stopping
        self.step = step
        self.previous = previous

    def after(self, epoch, result, watched):
        if self.step is None:
            self.step, self.previous = result.step, result.before
        self.step = halve_if_rose(self.step, self.previous, result.objective)
        self.previous = self.judge(self.previous, result.objective)
        # a certified epoch that rose is undone: the iterate kept is better still
        if self.stopping.reached(result) or self.stopping.stalled(watched) or self.hopeless:
            return STOP
        return self.step


class RuleSteps(Rollbacks):
    """The step of an update rule's fit (module docstring); with variance
    reduction an epoch that raised the objective is rolled back.

    Parameters
    ----------
    lr : float
        Starting step.
    vr : bool
        Variance-reduced gradients: constant step, halved when an epoch raises
        the objective, and a stall stops; else ``lr / sqrt(epoch)``, and a
        stall divides the step by 5 (at most twice) before it stops.
    stopping : EarlyStopping
    previous : float
        Objective before the first epoch.
    """

    def __init__(self, lr, vr, stopping, previous):
        self.step = self.lr0 = lr
        self.vr = vr
        self.stopping = stopping
        self.previous = previous
        self.reductions = 0

    def after(self, epoch, result, watched):
        lr = self.step
        objective = result.objective
        kept = self.judge(self.previous, objective) if self.vr else objective
        if self.stopping.reached(result):
            self.previous = kept
            return STOP
        if self.stopping.stalled(watched):
            if self.vr or self.reductions == STALL_REDUCTIONS:
                return STOP
            # as learning_rate="adaptive": a stall ends with a smaller step first
            self.reductions += 1
            lr = self.step / STALL_FACTOR
            self.lr0 /= STALL_FACTOR
            self.stopping.no_improve = 0
        elif not self.vr:
            lr = self.lr0 / math.sqrt(epoch + 1)
        elif self.rose:
            lr = self.step / 2.0
            logger.info("objective rose from %.6g to %.6g: step halved to %.3g",
                        self.previous, objective, lr)
        self.previous = kept
        self.step = lr
        return STOP if self.hopeless else lr


class EpochSteps:
    """Matrix factorisation's step per epoch (module docstring)."""

    def __init__(self, eta0, decay, stopping, first_epoch=1):
        self.eta0 = eta0
        self.decay = decay
        self.stopping = stopping
        self.step = self.at(first_epoch)

    def at(self, epoch):
        """The step of ``epoch`` (from 1)."""
        return self.eta0 / math.sqrt(float(epoch)) if self.decay else self.eta0

    def after(self, epoch, result, watched):
        if self.stopping.stalled(watched):
            return STOP
        self.step = self.at(epoch + 1)
        return self.step
