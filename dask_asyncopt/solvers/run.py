"""One fit on the cluster: its handles, its epochs, its history, its restarts.

Every topology -- coefficient blocks (``asyb``/``sync``), replicas
(``adpsgd``), factor blocks (``MatrixFactorization``) -- runs the same epoch
loop, :func:`drive`:

1. the topology runs (or waits for) an epoch and measures it
   (an :class:`EpochResult`);
2. :meth:`Run.record` turns that into a history row: validation score,
   callback (the progress bar), the best model so far when asked;
3. the fit's step policy (:mod:`.steps`) returns the next step or stops;
4. every ``checkpoint_every`` epochs the driver keeps a :class:`Checkpoint`
   of the model in its own process (a lost worker cannot take it with it;
   coefficient blocks send only the coordinates changed since the last one);
5. the topology lets its loops go on with the new step.

When a worker is lost mid-fit the topology releases everything and raises
:class:`WorkerLost` with the last checkpoint; :func:`with_restarts` places
the data on the surviving workers and resumes from there, for linear models
and matrix factorisation alike.  Epochs count from 1 in history rows,
checkpoints and restarts.
"""

import concurrent.futures
import logging
import math
import threading
import time
import warnings
import weakref
from asyncio import CancelledError
from dataclasses import dataclass, replace

import numpy as np
from distributed import Worker, wait
from distributed.core import Status
from sklearn.exceptions import ConvergenceWarning

from .channel import Driver, Exchange, plugin_name
from .config import Decision, FitResult
from .handles import StoreRef, bind, remote_calls
from .loop import run_epochs
from .steps import STOP, EarlyStopping, GapStopping

logger = logging.getLogger("dask_asyncopt")


@dataclass
class Checkpoint:
    """The model after ``epoch``, kept in the driver, with what resuming needs:
    the samples processed (the schedules go on from there), the best model so
    far (``best``: ``(watched, epoch, model)`` or ``None``) and the stopping
    rule's state (``(best watched, epochs without improvement)``)."""

    model: object
    samples: int
    epoch: int
    best: tuple | None = None
    stopping: tuple = (math.inf, 0)


class WorkerLost(RuntimeError):
    """A worker holding blocks, loops or data left the cluster mid-fit.

    Carries what the fit can resume from: the latest :class:`Checkpoint` (or
    ``None``) and the history rows recorded so far.
    """

    def __init__(self, lost, checkpoint, history):
        super().__init__(f"lost worker(s) {sorted(lost)} during the fit")
        self.lost = lost
        self.checkpoint = checkpoint
        self.history = history


@dataclass
class EpochResult:
    """What a topology measured of one epoch.

    ``row``: its history columns, in order; ``objective``: what the step
    policy judges (the linear models' objective, the factorisation's training
    RMSE); ``samples``: processed so far, all loops and fits; ``step``: the
    step the epoch took; ``before``: the objective before it, when the epoch
    itself measured that (a fit's first snapshot); ``log``: the INFO line;
    ``diverged``: the error to raise when the objective is not finite;
    ``gap_bound`` and ``gap_estimate``: an upper bound on the relative gap
    ``(F - F*) / F*`` of the epoch's iterate and its extrapolation from the
    exact objectives, when the topology measures them (see
    :class:`~.steps.GapStopping`).
    """

    row: dict
    objective: float
    samples: int = 0
    step: float | None = None
    before: float | None = None
    log: str = ""
    diverged: str = ""
    gap_bound: float | None = None
    gap_estimate: float | None = None


