"""One fit's run on the cluster (``solvers/run.py``): the epoch loop ``drive`` with a small
fake topology (the topologies themselves are tested with their solvers), the history
rows, validation and best model, checkpoints, restarts after a lost worker, the
driver's collection of epoch reports from real loop tasks, and releasing everything."""

import copy
import gc
import logging
import math
import pickle
import time

import numpy as np
import pytest
from distributed import wait

from dask_asyncopt.objective.penalties import ElasticNet
from dask_asyncopt.solvers.config import FitResult, PassReport, Settings, Validation
from dask_asyncopt.solvers.run import (
    Checkpoint,
    EpochResult,
    KeptStore,
    Run,
    WorkerLost,
    drive,
    epochs_result,
    lost_workers,
    on_cluster,
    place_loops,
    release,
    stopping,
    store_columns,
    with_restarts,
)
from dask_asyncopt.solvers.steps import STOP, EarlyStopping
from dask_asyncopt.store.blocks import BlockServer
from dask_asyncopt.store.replies import StoreStats

from ..conftest import cluster_is_clean
from ..integration.deployments import nothing_left


class Policy:
    """Steps 1, 1/2, 1/3, ...; stops after ``stop_after`` epochs."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after
        self.stopping = EarlyStopping(None, 1)
        self.calls = []

    def after(self, epoch, result, watched):
        self.calls.append((epoch, result.objective, watched))
        if self.stop_after is not None and epoch >= self.stop_after:
            return STOP
        return 1.0 / (epoch + 1)


class FakeTopology:
    """A topology without a cluster: its epoch's objective is ``objectives[epoch]``,
    its model a counter of the epochs run."""

    def __init__(self, run, objectives, policy):
        self.run = run
        self.objectives = objectives
        self._policy = policy
        self.log = []
        self.epochs = 0

    def start(self, first, last):
        self.log.append(("start", first, last))

    def policy(self):
        assert self.log[-1][0] == "start"  # made once the topology has started
        return self._policy

    def epoch(self, epoch):
        self.epochs += 1
        self.log.append(("epoch", epoch))
        objective = self.objectives[epoch]
        return EpochResult({"objective": objective, "samples": 10 * epoch}, objective,
                           samples=10 * epoch, step=0.5, log=f"objective {objective}",
                           diverged=f"diverged at {epoch}")

    def next(self, epoch, step):
        self.log.append(("next", epoch, step))

    def finish(self):
        self.log.append(("finish",))

    def model(self):
        self.log.append(("model",))
        return np.full(2, float(self.epochs))


def _run(client, **settings):
    return Run(client, [], [], Settings(**settings), "tok")


def test_drive_runs_every_epoch_then_finishes(client):
    rows = []
    run = _run(client, max_iter=4, callback=rows.append, checkpoint_every=2)
    policy = Policy()
    topology = FakeTopology(run, {e: 1.0 / e for e in range(1, 5)}, policy)
    assert drive(run, topology) == 4
    assert topology.log == [
        ("start", 1, 4), ("epoch", 1), ("next", 1, 0.5), ("epoch", 2), ("model",),
        ("next", 2, 1 / 3), ("epoch", 3), ("next", 3, 0.25), ("epoch", 4), ("model",),
        ("finish",)]  # no next after the last epoch; the model read for checkpoints only
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4] and rows == run.history
    assert [r["objective"] for r in run.history] == [1.0, 0.5, 1 / 3, 0.25]
    times = [r["time"] for r in run.history]
    assert all(t > 0 for t in times) and times == sorted(times)
    assert list(run.history[0]) == ["epoch", "time", "objective", "samples"]
    assert policy.calls == [(e, 1.0 / e, 1.0 / e) for e in range(1, 5)]
    cp = run.checkpoint
    assert isinstance(cp, Checkpoint) and (cp.epoch, cp.samples) == (4, 40)
    np.testing.assert_array_equal(cp.model, 4.0)


def test_drive_stops_on_the_policys_stop_and_resumes_from_first_epoch(client):
    run = _run(client, max_iter=10, first_epoch=3)
    topology = FakeTopology(run, {e: 1.0 for e in range(1, 11)}, Policy(stop_after=5))
    assert drive(run, topology) == 3
    assert [r["epoch"] for r in run.history] == [3, 4, 5]
    assert topology.log[0] == ("start", 3, 10) and topology.log[-1] == ("finish",)
    assert ("next", 5, None) not in topology.log


def test_record_raises_on_a_diverged_objective(client):
    run = _run(client, max_iter=3)
    topology = FakeTopology(run, {1: 2.0, 2: math.inf, 3: 1.0}, Policy())
    with pytest.raises(FloatingPointError, match="diverged at 2"):
        drive(run, topology)
    assert len(run.history) == 1


@pytest.mark.parametrize("lower_is_better", [False, True])
def test_record_scores_validation_and_keeps_the_best_model(client, lower_is_better):
    scores = {1: 0.5, 2: 0.8, 3: 0.6}
    reads = []

    def score(model):
        reads.append(model[0])
        return scores[int(model[0])]

    validation = Validation(score, "valid", lower_is_better=lower_is_better, watch=True,
                            keep_best=True)
    run = _run(client, max_iter=3, validation=validation)
    policy = Policy()
    topology = FakeTopology(run, {1: 3.0, 2: 2.0, 3: 1.0}, policy)
    drive(run, topology)
    assert [r["valid"] for r in run.history] == [0.5, 0.8, 0.6]
    sign = 1.0 if lower_is_better else -1.0
    assert [c[2] for c in policy.calls] == [sign * s for s in (0.5, 0.8, 0.6)]  # watched
    best_epoch = 1 if lower_is_better else 2
    assert run.best[:2] == (sign * scores[best_epoch], best_epoch)
    np.testing.assert_array_equal(run.best[2], best_epoch)
    # the model is read once per epoch, for the score and the checkpoint alike
    assert reads == [1.0, 2.0, 3.0] and topology.log.count(("model",)) == 3
    assert run.checkpoint.best[1] == best_epoch
    result = epochs_result(run, np.full(2, 3.0), 30)
    assert result.best_epoch == best_epoch and result.n_iter == 3 and result.t == 30
    np.testing.assert_array_equal(result.model, best_epoch)


def test_record_logs_each_epoch(client):
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("dask_asyncopt")
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run = _run(client, max_iter=2)
        drive(run, FakeTopology(run, {1: 1.0, 2: 0.5}, Policy()))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["epoch 1: objective 1.0", "epoch 2: objective 0.5"]


def test_checkpoints_every_k_epochs_with_the_stopping_state(client):
    run = _run(client, max_iter=5, checkpoint_every=2)
    stop = EarlyStopping(1e-3, 3)
    kept = []
    for epoch in range(1, 6):
        stop.stalled(1.0)
        run.last_model = None
        run.keep_checkpoint(epoch, EpochResult({}, 1.0, samples=7 * epoch),
                            _Model(lambda e=epoch: e), stop)
        kept.append(run.checkpoint)
    assert [c.epoch if c else None for c in kept] == [None, 2, 2, 4, 4]
    assert kept[3].model == 4 and kept[3].samples == 28 and kept[3].stopping == (1.0, 3)
    never = _run(client, checkpoint_every=0)
    never.last_model = None
    never.keep_checkpoint(1, EpochResult({}, 1.0), _Model(lambda: 1), stop)
    assert never.checkpoint is None


class _Model:
    """A topology's model reads: ``model()``, and ``checkpoint_model()`` when given."""

    def __init__(self, model, checkpoint_model=None):
        self.model = model
        if checkpoint_model is not None:
            self.checkpoint_model = checkpoint_model


