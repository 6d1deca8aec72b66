"""AD-PSGD for matrix factorisation (``MatrixFactorization(solver="adpsgd")``).

The stratified solvers (:mod:`.mf`) hand each item block to one loop at a
time.  Here nothing is checked out: every worker loop keeps its own users'
rows (its user block, as in the stratified solvers: no other loop rates
those users) and a full **replica of the item rows** in a
:class:`~dask_asyncopt.replica.Replica` on its worker (``n_items x width``
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

import numpy as np
from distributed import secede

from ..mf_kernels import sgd_ratings
from .adpsgd import Gossip, _consensus, _handles, _own
from .mf import _bind


def block_offsets(sizes):
    """Start of each item block's rows in a replica (blocks one after another)."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def run_mf_gossip_epoch(shard, user_actor, replicas, config, worker, epoch):
    """One pass of loop ``worker`` over its strata against its item replica."""
    secede()
    started = time.perf_counter()
    timeout = config["timeout"]
    n_loops = config["n_loops"]
    offsets = config["offsets"]
    n_values = config["n_values"]  # factor and bias columns: what the item step scales
    user_block = _bind([user_actor])[0]
    handles = _handles(replicas)
    me = _own(handles, worker)
    gossip = Gossip(me, handles, worker, n_loops, timeout)
    got = user_block.acquire(worker, None, timeout, timeout)
    if got is None:
        raise TimeoutError(f"user block {worker} not free within {timeout} s")
    U = got[0]
    sse, n_seen, kernel_time, visits = 0.0, 0, 0.0, 0
    try:
        for b in shard.rng.permutation(len(shard.strata)):
            users, items, ratings = shard.strata[b]
            if ratings.shape[0] == 0:
                continue
            ids = np.arange(offsets[b], offsets[b + 1])
            V0, version = me.read(ids)
            V = V0.copy()
            tick = time.perf_counter()
            order = shard.rng.permutation(ratings.shape[0])
            part = sgd_ratings(users, items, ratings, order, U, V, config["mu"],
                               config["eta"], config["reg_factors"], config["reg_biases"],
                               config["rule"], *config["adam"])
            seconds = time.perf_counter() - tick
            kernel_time += seconds
            if not (math.isfinite(part) and np.isfinite(V).all()):
                raise FloatingPointError(
                    "the factors became non-finite: the step size is too large for this "
                    "data; lower eta0 (or use learning_rate='adagrad')")
            delta = np.subtract(V, V0, out=V)
            delta[:, :n_values] *= math.sqrt(n_loops)  # see "Item steps" above
            me.step(ids, delta, 1.0, 0.0, ratings.shape[0], version, part, seconds)
            gossip.tick()
            sse += part
            n_seen += ratings.shape[0]
            visits += 1
        gossip.finish()
    except BaseException:
        user_block.give_back(worker)
        raise
    user_block.release(worker, U, n_seen, timeout)
    return {"worker": worker, "sse": sse, "ratings": n_seen, "visits": visits,
            "exchanges": gossip.n_sent, "kernel_time": kernel_time,
            "wait_time": gossip.wait_time, "wall_time": time.perf_counter() - started}


class GossipItems:
    """How the epochs of :func:`~.mf.fit_mf` reach the item rows under adpsgd."""

    loop = staticmethod(run_mf_gossip_epoch)

    def __init__(self, replicas, layout, timeout):
        self.replicas = replicas
        self.offsets = block_offsets(layout.item_sizes)
        self.timeout = timeout

    def loop_config(self, config, n_values):
        return dict(config, offsets=self.offsets, n_values=n_values)

    def loop_args(self):
        return (self.replicas,)

    def _call_all(self, method, *args):
        calls = [getattr(r, method)(*args) for r in self.replicas]
        return [c.result(self.timeout) for c in calls]

    def after_epoch(self, reports):
        """Average the replicas; their statistics and the history's extra columns."""
        values = self._call_all("values")
        mean, distance = _consensus(values)
        self._call_all("assign", mean)
        stats = self._call_all("stats")
        return stats, {"consensus_distance": distance,
                       "exchanges": sum(r["exchanges"] for r in reports)}

    def item_blocks(self):
        """The (averaged) item rows, one array per item block."""
        rows = self.replicas[0].values().result(self.timeout)
        return [rows[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]