class Run:
    """One fit's cluster handles and the driver's bookkeeping.

    Parameters
    ----------
    client : distributed.Client
    shards : list of Future
        One shard per worker loop, on the worker at the same position of
        ``loop_workers``.
    settings : Settings
    token : str
        Makes the fit's keys unique.
    """

    def __init__(self, client, shards, loop_workers, settings, token):
        self.client = client
        self.shards = shards
        self.loop_workers = loop_workers
        self.settings = settings
        self.token = token
        self.actors = []
        self.config = None
        self.loops = []
        self.history = []
        self.checkpoint = settings.resume
        self.best = None if settings.resume is None else settings.resume.best
        self._handles = None
        self.channel = None  # the fit's exchange channel (token), when registered
        self._driver = None  # the driver's end of it (channel.Driver), once bound
        self._bound = []  # every handle bound by the driver (its calls are counted)
        self._counted = 0
        self._waiter = concurrent.futures.ThreadPoolExecutor(1, "asyncopt-driver")
        self._wake = threading.Event()
        self.epochs = (0, 0)  # last epoch reported, last epoch of the loops (start_epochs)
        self.started = time.perf_counter()

    # ------------------------------------------------------------- the actors
    def connect(self, futures):
        """Wait for the fit's actors and learn their workers; when a loop or an
        actor lives outside this process (worker processes), register the fit's
        exchange channel (:mod:`.channel`).  Returns the actors as
        :class:`~.handles.StoreRef` (what loops and handles take)."""
        actors = self.client.gather(futures)
        homes = self.client.who_has(futures)
        refs = [StoreRef(f.key, homes[f.key][0], a._cls) for f, a in zip(futures, actors,
                                                                       strict=True)]
        here = {w.address for w in list(Worker._instances)
                if w.status in (Status.running, Status.paused)}
        if any(r.address not in here for r in refs) or any(
                a not in here for a in self.loop_workers):
            self.client.register_plugin(Exchange(self.token), name=plugin_name(self.token))
            self.channel = self.token
        return refs

    def close_channel(self):
        self.close_driver_links()
        if self.channel is not None:
            _unregister(self.client, self.channel)
            self.channel = None

    def close_driver_links(self):
        """Close the driver's links of the channel (a kept store's channel stays)."""
        if self._driver is not None:
            self._driver.close()
            self._driver = None
            self._handles = None  # their links are closed: bind again if needed

    # ------------------------------------------------------------- the loops
    def start_loops(self, func, name, epoch, *args):
        """Submit ``func(shard, actors, config, i, *args)`` next to every shard.

        Task keys read ``asyncopt-<name>-<loop>-epoch-<epoch>-<fit token>`` on
        the dashboard.  Returns the futures (also kept in ``loops`` until
        :meth:`gather_loops`, so that a failed fit stops them).
        """
        self.loops[:] = [
            self.client.submit(func, shard, self.actors, self.config, i, *args,
                               workers=[addr], allow_other_workers=False, pure=False,
                               key=f"asyncopt-{name}-{i}-epoch-{epoch}-{self.token}")
            for i, (shard, addr) in enumerate(zip(self.shards, self.loop_workers,
                                                  strict=True))]
        for future in self.loops:  # a loop that ends wakes a driver waiting for reports
            future.add_done_callback(lambda _: self._wake.set())
        return list(self.loops)

    def gather_loops(self):
        """Wait for the running loops; return their reports."""
        reports = self.client.gather(self.loops)
        self.loops.clear()
        return reports

    def run_loops(self, func, name, epoch, *args):
        """:meth:`start_loops`, then :meth:`gather_loops`."""
        self.start_loops(func, name, epoch, *args)
        return self.gather_loops()

    # ------------------------------------------------ the per-epoch hand-off
    def start_epochs(self, body, first, last, target, *args):
        """Start one task per loop running epochs ``first .. last`` on the blocks
        (:func:`~.loop.run_epochs` with ``body``; nothing when ``first > last``,
        a restart after the last epoch's checkpoint); after each epoch take its
        reports with :meth:`epoch_reports`, then :meth:`proceed`, and at the end
        :meth:`finish_epochs`."""
        self.epochs = (first - 1, last)
        if first > last:
            return
        self.start_loops(run_epochs, f"{self.settings.solver}-loop", first, body, first, last,
                         target, *args)

    def epoch_reports(self, epoch):
        """The loops' reports of ``epoch``, once all posted them; a failed loop task
        raises its error here instead.

        No polling: the wait at block 0 runs on a helper thread, and this one
        sleeps until that wait returns or a loop task ends (their futures'
        callbacks wake it).
        """
        timeout = self.settings.timeout
        woken = threading.Event()
        self._wake = woken
        relay = self.handles()[0]  # block 0 relays the hand-off
        loops = list(self.loops)

        def collect():  # an epoch may take longer than timeout: wait again while it runs
            while True:
                reports = relay.wait("collect_epoch", epoch, len(loops), timeout).result(
                    2 * timeout)
                if reports is not None or all(f.done() for f in loops):
                    return reports

        collect = self._waiter.submit(collect)
        collect.add_done_callback(lambda _: woken.set())
        while True:
            woken.wait()
            woken.clear()
            failed = [f for f in self.loops if f.status in ("error", "cancelled")]
            if failed:
                self.client.gather(failed)  # raises the loop's error
            if collect.done():
                break
            if all(f.done() for f in self.loops):
                # a loop's task ends after its last post: the reports are on their way
                try:
                    collect.result(min(timeout, 30.0))
                except concurrent.futures.TimeoutError:
                    raise RuntimeError(
                        f"worker loops ended before reporting epoch {epoch}") from None
                break
        reports = collect.result()
        if reports is None:
            raise RuntimeError(f"worker loops ended before reporting epoch {epoch}")
        self.epochs = (epoch, self.epochs[1])
        return reports

    def _decide(self, epoch, decision):
        self.handles()[0].call("decide", epoch, decision).result(self.settings.timeout)

    def proceed(self, epoch, target, config=None, redo=False):
        """Let the loops go on after ``epoch`` towards sample count ``target``
        (with ``config``, their new configuration, also kept as ``self.config``;
        ``redo``: first the snapshot again, see :class:`~.config.Decision`)."""
        if config is not None:
            self.config = config
        self._decide(epoch, Decision(target, config, redo))

    def finish_epochs(self):
        """The fit ends: stop the loops unless the epoch reported last was their
        last anyway, and wait for them."""
        reported, last = self.epochs
        if self.loops and reported < last:
            self._decide(reported, None)
        self.gather_loops()

    # ------------------------------------------------------------ the store
    def bind(self, refs):
        """The driver's handles of the store objects ``refs``: direct calls to those
        in this process (through their actors, the statistics and checkpoint
        reads between two epochs would take turns on a thread cluster's event
        loop), the channel's links to those on worker processes when the fit
        has one (an actor call costs a few event-loop hops on each side, and
        the loops wait for the driver between epochs).  Their calls count in
        :meth:`driver_calls`.

        A link serves its requests one after another: while the driver waits
        in a store object (the epoch's reports, :meth:`epoch_reports`), its
        other calls to that worker wait behind it; the driver makes none
        meanwhile, and a failed fit's loops are stopped through the actors
        (:func:`release`), which ends that wait."""
        if self.channel is not None and self._driver is None:
            self._driver = Driver(self.client, self.channel, self.settings.timeout)
        handles = bind(refs, driver=self._driver)
        self._bound.extend(handles)
        return handles

    def handles(self):
        """The driver's handles of the fit's actors (:meth:`bind`)."""
        if self._handles is None:
            self._handles = self.bind(self.actors)
        return self._handles

    def driver_calls(self):
        """The driver's calls to store objects in other processes since the last
        time this was asked (its share of the history's ``remote_calls``)."""
        made = remote_calls(self._bound)
        counted, self._counted = self._counted, made
        return made - counted

    def call_blocks(self, method, *args):
        """Call ``method(*args)`` on every actor at once, then collect the replies."""
        calls = [h.call(method, *args) for h in self.handles() if not h.local]
        replies = iter([c.result(self.settings.timeout) for c in calls])
        return [next(replies) if not h.local else getattr(h.obj, method)(*args)
                for h in self.handles()]

    # ------------------------------------------------------------- history
    def record(self, epoch, result, model):
        """Append the epoch's history row; return what the stopping rule watches
        (lower is better: the objective, or the validation score).

        ``model()`` reads the current model (for the validation score).
        """
        if not math.isfinite(result.objective):
            raise FloatingPointError(result.diverged)
        row = {"epoch": epoch, "time": 0.0, **result.row}
        watched = result.objective
        validation = self.settings.validation
        self.last_model = None
        if validation is not None:
            self.last_model = model()
            score = float(validation.score(self.last_model))
            row[validation.column] = score
            if validation.watch:
                watched = score if validation.lower_is_better else -score
            if validation.keep_best and (self.best is None or watched < self.best[0]):
                self.best = (watched, epoch, self.last_model)
        row["time"] = time.perf_counter() - self.started
        self.history.append(row)
        logger.info("epoch %d: %s", epoch, result.log)
        if self.settings.callback is not None:
            self.settings.callback(row)
        return watched

    def keep_checkpoint(self, epoch, result, topology, stopping):
        """Keep a :class:`Checkpoint` when one is due after ``epoch``: of the model
        read this epoch, else of the topology's ``checkpoint_model()`` (one that
        costs what changed since the last checkpoint) or ``model()``."""
        every = self.settings.checkpoint_every
        if every and epoch % every == 0:
            current = self.last_model
            if current is None:
                current = getattr(topology, "checkpoint_model", topology.model)()
            self.checkpoint = Checkpoint(current, result.samples, epoch, self.best,
                                         (stopping.best, stopping.no_improve))