def test_checkpoints_take_the_topologys_checkpoint_model(client):
    """A topology with ``checkpoint_model`` (changes since the last checkpoint) is
    checkpointed through it, not through a read of the whole model; a model the
    epoch read already (validation) is taken as it is."""
    run = _run(client, max_iter=3, checkpoint_every=1)
    stop = EarlyStopping(1e-3, 3)
    reads = []
    topology = _Model(lambda: reads.append("model") or "whole",
                      lambda: reads.append("changes") or "updated")
    run.last_model = None
    run.keep_checkpoint(1, EpochResult({}, 1.0, samples=3), topology, stop)
    assert run.checkpoint.model == "updated" and reads == ["changes"]
    run.last_model = "validated"
    run.keep_checkpoint(2, EpochResult({}, 1.0, samples=6), topology, stop)
    assert run.checkpoint.model == "validated" and reads == ["changes"]


def test_with_restarts_resumes_from_the_last_checkpoint(client):
    """Each lost worker: the rows up to the checkpoint are kept, an event row added, and
    the next attempt resumes after the checkpoint's epoch."""
    attempts = []
    checkpoint = Checkpoint("model@2", 20, 2, None, (0.5, 1))

    def attempt(settings):
        attempts.append((settings.first_epoch, settings.resume))
        if len(attempts) == 1:  # lost during epoch 3, checkpoint after epoch 2
            rows = [{"epoch": e, "objective": 1.0 / e} for e in (1, 2, 3)]
            raise WorkerLost({"tcp://a:1"}, checkpoint, rows)
        if len(attempts) == 2:  # lost before any checkpoint of this attempt
            raise WorkerLost({"tcp://b:2", "tcp://c:3"}, checkpoint, [])
        return FitResult("final", [{"epoch": 3}, {"epoch": 4}], 2, 40, 4)

    result = with_restarts(client, Settings(max_iter=4), attempt)
    assert attempts == [(1, None), (3, checkpoint), (3, checkpoint)]
    assert result.history == [
        {"epoch": 1, "objective": 1.0}, {"epoch": 2, "objective": 0.5},
        {"epoch": 2, "event": "lost tcp://a:1; restarted from epoch 2"},
        {"epoch": 2, "event": "lost tcp://b:2, tcp://c:3; restarted from epoch 2"},
        {"epoch": 3}, {"epoch": 4}]
    assert result.n_iter == 4 and result.model == "final"


