"""Typed configuration: what the estimators hand the solvers, and what the
driver hands the worker loops.

Two kinds of objects cross the driver/loop boundary, both immutable:

* **problems and settings** (:class:`LinearProblem`, :class:`FactorProblem`,
  :class:`Settings`): what is minimised and how, built once by an estimator;
* **loop configurations** (:class:`LoopConfig`, :class:`FactorLoopConfig`):
  what a worker loop reads, built by a topology from those; a change between
  epochs (a halved step, a smaller ``eta0``) is a new configuration
  (``dataclasses.replace``) sent with the driver's :class:`Decision`.

:func:`kernel_args` is the one place a problem becomes the kernels' arguments
(as scikit-learn's SGD module maps its parameters in one function).  Work
arrays never travel in a configuration: they live on the loop's shard.
"""

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from ..kernels.sweeps import N_PARAMS
from ..objective.penalties import ElasticNet


@dataclass(frozen=True)
class Schedule:
    """Per-sample step schedule of plain SGD (:mod:`~dask_asyncopt.objective.schedules`)."""

    kind: int
    eta0: float
    power_t: float = 0.5
    t0: float = 0.0  # offset of the "optimal" schedule


@dataclass(frozen=True)
class SVRG:
    """Proximal SVRG: the loss's curvature bound ``smoothness`` and a user's constant
    ``step`` (``None``: the preconditioned step ``1 / (2L)``)."""

    smoothness: float
    step: float | None = None


@dataclass(frozen=True)
class LinearProblem:
    """What a linear model's fit minimises, in the solvers' terms."""

    n_features: int
    n_outputs: int
    loss: int
    penalty: ElasticNet
    fit_intercept: bool
    schedule: Schedule
    epsilon: float = 0.1
    # scikit-learn's convention: on sparse data the intercept moves 100x slower
    intercept_decay: float = 1.0
    svrg: SVRG | None = None
    rule: object = None  # an update rule applied by the store (AMSGradRule), or None

    @property
    def n_coords(self):
        return self.n_features + int(self.fit_intercept)


@dataclass(frozen=True)
class FactorProblem:
    """What ``MatrixFactorization`` minimises and its step rule (a name of
    :data:`~.factors.FACTOR_RULES`: ``"adagrad"``, ``"constant"``, ``"amsgrad"``)."""

    n_factors: int
    reg_factors: float
    reg_biases: float
    eta0: float
    rule: object
    init_scale: float
    adam: tuple = (0.9, 0.999, 1e-8)  # beta1, beta2, eps of the AMSGrad rule


@dataclass(frozen=True)
class HeldOut:
    """A validation set held out of dask collections where they lie: about
    ``fraction`` of each row chunk's rows (:meth:`counts`; which ones,
    :func:`~dask_asyncopt.data.placement.held_index` of ``seed``, by class
    within the chunk when ``stratify``), scored there.
    ``part_score(decision, y, sample_weight)`` turns one chunk's decisions, raw
    targets and weights (or ``None``) into sums; ``combine(sums)`` the sums of
    every chunk into the score.  As :attr:`Validation.score`, the fit replaces
    it by the function of the parts it placed."""

    fraction: float
    seed: int
    part_score: object
    combine: object
    stratify: bool = False

    def counts(self, rows):
        """Rows held out of each row chunk (``rows``: the chunks' sizes): the
        nearest count, leaving every chunk a row to train on.  Known before any
        chunk is computed."""
        return [min(int(self.fraction * n + 0.5), max(n - 1, 0)) for n in rows]


@dataclass(frozen=True)
class Validation:
    """A held-out score after every epoch: ``score(model)`` into history column
    ``column``; with ``watch`` the stopping rule watches it (lower is better
    when ``lower_is_better``) and the fit keeps the best epoch's model when
    ``keep_best``."""

    score: object
    column: str
    lower_is_better: bool = False
    watch: bool = False
    keep_best: bool = False


@dataclass(frozen=True)
class Settings:
    """How a problem is minimised: solver, stopping, cluster use, fault tolerance."""

    solver: str = "asyb"
    n_blocks: int | None = None  # coefficient (item) blocks; None: the solver's default
    n_workers: int | None = None  # worker loops; None: one per Dask worker thread
    batch_size: int | None = None  # rows per exchange; None: chosen from the data
    gradient_rows: int | None = None  # an update rule's rows per gradient (exchange_sizes)
    max_staleness: int | None = None
    max_iter: int = 20
    tol: float | None = 1e-3
    n_iter_no_change: int = 5
    timeout: float = 120.0
    callback: object = None  # called with every history row
    # a copy of the model kept in the driver every this many epochs (0: never)
    checkpoint_every: int = 1
    validation: Validation | None = None
    first_epoch: int = 1  # > 1 when a fit resumes from a checkpoint or continues one
    resume: object = None  # the Checkpoint resumed from


