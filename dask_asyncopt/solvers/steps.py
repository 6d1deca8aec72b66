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
  rise with variance reduction, ``lr / sqrt(epoch)`` without; a stall first
  divides the step by 5, at most twice.
* :class:`EpochSteps` -- matrix factorisation: constant for the adaptive rules,
  ``eta0 / sqrt(epoch)`` for plain SGD; stops only on a stall of what is
  watched (the validation RMSE with early stopping).
"""

import logging
import math

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
        self.no_improve = self.no_improve + 1 if watched > self.best - self.tol else 0
        self.best = min(self.best, watched)
        return self.no_improve >= self.patience


def halve_if_rose(step, previous, objective):
    """The step keeps every row stable for the loss's curvature bound; delays
    between loops and unlucky data can still make it too long: halve it when an
    epoch raised the objective, as a line search would."""
    if objective <= previous + ROUNDING * abs(previous):
        return step
    logger.info("objective rose from %.6g to %.6g: step halved to %.3g", previous, objective,
                step / 2.0)
    return step / 2.0


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


class HalvingSteps:
    """Proximal SVRG's constant step (module docstring).

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
        if self.stopping.stalled(watched):
            return STOP
        self.step = halve_if_rose(self.step, self.previous, result.objective)
        self.previous = result.objective
        return self.step


class RuleSteps:
    """The step of an update rule's fit (module docstring).

    Parameters
    ----------
    lr : float
        Starting step.
    vr : bool
        Variance-reduced gradients: constant step, halved when an epoch raises
        the objective; else ``lr / sqrt(epoch)``.
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
        if self.stopping.stalled(watched):
            if self.reductions == STALL_REDUCTIONS:
                return STOP
            # as learning_rate="adaptive": a stall ends with a smaller step first
            self.reductions += 1
            lr = self.step / STALL_FACTOR
            self.lr0 /= STALL_FACTOR
            self.stopping.no_improve = 0
        elif not self.vr:
            lr = self.lr0 / math.sqrt(epoch + 1)
        elif objective > self.previous:
            lr = self.step / 2.0
            logger.info("objective rose from %.6g to %.6g: step halved to %.3g",
                        self.previous, objective, lr)
        self.previous = objective
        self.step = lr
        return lr


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