def test_with_restarts_without_a_checkpoint_starts_over(client):
    calls = []

    def attempt(settings):
        calls.append(settings.first_epoch)
        if len(calls) == 1:
            raise WorkerLost({"tcp://x:1"}, None, [{"epoch": 1}])
        return FitResult("m", [{"epoch": 1}], 1)

    result = with_restarts(client, Settings(max_iter=1), attempt)
    assert calls == [1, 1]
    assert result.history == [{"epoch": 0, "event": "lost tcp://x:1; restarted from epoch 0"},
                              {"epoch": 1}]
    assert result.n_iter == 1


def test_with_restarts_passes_other_errors_through(client):
    def attempt(settings):
        raise ValueError("not a lost worker")

    with pytest.raises(ValueError, match="not a lost worker"):
        with_restarts(client, Settings(), attempt)


def test_stopping_takes_the_resumed_state():
    fresh = stopping(Settings(tol=0.1, n_iter_no_change=4))
    assert (fresh.tol, fresh.patience, fresh.best, fresh.no_improve) == (0.1, 4, math.inf, 0)
    resumed = stopping(Settings(resume=Checkpoint(None, 0, 3, None, (0.7, 2))))
    assert (resumed.best, resumed.no_improve) == (0.7, 2)


def test_store_columns():
    stats = [StoreStats(0, 5, pushes=4, staleness_sum=6, staleness_max=3),
             StoreStats(1, 5, pushes=2, staleness_sum=0, staleness_max=0)]
    reports = [PassReport(0, 0.0, 10, kernel_time=1.0, wall_time=4.0),
               PassReport(1, 0.0, 10, kernel_time=2.0, wall_time=2.0)]
    assert store_columns(stats, reports, 7) == {
        "updates": 6, "staleness_mean": 1.0, "staleness_max": 3, "compute_fraction": 0.5,
        "remote_calls": 7}
    assert store_columns([], [], 0) == {"updates": 0, "staleness_mean": 0.0,
                                         "staleness_max": 0, "compute_fraction": 0.0,
                                         "remote_calls": 0}


def test_epochs_result_without_a_best_model(client):
    run = _run(client, first_epoch=3)
    run.history = [{"epoch": 3}, {"epoch": 4}]
    result = epochs_result(run, "model", 99)
    assert (result.model, result.n_iter, result.t, result.best_epoch) == ("model", 2, 99, 4)