def drive(run, topology):
    """Run epochs ``first_epoch .. max_iter`` of ``topology`` under its step policy
    (module docstring; the policy is made once the topology has started: a rule
    fit's first snapshot gives it the objective to start from); returns the
    number of epochs run."""
    settings = run.settings
    first, last = settings.first_epoch, settings.max_iter
    topology.start(first, last)
    policy = topology.policy()
    accepted = 0  # epochs of this fit not undone
    for epoch in range(first, last + 1):
        result = topology.epoch(epoch)
        watched = run.record(epoch, result, topology.model)
        step = policy.after(epoch, result, watched)
        final = step is STOP or epoch == last
        if getattr(policy, "rose", False):
            # undo the epoch: the blocks go back to the iterate it started from
            topology.rollback(epoch, final)
            run.last_model = None
            run.history[-1]["event"] = (
                f"objective rose to {result.objective:.6g}: epoch undone (back to "
                f"{policy.previous:.6g}), step halved")
            if policy.hopeless:
                warnings.warn(
                    f"the objective rose in each of the last {policy.in_a_row} epochs "
                    f"(each undone, the step halved to {policy.step:.3g}); the fit stops at "
                    f"objective {policy.previous:.6g}.  The features may be badly scaled "
                    "or collinear: standardise them (sklearn.preprocessing.StandardScaler, "
                    "or MaxAbsScaler for sparse data), or raise alpha", ConvergenceWarning,
                    stacklevel=2)
            elif final and not accepted:
                warnings.warn(
                    f"every epoch of the fit raised the objective (each undone, the step "
                    f"halved to {policy.step:.3g}): it ends where it started, at objective "
                    f"{policy.previous:.6g}.  Lower eta0, standardise the features "
                    "(sklearn.preprocessing.StandardScaler, or MaxAbsScaler for sparse "
                    "data), or raise max_iter", ConvergenceWarning, stacklevel=2)
        else:
            accepted += 1
        run.keep_checkpoint(epoch, result, topology, policy.stopping)
        if final:
            break
        topology.next(epoch, step)
    topology.finish()
    return len(run.history)


