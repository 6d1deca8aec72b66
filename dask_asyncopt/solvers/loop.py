"""The worker loop: pull -> sweep -> push until the epoch's samples are done.

Runs as a Dask task on the worker that holds the loop's shard.  A block
server living on the same worker is called directly (its methods take a lock),
others through their actor handles with a timeout on every call, so a lost
peer raises instead of hanging.
"""

import math
import time

import numpy as np
from distributed import Worker, get_worker, secede
from distributed.core import Status

from ..kernels import sweep_csr, sweep_dense


class _Done:
    """An already-completed call, shaped like an ``ActorFuture``."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self, timeout=None):
        return self.value


class _Local:
    """A block server on this worker: direct calls, no network round trip."""

    def __init__(self, server):
        self.server = server

    def pull(self, ids, worker):
        return _Done(self.server.pull(ids, worker))

    def pull_at(self, ids, min_version, timeout):
        return _Done(self.server.pull_when(ids, min_version, timeout))

    def push(self, *args, timeout):
        return _Done(self.server.push(*args, timeout=timeout))


class _Remote:
    """A block server elsewhere, through its actor handle."""

    def __init__(self, actor, bounded):
        self.actor = actor
        self.bounded = bounded

    def pull(self, ids, worker):
        # Short methods run on the actor worker's event loop: no thread hop.
        return self.actor.pull(ids, worker, separate_thread=False)

    def pull_at(self, ids, min_version, timeout):
        return self.actor.pull_at(ids, min_version, timeout)

    def push(self, *args, timeout):
        if self.bounded:  # may wait for admission: off the event loop
            return self.actor.push_at(*args, timeout=timeout)
        return self.actor.push(*args, separate_thread=False)


def bind_servers(actors, bounded):
    """Direct handles for servers in this process, actor handles for the rest.

    With thread workers (the embedded default) every block lives in this
    process: calling it directly skips a round trip through the event loop
    that all in-process workers share, which would otherwise serialise every
    exchange of every loop.  The block's lock keeps calls atomic either way.
    """
    here = {}
    for worker in list(Worker._instances):
        if worker.status in (Status.running, Status.paused):
            here.update(worker.state.actors)
    here.update(get_worker().state.actors)
    return [_Local(here[a.key]) if a.key in here else _Remote(a, bounded) for a in actors]


def _share_dense(delta, prox_d, prox_s, n_loops):
    """Scale a dense chunk's update to a 1/n_loops share.

    Sparse chunks of different workers touch mostly different coordinates, so
    their updates add up (as in Hogwild!).  Dense chunks touch every
    coordinate: each worker's sweep has already fitted the common directions,
    and adding ``n_loops`` such updates overshoots them ``n_loops``-fold (it
    diverges on unscaled data where sequential SGD converges).  Averaging them
    (model averaging) is the safe combination; the proximal map is scaled to
    the same share (exact for pure L1 or pure L2).
    """
    return delta / n_loops, prox_d ** (1.0 / n_loops), prox_s / n_loops


def run_epoch(shard, actors, config, worker, target):
    """Run one worker loop until the global sample count reaches ``target``.

    Parameters
    ----------
    shard : WorkerShard
    actors : list of Actor
        Block servers, in block order.
    config : dict
        ``mode`` ("async"/"sync"), ``problem`` (sweep arguments), ``n_loops``,
        ``timeout``, ``bounded``.
    worker : int
        This loop's index.
    target : int
        Sync rounds stop once this many samples have been processed in total
        (all loops); an asynchronous loop stops after one pass over its shard.

    Returns
    -------
    dict with the loss sum and count of this loop's samples, exchanges, time
    in kernels and wall time.
    """
    secede()  # a long-running task: free the worker's slot for other tasks
    servers = bind_servers(actors, config["bounded"])
    sync = config["mode"] == "sync"
    timeout = config["timeout"]
    prob = config["problem"]
    n_loops = config["n_loops"]
    loss_sum, n_samples, steps, kernel_time = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    # Asynchronous loops each take exactly their own shard once per epoch: were a
    # faster loop to take more, its shard would weigh more in the objective and
    # the iterates would converge to the optimum of that skewed objective.
    while sync or n_samples < shard.n_rows:
        chunk, rows = shard.next_chunk()
        if sync:
            calls = [s.pull_at(ids, shard.round, timeout)
                     for s, ids in zip(servers, chunk.block_ids, strict=True)]
        else:
            calls = [s.pull(ids, worker) for s, ids in zip(servers, chunk.block_ids,
                                                            strict=True)]
        replies = [c.result(timeout) for c in calls]
        samples = max(r[2] for r in replies)
        if sync and samples >= target:
            shard.put_back(chunk)
            break
        w0 = np.concatenate([r[0] for r in replies])
        w = w0.copy()
        tick = time.perf_counter()
        if hasattr(chunk.X, "indptr"):  # CSR chunk
            X = chunk.X
            chunk_loss, prox_d, prox_s = sweep_csr(
                X.indptr, X.indices, X.data, chunk.Y, rows, w, chunk.intercept,
                prob["loss"], prob["schedule"], prob["params"], samples + 1.0,
                float(config["n_loops"]))
        else:
            chunk_loss, prox_d, prox_s = sweep_dense(
                chunk.X, chunk.Y, rows, w, -1, prob["loss"], prob["schedule"],
                prob["params"], samples + 1.0, float(config["n_loops"]))
        delta = w - w0
        if n_loops > 1 and not hasattr(chunk.X, "indptr"):
            delta, prox_d, prox_s = _share_dense(delta, prox_d, prox_s, n_loops)
        kernel_time += time.perf_counter() - tick
        if not (math.isfinite(chunk_loss) and np.isfinite(delta).all()):
            raise FloatingPointError(
                "the loss or the coefficients became non-finite: the step size is too "
                "large for this data; lower eta0 (or alpha with learning_rate='optimal') "
                "or scale the features")
        b = chunk.bounds
        calls = [s.push(worker, ids, delta[b[i]:b[i + 1]], prox_d, prox_s, chunk.n_rows,
                        r[1], timeout=timeout)
                 for i, (s, ids, r) in enumerate(zip(servers, chunk.block_ids, replies,
                                                     strict=True))]
        replies = [c.result(timeout) for c in calls]
        shard.round += 1
        loss_sum += chunk_loss
        n_samples += chunk.n_rows
        steps += 1
    return {
        "worker": worker,
        "loss_sum": loss_sum,
        "samples": n_samples,
        "steps": steps,
        "kernel_time": kernel_time,
        "wall_time": time.perf_counter() - started,
    }