def test_lost_workers_asks_the_scheduler(client):
    workers = sorted(client.nthreads())
    assert lost_workers(client, workers, patience=0.0) == set()
    gone = "tcp://127.0.0.1:1"
    assert lost_workers(client, workers + [gone], patience=0.0) == {gone}


def _block(client, n_workers=2, **kw):
    return client.submit(BlockServer, 0, 1, 3, 1, ElasticNet(), -1, "async", n_workers, None,
                         actor=True, pure=False, **kw)


def test_on_cluster_releases_actors_and_reraises(client):
    run = _run(client)
    fut = _block(client)

    def body():
        run.actors = [fut.result(30)]
        raise KeyError("boom")  # no worker was lost: the error itself

    with pytest.raises(KeyError, match="boom"):
        on_cluster(client, run, [fut], body)
    assert cluster_is_clean(client)
    fut = _block(client)
    assert on_cluster(client, _run(client), [fut], lambda: 42) == 42
    assert cluster_is_clean(client)


def test_kept_store_serves_the_same_layout_and_model_only(client):
    """``partial_fit``'s store between calls: ``take`` hands the kept actors back only
    on the same client and layout key and for the model the last fit returned;
    anything else releases them, as ``release`` and the store's garbage collection
    do (nothing is left on the cluster).  ``forget`` hands them over instead;
    copies and pickles of a store are empty."""
    model = np.arange(3.0)

    def kept_block(kept):
        kept.keep(client, "layout", [_block(client)], ["ref"], None)
        wait(kept.futures)
        kept.model = model
        return kept

    kept = kept_block(KeptStore())
    assert kept.take(client, "layout", model.copy()) == (["ref"], None)  # served, kept
    assert kept.take(client, "layout", model) == (["ref"], None)
    assert copy.deepcopy(kept).futures == [] and pickle.loads(pickle.dumps(kept)).refs == []
    for key, start in [("other layout", model), ("layout", model + 1), ("layout", None),
                       ("layout", model[:2])]:
        assert kept.take(client, key, start) is None  # released
        assert kept.futures == [] and cluster_is_clean(client)
        kept = kept_block(kept)
    kept.release()
    assert cluster_is_clean(client)
    kept = kept_block(KeptStore())
    del kept  # the estimator's end: its store's finalizer frees the actors
    gc.collect()
    assert cluster_is_clean(client)
    kept = kept_block(KeptStore())
    futures = kept.forget()  # a failed fit frees them itself, with its own actors
    assert len(futures) == 1 and kept.take(client, "layout", model) is None
    assert not cluster_is_clean(client, wait=0.0)
    client.cancel(futures, force=True)
    del futures
    assert cluster_is_clean(client)


def _wait_for_stop(block):
    """A loop that waits at a barrier (as loops do: directly, or through the actor's
    async twin) until the fit is stopped."""
    from dask_asyncopt.solvers.handles import bind
    from dask_asyncopt.store.blocks import FitStopped

    try:
        bind([block])[0].wait("arrive", "never", 0, 120.0).result(130)
    except FitStopped:
        return "stopped"
    return "passed"


