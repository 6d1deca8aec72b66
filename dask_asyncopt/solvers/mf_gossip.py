"""AD-PSGD for matrix factorisation (``MatrixFactorization(solver="adpsgd")``).

The stratified solvers (:mod:`.mf`) hand each item block to one loop at a
time.  Here nothing is checked out: every worker loop keeps its own users'
rows (its user block, as in the stratified solvers: no other loop rates
those users) and a full **replica of the item rows** in a
:class:`~dask_asyncopt.store.replicas.Replica` on its worker (``n_items x width``
packed rows, the step state included).  A loop sweeps its strata in a random
order, each on a copy of the replica's rows of that item block, adds the
change to its replica, and - active loops - averages the whole replica with
a passive peer (the sum-preserving exchange and peer graph of
:mod:`.adpsgd`).  At the end of an epoch the driver averages the replicas
(the history reports the consensus distance before) and writes the mean
back; the model is that mean.

Averaging covers the whole packed rows, AdaGrad's ``G`` and AMSGrad's
moments included: each replica's state then follows the rows it holds (as
for the linear models, where averaging or keeping moments per replica
measured the same).

**Item steps.**  The average of ``n`` replicas moves by the mean of their
item changes, so a loop's item change counts ``1/n`` in the model while its
user change counts fully.  The loops scale the factor and bias columns of
their item change by ``sqrt(n)``: measured on 2 and 3 process workers (4000
x 2000 users x items, 270k ratings, 16 factors, 8 epochs, AdaGrad; test
RMSE): 2 loops x1 0.617, x1.41 0.604, x2 0.624; 3 loops x1 0.639, x1.5
0.618, x1.73 0.610, x3 diverged (train RMSE rose to 1.29 by epoch 5); the
stratified ``asyb`` solver 0.596-0.598.  With the default 20 epochs on 2
thread workers (rank-10 data, test RMSE / noise sigma, seeds 0 and 1):
AdaGrad 1.2139-1.2158 (2k x 1k, 100k ratings) and 1.2234-1.2237 (10k x 5k,
500k), ``asyb`` 1.2145-1.2159 and 1.2225-1.2233; AMSGrad 1.2428-1.2505 and
1.2445-1.2448, ``asyb`` 1.2431-1.2445 and 1.2416-1.2425.
"""

import math
import time
from dataclasses import replace

import numpy as np
from distributed import secede

from ..kernels.factors import row_width, sgd_ratings
from ..store.factors import initial_rows
from ..store.replicas import Replica
from .adpsgd import Gossip, consensus, own_replica
from .config import PassReport
from .handles import bind, remote_calls
from .mf import diverged, load_kernel


def block_offsets(sizes):
    """Start of each item block's rows in a replica (blocks one after another)."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def run_mf_gossip_epoch(shard, user_actor, replicas, config, worker, epoch):
    """One pass of loop ``worker`` over its strata against its item replica."""
    secede()
    started = time.perf_counter()
    load_kernel(config)
    timeout = config.timeout
    n_loops = config.n_loops
    offsets = config.offsets
    n_values = config.n_values  # factor and bias columns: what the item step scales
    user_block = bind([user_actor], loop=worker, config=config)[0]
    handles = bind(replicas, loop=worker, config=config)
    me = own_replica(handles, worker)
    gossip = Gossip(me, handles, worker, n_loops, timeout)
    got = user_block.wait("acquire", worker, None, timeout).result(timeout)
    if got is None:
        raise TimeoutError(f"user block {worker} not free within {timeout} s")
    U = got.rows
    sse, n_seen, kernel_time, visits = 0.0, 0, 0.0, 0
    try:
        for b in shard.rng.permutation(len(shard.strata)):
            users, items, ratings = shard.strata[b]
            if ratings.shape[0] == 0:
                continue
            ids = np.arange(offsets[b], offsets[b + 1])
            read = me.read(ids)
            V = read.values.copy()
            tick = time.perf_counter()
            order = shard.rng.permutation(ratings.shape[0])
            part = sgd_ratings(users, items, ratings, order, U, V, config.mu, config.eta,
                               config.reg_factors, config.reg_biases, config.rule,
                               *config.adam)
            seconds = time.perf_counter() - tick
            kernel_time += seconds
            if not (math.isfinite(part) and np.isfinite(V).all()):
                raise diverged(config)
            delta = np.subtract(V, read.values, out=V)
            delta[:, :n_values] *= math.sqrt(n_loops)  # see "Item steps" above
            me.step(ids, delta, 1.0, 0.0, ratings.shape[0], read.version, part, seconds)
            gossip.tick()
            sse += part
            n_seen += ratings.shape[0]
            visits += 1
        gossip.finish()
    except BaseException:
        user_block.call("give_back", worker).result(10)
        raise
    user_block.call("release", worker, U, n_seen).result(timeout)
    return PassReport(worker, sse, n_seen, kernel_time, time.perf_counter() - started,
                      steps=visits, exchanges=gossip.n_sent, wait_time=gossip.wait_time,
                      remote_calls=remote_calls([user_block, *handles]))


class GossipItems:
    """How the epochs reach the item rows under adpsgd: one replica per loop."""

    loop = staticmethod(run_mf_gossip_epoch)

    @staticmethod
    def submit(client, layout, problem, seed, inits, loop_workers, token):
        """One :class:`~dask_asyncopt.store.replicas.Replica` of all item rows per loop,
        on the loop's worker."""
        width = row_width(problem.n_factors, problem.rule)
        items = np.concatenate([
            initial_rows(int(size), problem.n_factors, problem.init_scale, [seed, 1, b], width)
            if inits[b] is None else inits[b] for b, size in enumerate(layout.item_sizes)])
        n_loops = len(loop_workers)
        return [client.submit(Replica, w, n_loops, items.shape[0], width, -1, items,
                              actor=True, workers=[addr], key=f"asyncopt-mf-items-{w}-{token}")
                for w, addr in enumerate(loop_workers)]

    def __init__(self, handles, layout, timeout):
        self.handles = handles
        self.offsets = block_offsets(layout.item_sizes)
        self.timeout = timeout

    def loop_config(self, config, n_values):
        return replace(config, offsets=self.offsets, n_values=n_values)

    def loop_args(self):
        return ([h.ref for h in self.handles],)

    def loop_kwargs(self, solver):
        return {}

    def _call_all(self, method, *args):
        calls = [h.call(method, *args) for h in self.handles]
        return [c.result(self.timeout) for c in calls]

    def after_epoch(self, reports):
        """Average the replicas; their statistics and the history's extra columns."""
        values = self._call_all("values")
        mean, distance = consensus(values)
        self._call_all("assign", mean)
        stats = self._call_all("stats")
        return stats, {"consensus_distance": distance,
                       "exchanges": sum(r.exchanges for r in reports)}

    def item_blocks(self):
        """The (averaged) item rows, one array per item block."""
        rows = self.handles[0].call("values").result(self.timeout)
        return [rows[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]