def lost_workers(client, workers, patience=5.0):
    """Workers of ``workers`` the scheduler no longer lists (it may take a moment
    to notice a killed process after a call to it failed)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            lost = set(workers) - set(client.nthreads())
        except Exception:  # noqa: BLE001 - the scheduler itself is gone: not recoverable here
            return set()
        if lost or time.monotonic() > deadline:
            return lost
        time.sleep(0.2)


def release(client, actors, loops, waited=None):
    """Stop running loops, then free the actors: nothing is left on the cluster.

    ``waited``: the loops to wait for (default: all; not those of a lost worker,
    whose tasks never end)."""
    if loops:
        for actor in actors:
            if actor.status == "finished":
                try:
                    actor.result().stop().result(10)
                except Exception:  # noqa: BLE001 - best effort on the failure path
                    pass
        # Loops notice the stop at their next exchange; wait so none outlives the fit.
        try:
            wait(loops if waited is None else waited, timeout=30)
        except TimeoutError:
            logger.warning("worker loops still running 30 s after the fit stopped")
        except (Exception, CancelledError):  # noqa: BLE001 - loops failed or were lost
            pass
    client.cancel(list(loops) + list(actors), force=True)


def on_cluster(client, run, actors, body, kept=None):
    """Run ``body()`` with ``actors`` (futures) released afterwards, whatever happens
    (with ``kept``, a :class:`KeptStore`, only when the fit fails: after a
    fit that ends well they stay there for the next); a failure that lost a
    worker becomes :class:`WorkerLost`."""
    workers = sorted(client.nthreads())
    lost = set()
    ended = False
    try:
        result = body()
        ended = True
        return result
    except (Exception, CancelledError) as exc:  # Dask cancels the lost worker's futures
        lost = lost_workers(client, workers)
        if lost:
            raise WorkerLost(lost, run.checkpoint, run.history) from exc
        raise
    finally:
        held = kept is not None and ended
        if kept is not None and not ended:
            actors = list(actors) + kept.forget()  # stopped and freed below
        release(client, [] if held else actors, run.loops, [
            f for f, address in zip(run.loops, run.loop_workers, strict=False)
            if address not in lost])
        if held:
            run.close_driver_links()
        else:
            run.close_channel()
        run._waiter.shutdown(wait=False)


def _unregister(client, channel):
    try:
        client.unregister_worker_plugin(plugin_name(channel))
    except Exception:  # noqa: BLE001 - a lost cluster: nothing left to remove
        pass


class KeptStore:
    """A linear model's store kept on the cluster between fits (``partial_fit``).

    A fit given one takes its actors as they are (coefficients, a rule's
    state, the sample count; see ``BlockServer.begin``) when they serve the
    same layout (``key``: solver, blocks, problem shape and penalty, the
    cluster's workers) on the same client and still hold the model the last
    fit returned; otherwise it builds new ones and keeps those.  A failed
    fit releases them (:func:`on_cluster`); :meth:`release` does it at any
    time, and so does garbage collection of the store (the estimator's end).
    Copies and pickles of a store are empty: actors belong to one process's
    client.
    """

    def __init__(self):
        self._clear()

    def _clear(self):
        self.client = self.key = self.model = self.channel = None
        self.futures, self.refs = [], []
        self._finalizer = None

    def take(self, client, key, model):
        """``(refs, channel)`` of the kept actors if they serve ``key`` on
        ``client`` and hold ``model`` (the fit's start, ``None``: a cold start),
        else ``None``, having released whatever was kept."""
        if (self.futures and self.client is client and self.key == key
                and model is not None and self.model is not None
                and model.shape == self.model.shape and np.array_equal(model, self.model)
                and all(f.status == "finished" for f in self.futures)):
            return self.refs, self.channel
        self.release()
        return None

    def keep(self, client, key, futures, refs, channel):
        """Keep a fit's actors (futures), their refs and its channel."""
        self.release()
        self.client, self.key, self.futures, self.refs = client, key, list(futures), refs
        self.channel = channel
        self._finalizer = weakref.finalize(self, _free_later, client, self.futures, channel)

    def forget(self):
        """Stop keeping anything; returns the actors' futures (the caller frees
        them, with the fit's channel)."""
        futures = self.futures
        if self._finalizer is not None:
            self._finalizer.detach()
        self._clear()
        return futures

    def release(self):
        """Free the kept actors and their channel now."""
        if self._finalizer is not None and self._finalizer.detach() is not None:
            _free(self.client, self.futures, self.channel)
        self._clear()

    def __deepcopy__(self, memo):
        return KeptStore()

    def __reduce__(self):
        return KeptStore, ()


def layout_key(problem):
    """What a kept store must share with a fit to serve it: the problem's shape,
    penalty and update rule (its hyper-parameters)."""
    rule = problem.rule
    return (problem.n_features, problem.n_outputs, problem.fit_intercept, problem.penalty,
            problem.svrg, None if rule is None else (type(rule).__name__,
                                                     tuple(sorted(vars(rule).items()))))


def _free_later(client, futures, channel):
    """:func:`_free` from a thread of its own: garbage collection may run a
    finalizer on the client's event loop, where its blocking calls would not
    run."""
    try:
        threading.Thread(target=_free, args=(client, futures, channel),
                         name="asyncopt-release", daemon=True).start()
    except RuntimeError:  # the interpreter is shutting down: its cluster goes too
        pass


def _free(client, futures, channel):
    if client.status not in ("running", "connecting"):
        return
    try:
        client.cancel(futures, force=True)
    except Exception:  # noqa: BLE001 - a closing cluster: nothing left to free
        pass
    if channel is not None:
        _unregister(client, channel)


def place_loops(requested, nthreads, caps=(), restarted=False):
    """The Dask worker (address) of each of a fit's worker loops (a
    ``RuntimeError`` on a cluster without workers, ``restarted``: left after a
    loss).

    ``nthreads`` maps the Dask workers' addresses to their threads
    (``client.nthreads()``).  ``requested`` is the estimator's ``n_workers``
    (``None``: one loop per worker thread: a worker started with ``--nthreads
    4`` runs four, whose kernels release the GIL; a loop is one long task that
    leaves its worker's thread pool); ``caps`` are ``(limit, reason, fix)``
    triples from the data (a loop needs rows, or users, or a row chunk of its
    own).  The data's limits clip the count: silently for the default, with a
    ``UserWarning`` naming both numbers for an explicit ``n_workers``.  An
    explicit ``n_workers`` above the workers' threads is kept -- loops then
    share threads, which works -- and said in a ``UserWarning``.

    Loops take the threads in turn, every worker's first thread, then every
    worker's second, ...: fewer loops than threads still spread over the
    workers (a worker process, its memory and its link to the others), and
    more loops than threads share them evenly.
    """
    if not nthreads:
        raise RuntimeError("the Dask cluster has no workers" + (" left" if restarted else ""))
    workers = sorted(nthreads)
    slots = [w for k in range(max(nthreads.values())) for w in workers if nthreads[w] > k]
    n = requested or len(slots)
    for limit, reason, fix in caps:
        if n > limit:
            if requested is not None:
                warnings.warn(
                    f"n_workers={requested} but {reason}: the fit runs {max(limit, 1)} "
                    f"worker loop(s){fix}", UserWarning, stacklevel=2)
            n = limit
    n = max(n, 1)
    if requested is not None and n > len(slots):
        loops = f"n_workers={requested}" + (" worker loops" if n == requested else
                                             f" ({n} worker loops)")
        warnings.warn(
            f"{loops} on {len(slots)} Dask worker thread(s) ({len(workers)} worker(s)): "
            f"loops share threads (up to {-(-n // len(slots))} on one), each taking a "
            "share of its thread's CPU.  The fit works, but to run one loop per thread "
            "leave n_workers=None, or add workers (or threads)", UserWarning, stacklevel=2)
    return [slots[i % len(slots)] for i in range(n)]


def with_restarts(client, settings, attempt):
    """``attempt(settings)`` (a :class:`~.config.FitResult`), resumed from the last
    checkpoint on the surviving workers each time a worker is lost."""
    history = []
    while True:
        try:
            result = attempt(settings)
            break
        except TimeoutError as exc:
            # Waits on futures raise a bare TimeoutError: name the setting behind it.
            raise TimeoutError(
                f"{str(exc) or 'an exchange or an epoch'} exceeded the fit's "
                f"timeout={settings.timeout:g} s; pass a larger timeout to the "
                "estimator (a loaded cluster or a long epoch needs more)") from exc
        except WorkerLost as lost:
            resume = lost.checkpoint
            if resume is not None:
                history += [r for r in lost.history if r["epoch"] <= resume.epoch]
                settings = replace(settings, first_epoch=resume.epoch + 1, resume=resume)
            event = (f"lost {', '.join(sorted(lost.lost))}; restarted from epoch "
                     f"{settings.first_epoch - 1}")
            logger.warning("%s (%d workers left)", event, len(client.nthreads()))
            history.append({"epoch": settings.first_epoch - 1, "event": event})
    result.history = history + result.history
    result.n_iter = settings.first_epoch - 1 + result.n_iter
    return result


def epochs_result(run, model, samples):
    """The :class:`~.config.FitResult` of a driven fit: the best model when the
    fit kept one, else ``model``."""
    last = run.settings.first_epoch - 1 + len(run.history)
    if run.best is not None:
        return FitResult(run.best[2], run.history, len(run.history), samples, run.best[1])
    return FitResult(model, run.history, len(run.history), samples, last)


def store_columns(stats, reports, remote_calls):
    """History columns every topology reports: updates applied, their staleness,
    the loops' share of time in kernels and the calls that crossed processes."""
    pushes = sum(s.pushes for s in stats)
    wall = sum(r.wall_time for r in reports)
    return {
        "updates": pushes,
        "staleness_mean": sum(s.staleness_sum for s in stats) / max(pushes, 1),
        "staleness_max": max((s.staleness_max for s in stats), default=0),
        "compute_fraction": sum(r.kernel_time for r in reports) / max(wall, 1e-12),
        "remote_calls": remote_calls,
    }


def stopping(settings, certified=False):
    """The stopping rule of a fit, with the state of the checkpoint it resumes from:
    :class:`~.steps.GapStopping` when the topology ``certified`` its epochs'
    gaps, else scikit-learn's rule."""
    state = settings.resume.stopping if settings.resume is not None else (math.inf, 0)
    rule = GapStopping if certified else EarlyStopping
    return rule(settings.tol, settings.n_iter_no_change, *state)