class KernelArgs(NamedTuple):
    """The plain-SGD sweeps' arguments: loss and schedule codes and the float
    ``params`` vector laid out by ``kernels.sweeps.P_*``."""

    loss: int
    schedule: int
    params: np.ndarray


def kernel_args(problem, eta0=None):
    """The sweeps' arguments for ``problem`` (``eta0`` replaces the schedule's)."""
    s = problem.schedule
    params = np.zeros(N_PARAMS)
    params[:] = (s.eta0 if eta0 is None else eta0, problem.penalty.alpha,
                 problem.penalty.l1_ratio, s.t0, s.power_t, problem.epsilon,
                 problem.intercept_decay)
    return KernelArgs(problem.loss, s.kind, params)


@dataclass(frozen=True)
class SVRGStep:
    """What the loops' variance-reduced sweeps need: the step ``eta`` (``None``
    until the fit's first snapshot sets it), the rows of one epoch, and how the
    first step is made (:func:`~dask_asyncopt.objective.schedules.svrg_step`)."""

    n_samples: int
    smoothness: float
    step: float | None
    normalise: bool
    fit_intercept: bool
    eta: float | None = None


@dataclass(frozen=True)
class GradOptions:
    """Gradient exchanges of an update rule: variance-reduced gradients (``vr``),
    rows per gradient (``batch``) and the rows of one epoch."""

    vr: bool
    batch: int
    n_samples: int


@dataclass(frozen=True)
class LoopConfig:
    """Everything a linear model's worker loop reads (one per fit, replaced between
    epochs when the driver changes a step)."""

    mode: str  # "async", "sync" (blocks) or "gossip" (replicas)
    kernel: KernelArgs
    penalty: ElasticNet
    n_loops: int
    timeout: float
    bounded: bool = False  # pushes may wait for admission (max_staleness)
    zero_start: bool = False  # the coefficients start at 0
    block_sizes: tuple = ()
    svrg: SVRGStep | None = None
    grad: GradOptions | None = None
    n_blocks: int = 1  # replicas: how the shards number coordinates
    t_start: int = 0  # replicas: samples of earlier fits
    gate: int | None = None  # replicas without barriers: samples per epoch
    channel: str | None = None  # the fit's exchange channel (see .channel), if any

    @property
    def sync(self):
        return self.mode == "sync"

    def with_eta(self, eta):
        """This configuration with the variance-reduced sweeps' step ``eta``."""
        return replace(self, svrg=replace(self.svrg, eta=eta))


@dataclass(frozen=True)
class FactorLoopConfig:
    """What a matrix-factorisation worker loop reads."""

    solver: str
    n_loops: int
    mu: float
    eta: float
    reg_factors: float
    reg_biases: float
    rule: int
    adam: tuple
    timeout: float
    first_epoch: int = 1  # sync tickets count epochs from a restart
    offsets: np.ndarray | None = None  # gossip: each item block's rows in a replica
    n_values: int = 0  # gossip: factor and bias columns (what the item step scales)
    channel: str | None = None  # the fit's exchange channel (see .channel), if any


class Decision(NamedTuple):
    """The driver's decision after an epoch: go on until the global sample count
    reaches ``target``, with loop configuration ``config`` (``None``: unchanged);
    ``redo``: the epoch was undone (the blocks are back at the iterate it
    started from) and the snapshot there must be taken again first."""

    target: int
    config: object = None
    redo: bool = False


@dataclass
class PassReport:
    """One worker loop's pass over its shard (a sweep, snapshot or loss pass).

    Matrix factorisation fills ``loss_sum`` with the squared errors and
    ``samples`` with the ratings; ``steps`` counts exchanges (item-block visits).
    """

    worker: int
    loss_sum: float
    samples: int
    kernel_time: float
    wall_time: float
    steps: int = 0
    max_sq_norm: float = 0.0
    exchanges: int = 0
    wait_time: float = 0.0
    remote_calls: int = 0  # calls to store objects in other processes
    # a snapshot pass: per output, the rows' summed loss curvature (the stopping rule)
    curvature: np.ndarray | None = None


class EpochReport(NamedTuple):
    """A loop's epoch on blocks: the fit's first snapshot (``start``, first epoch
    only), the sweeps (``epoch``), the pass after them (``after``: snapshot or
    loss) and the step the sweeps took (``eta``)."""

    epoch: PassReport
    after: PassReport | None = None
    start: PassReport | None = None
    eta: float | None = None
    remote_calls: int = 0  # the loop's calls to other processes this epoch

    def passes(self):
        return [p for p in (self.start, self.epoch, self.after) if p is not None]


@dataclass
class FitResult:
    """A finished fit: the model, its history rows and the epochs and samples run."""

    model: object  # linear: (n_coords, n_outputs), intercept last; MF: (U, V)
    history: list = field(default_factory=list)
    n_iter: int = 0
    t: int = 0
    best_epoch: int = 0
    # an update rule's moments (linear: each (n_coords, n_outputs), intercept last)
    # at the fit's end, which a warm start continues from; None without a rule
    moments: tuple | None = None