@pytest.mark.parametrize("where", ["client", "process_client"])
def test_release_stops_running_loops_then_frees_the_actors(request, where):
    """The loop is woken by the stop, not by its 120 s timeout nor by the cancel after
    the 30 s release waits at most (which would log a warning)."""
    client = request.getfixturevalue(where)
    fut = _block(client)
    actor = fut.result(30)
    loop = client.submit(_wait_for_stop, actor, pure=False)
    warnings = []

    class Collect(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logger = logging.getLogger("dask_asyncopt")
    handler = Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        assert not loop.done()
        del actor
        release(client, [fut], [loop])
    finally:
        logger.removeHandler(handler)
    assert warnings == []
    assert loop.status in ("finished", "cancelled")
    assert cluster_is_clean(client)


def _post_after(shard, actors, config, worker, delay, epoch, fail=False):
    """A worker loop's task (as ``Run.start_loops`` submits it) ending with its last
    epoch's post, loop 1 ``delay`` seconds after loop 0 (or failing instead)."""
    time.sleep(delay * worker)
    if fail and worker == 1:
        raise ValueError("a loop failed")
    actors[0].post_epoch(epoch, worker, worker).result(10)
    return {"worker": worker}


@pytest.mark.parametrize("where", ["client", "process_client"])
def test_driver_collects_epochs_and_sees_failed_loops(request, where):
    """``Run.epoch_reports``: a loop whose task already ended (after its last post)
    is no failure while a slower one has yet to post; a failed loop's error is
    raised as soon as its task ends (its end wakes the driver: no polling, no wait
    for the timeout).  Direct calls on a thread cluster, actor calls on a process
    cluster."""
    client = request.getfixturevalue(where)
    fut = client.submit(BlockServer, 0, 1, 3, 1, ElasticNet(), -1, "async", 2, None,
                        actor=True, key=f"test-handoff-driver-{where}")
    workers = sorted(client.nthreads())
    # a timeout no test machine reaches: a failure noticed only at the timeout fails
    run = Run(client, [None, None], workers[:2], Settings(timeout=600), f"t-{where}")
    try:
        run.actors = [fut.result(timeout=10)]
        for epoch, fail in ((1, False), (2, True)):
            run.epochs = (epoch - 1, 2)
            run.start_loops(_post_after, "test", epoch, 0.4, epoch, fail)
            assert run.handles()[0].local == (where == "client")
            if fail:
                started = time.monotonic()
                with pytest.raises(ValueError, match="a loop failed"):
                    run.epoch_reports(epoch)
                assert time.monotonic() - started < 300  # woken by the failed task
            else:
                assert run.epoch_reports(epoch) == [0, 1]
                assert run.epochs == (1, 2)
            run.loops.clear()
        # call_blocks: every actor at once, direct calls for those in this process
        assert [s.block for s in run.call_blocks("stats")] == [0]
    finally:
        # as a failed fit's release: the stop wakes the driver's wait for the reports
        fut.result(10).stop().result(10)
        run._waiter.shutdown(wait=True)
        client.cancel([fut] + run.loops, force=True)


def test_loops_take_the_workers_threads_in_turn():
    """One loop per worker thread by default, every worker's first thread before any
    second one; an explicit count above the threads shares them, with a warning; the
    data's limits clip (silently for the default); no workers is an error."""
    import warnings

    threads = {"tcp://b:1": 1, "tcp://a:1": 2}
    a, b = "tcp://a:1", "tcp://b:1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert place_loops(None, threads) == [a, b, a]
        assert place_loops(2, threads) == [a, b]
        assert place_loops(None, threads, [(2, "X has 2 row(s)", "")]) == [a, b]
    with pytest.warns(UserWarning, match=r"n_workers=5 worker loops on 3 Dask worker "
                                         r"thread\(s\) \(2 worker\(s\)\): loops share "
                                         r"threads \(up to 2 on one\)"):
        assert place_loops(5, threads) == [a, b, a, a, b]
    with pytest.raises(RuntimeError, match="has no workers$"):
        place_loops(None, {})
    with pytest.raises(RuntimeError, match="has no workers left"):
        place_loops(None, {}, restarted=True)


@pytest.mark.slow  # a failed fit waits for the scheduler to tell a lost worker
@pytest.mark.parametrize("model", ["asyb", "adpsgd", "factors"])
def test_a_fit_past_its_timeout_names_the_setting_and_leaves_nothing(process_client, model):
    """No exchange between processes is answered within a nanosecond: the fit
    fails with a TimeoutError naming the setting and its fix, whichever wait
    failed first (a wait on a future, an exchange, a link's connection, which
    Dask reports as an OSError), and releases everything it placed."""
    from dask_asyncopt import AsyncSGDClassifier, MatrixFactorization

    rng = np.random.default_rng(0)
    if model == "factors":
        est = MatrixFactorization(timeout=1e-9, max_iter=2)
        X, y = np.c_[rng.integers(0, 40, 400), rng.integers(0, 30, 400)], rng.normal(size=400)
    else:
        est = AsyncSGDClassifier(timeout=1e-9, max_iter=2, solver=model)
        X, y = rng.normal(size=(400, 5)), rng.integers(0, 2, 400)
    with process_client.as_current(), pytest.raises(
            TimeoutError, match=r"timeout=1e-09 s; pass a larger timeout"):
        est.fit(X, y)
    assert nothing_left(process_client)
