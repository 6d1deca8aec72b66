"""Stratified asynchronous SGD for matrix factorisation (DSGD / NOMAD style).

Layout (built by :func:`stratify`):

* users are split into one **user block per worker loop** (balanced by
  ratings); the loop owns all ratings of its users, so its user block is
  touched by it alone and lives in an actor on the loop's own worker (read
  directly, never shipped);
* items are split into ``n_blocks`` **item blocks** (actors spread over the
  workers); a loop's ratings are grouped into strata, one per item block.

An epoch: every loop visits each item block once.  A visit checks the item
block out (exclusive), runs the Numba per-rating SGD kernel over the stratum
(user block x item block) on local copies, and checks it back in.  Two loops
never hold the same item block, and never share users, so every rating is
applied to current values: SGD stays serialisable (no stale reads; the store
measures staleness and reports it, 0 by construction).

* ``"asyb"``: a loop takes any free item block it has not visited this epoch
  (NOMAD-like token passing, no barrier): a slow loop only holds up the block
  it holds.  Each loop still makes exactly one pass over its ratings per
  epoch, so no shard is over-weighted.
* ``"sync"``: DSGD's fixed schedule: at sub-epoch ``s`` loop ``w`` takes
  block ``(w + s) mod n_blocks``, in ticket order per block, which makes the
  fit deterministic for an int ``random_state``.
* ``"adpsgd"``: no item blocks to check out; every loop keeps a replica of
  all item rows and gossips it (:mod:`.mf_gossip`).  The epochs below drive
  either item side through the same small interface (:class:`CheckedOutItems`,
  :class:`~.mf_gossip.GossipItems`).
"""

import math
import time
from dataclasses import dataclass

import numpy as np
from distributed import secede, wait

from ..kernels.factors import RULE_SGD, n_factors_of, predict_pairs, row_width, sgd_ratings
from ..store.factors import CheckoutTable, FactorBlock
from .config import PassReport
from .handles import bind, remote_calls


# --------------------------------------------------------------------- layout
def balanced_blocks(counts, n_blocks, rng):
    """Assign ids to ``n_blocks`` blocks with near-equal rating totals.

    Ids are taken in a random order and cut where the running total of
    ratings crosses each ``1/n_blocks`` share (a random order keeps popular
    ids spread; cutting by ratings rather than ids balances the work of
    power-law data).  Returns ``(block of each id, row of each id within its
    block, size of each block)``.
    """
    n = counts.shape[0]
    order = rng.permutation(n)
    total = np.cumsum(counts[order], dtype=np.float64)
    share = total[-1] / n_blocks if n and total[-1] > 0 else 1.0
    # (total - counts/2) places each id by its midpoint: a very popular id
    # does not drag a whole share with it
    block_in_order = np.minimum(((total - counts[order] / 2.0) // share).astype(np.int64),
                                n_blocks - 1)
    block = np.empty(n, dtype=np.int64)
    block[order] = block_in_order
    sizes = np.bincount(block, minlength=n_blocks)
    # rows within a block in id order: the ids sorted by block, numbered from the
    # start of their block
    by_block = stable_order(block, n_blocks)
    starts = np.cumsum(sizes) - sizes
    row = np.empty(n, dtype=np.int64)
    row[by_block] = np.arange(n) - starts[block[by_block]]
    return block, row, sizes


@dataclass
class Layout:
    """Which block and row every user and item lives in."""

    user_block: np.ndarray
    user_row: np.ndarray
    user_sizes: np.ndarray
    item_block: np.ndarray
    item_row: np.ndarray
    item_sizes: np.ndarray

    def gather(self, user_blocks, item_blocks):
        """Full ``(U, V)`` packed arrays in id order from per-block rows."""
        return (_gather(user_blocks, self.user_block, self.user_row, self.user_sizes),
                _gather(item_blocks, self.item_block, self.item_row, self.item_sizes))

    def split(self, U, V):
        """Per-block rows from full ``(U, V)`` arrays (warm start)."""
        return _split(U, self.user_block, self.user_row, self.user_sizes), _split(
            V, self.item_block, self.item_row, self.item_sizes)


def _flat_index(block, row, sizes):
    return np.concatenate([[0], np.cumsum(sizes)])[block] + row


def _gather(blocks, block, row, sizes):
    """The rows of ``blocks`` in id order, each block written straight to its ids'
    rows (no concatenated copy of the whole side first)."""
    ids = np.empty(block.shape[0], dtype=np.int64)  # id at each position of the blocks
    ids[_flat_index(block, row, sizes)] = np.arange(block.shape[0])
    out = np.empty((block.shape[0], blocks[0].shape[1]), dtype=blocks[0].dtype)
    start = 0
    for rows in blocks:
        out[ids[start:start + rows.shape[0]]] = rows
        start += rows.shape[0]
    return out


def _split(W, block, row, sizes):
    out = [np.empty((s, W.shape[1])) for s in sizes]
    for b in range(len(sizes)):
        mask = block == b
        out[b][row[mask]] = W[mask]
    return out


def layout_of(user_counts, item_counts, n_loops, n_blocks, rng):
    """The :class:`Layout` of ratings counted per user and per item: users in
    ``n_loops`` blocks, items in ``n_blocks``, each balanced by ratings."""
    user_block, user_row, user_sizes = balanced_blocks(user_counts, n_loops, rng)
    item_block, item_row, item_sizes = balanced_blocks(item_counts, n_blocks, rng)
    return Layout(user_block, user_row, user_sizes, item_block, item_row, item_sizes)


def stable_order(blocks, n_blocks):
    """``np.argsort(blocks, kind="stable")`` of block numbers ``0..n_blocks-1``,
    in time linear in the ratings: as 16-bit keys NumPy's stable sort is a radix
    sort (a comparison sort of 64-bit keys is not, and was the bulk of
    stratifying millions of ratings)."""
    if n_blocks <= np.iinfo(np.int16).max:
        blocks = blocks.astype(np.int16)
    return np.argsort(blocks, kind="stable")


def loop_strata(users, items, ratings, layout):
    """One loop's strata from its ratings (``users``/``items``: rows in id order):
    ``strata[b] = (user rows, item rows, ratings)`` of item block ``b``, rows local
    to the blocks, each stratum in the order of the ratings given."""
    n_blocks = len(layout.item_sizes)
    ib = layout.item_block[items]
    order = stable_order(ib, n_blocks)
    bounds = np.searchsorted(ib[order], np.arange(n_blocks + 1))
    strata = []
    for b in range(n_blocks):
        sel = order[bounds[b]:bounds[b + 1]]
        strata.append((layout.user_row[users[sel]].astype(np.int32),
                       layout.item_row[items[sel]].astype(np.int32),
                       np.ascontiguousarray(ratings[sel], dtype=np.float64)))
    return strata


def stratify(users, items, ratings, n_users, n_items, n_loops, n_blocks, rng):
    """Build the layout and each loop's strata.

    Returns ``(layout, parts)`` with ``parts[w][b] = (user rows, item rows,
    ratings)`` of loop ``w``'s ratings in item block ``b``, rows local to the
    blocks.
    """
    layout = layout_of(np.bincount(users, minlength=n_users),
                       np.bincount(items, minlength=n_items), n_loops, n_blocks, rng)
    ub = layout.user_block[users]
    order = stable_order(ub, n_loops)
    bounds = np.searchsorted(ub[order], np.arange(n_loops + 1))
    parts = []
    for w in range(n_loops):
        sel = order[bounds[w]:bounds[w + 1]]
        parts.append(loop_strata(users[sel], items[sel], ratings[sel], layout))
    return layout, parts


# ------------------------------------------------- ratings already on the cluster
def rating_counts(part, n_users, n_items):
    """Ratings per user and per item of one part ``(users, items, ratings)``."""
    return (np.bincount(part[0], minlength=n_users),
            np.bincount(part[1], minlength=n_items))


def sum_counts(*counts):
    """The sum of :func:`rating_counts` of several parts."""
    return (np.sum([c[0] for c in counts], axis=0, dtype=np.int64),
            np.sum([c[1] for c in counts], axis=0, dtype=np.int64))


def split_by_loop(part, layout):
    """One part's ratings cut by the loop that owns their user: a tuple of one
    ``(users, items, ratings)`` piece per loop, each in the part's order."""
    users, items, ratings = part
    ub = layout.user_block[users]
    order = stable_order(ub, len(layout.user_sizes))
    bounds = np.searchsorted(ub[order], np.arange(len(layout.user_sizes) + 1))
    return tuple((users[sel], items[sel], ratings[sel])
                 for sel in (order[bounds[w]:bounds[w + 1]]
                             for w in range(len(layout.user_sizes))))


def piece(pieces, w):
    """Loop ``w``'s piece of :func:`split_by_loop`'s result."""
    return pieces[w]


def shard_from_pieces(layout, seed, *pieces):
    """A loop's :class:`RatingShard` from its pieces of every part, in part order
    (so its ratings are in the order of the whole collection)."""
    users, items, ratings = (np.concatenate([p[c] for p in pieces]) if pieces
                             else np.zeros(0) for c in range(3))
    return RatingShard(loop_strata(users.astype(np.int64), items.astype(np.int64),
                                   ratings, layout), seed)


def place_rating_parts(client, parts, n_ids, loop_workers, n_blocks, rng, token):
    """Place ratings held by the cluster as the loops' shards, never through the
    client.

    ``parts``: dask ``Delayed`` objects, each computing to ``(users, items,
    ratings)`` (rows in id order).  They are computed where the scheduler puts
    them; the client receives only the ratings per user and per item (for the
    layout); each part is cut by loop (:func:`split_by_loop`) where it lies and
    each loop's worker fetches its pieces from the others (an all-to-all shuffle
    of the ratings by user block, worker to worker).  Draws from ``rng`` as
    :func:`stratify` does, then one shard seed per loop.  Returns ``(layout,
    shards)``.
    """
    futures = client.compute(list(parts))
    temporary = list(futures)
    try:
        counts = [client.submit(rating_counts, f, *n_ids, pure=False) for f in futures]
        total = client.submit(sum_counts, *counts, pure=False)
        temporary += [*counts, total]
        user_counts, item_counts = total.result()
        layout = layout_of(user_counts, item_counts, len(loop_workers), n_blocks, rng)
        layout_f = client.scatter(layout, hash=False)
        pieces = [client.submit(split_by_loop, f, layout_f, pure=False) for f in futures]
        temporary += [layout_f, *pieces]
        shards = []
        for w, addr in enumerate(loop_workers):
            mine = [client.submit(piece, p, w, pure=False) for p in pieces]
            temporary += mine
            shards.append(client.submit(
                shard_from_pieces, layout_f, int(rng.integers(2**31)), *mine,
                workers=[addr], allow_other_workers=False, pure=False,
                key=f"asyncopt-mf-shard-{w}-{token}"))
        try:
            wait(shards)
            for f in shards:
                if f.status == "error":
                    f.result()  # a part's error, raised here
        except BaseException:
            client.cancel(shards)
            raise
    finally:
        # release, not cancel: cancelling a key cancels its dependents (the shards)
        for f in temporary:
            f.release()
    return layout, shards


def held_out_sse(model, part, mu, rule):
    """Squared error sum and count of packed ``(U, V)`` on one part of held-out
    ratings ``(users, items, ratings)`` (runs where the part lies)."""
    users, items, ratings = part
    if users.shape[0] == 0:
        return 0.0, 0
    error = ratings - predictions(model, mu, users, items, rule)
    return float(error @ error), int(users.shape[0])


class RatingShard:
    """One loop's strata, kept in its worker's memory across epochs."""

    def __init__(self, strata, seed):
        self.strata = strata
        self.rng = np.random.default_rng(seed)
        self.n_ratings = sum(s[2].shape[0] for s in strata)


def make_rating_shard(strata, seed):
    return RatingShard(strata, seed)


# ----------------------------------------------------------------- the loop
def sync_ticket(epoch, worker, block, n_loops, n_blocks):
    """Version at which ``worker`` may take ``block`` in ``epoch`` under DSGD.

    At sub-epoch ``s`` loop ``w`` visits block ``(w + s) % n_blocks``; a
    block is visited by every loop once per epoch, in increasing ``s`` and,
    with fewer blocks than loops (several loops at one sub-epoch), increasing
    ``w``: every visit waits only for visits earlier in that order, so the
    schedule cannot deadlock.
    """
    s = (block - worker) % n_blocks
    before = sum(1 for w in range(n_loops)
                 if ((block - w) % n_blocks, w) < (s, worker))
    return epoch * n_loops + before


def diverged(config):
    hint = ("lower eta0" if config.rule != RULE_SGD else
            "lower eta0, or use learning_rate='adagrad'")
    return FloatingPointError(
        "the factors became non-finite: the step size is too large for this data; "
        f"{hint}, or scale ratings far from 1 (e.g. y / y.std())")


def load_kernel(config):
    """Load the rating kernel (for ``config.rule``) in this process on no ratings.

    Called by every loop before it holds anything: a fresh worker process (a
    nanny's restart after a lost worker, say) loads or compiles the kernel on
    its first call, which on a loaded machine can outlast another loop's wait
    for a block it holds; that loop's ``timeout`` would then blame a live,
    merely slow, loop.  Holding a block never includes loading the kernel.
    """
    none, rows = np.empty(0, np.int32), np.empty((0, 2))
    sgd_ratings(none, none, np.empty(0), np.empty(0, np.int64), rows, rows, config.mu,
                config.eta, config.reg_factors, config.reg_biases, config.rule, *config.adam)


def run_mf_epoch(shard, user_actor, item_actors, config, worker, epoch, table=None):
    """One pass of loop ``worker`` over its strata; returns its report.

    ``sync``: DSGD's schedule, each check-out at its ticket.  ``asyb``: the
    check-out ``table`` hands the loop whichever block it has not visited
    this epoch is free first (one call, no polling).  Check-ins are posted
    at once without waiting for a reply (the block's next holder waits for
    them at the block).
    """
    secede()  # a long-running task: free the worker's slot
    started = time.perf_counter()
    load_kernel(config)
    timeout = config.timeout
    sync = config.solver == "sync"
    user_block = bind([user_actor], loop=worker, config=config)[0]
    blocks = bind(item_actors, loop=worker, config=config)
    checkout = None if table is None else bind([table], loop=worker, config=config)[0]
    n_blocks = len(blocks)
    n_loops = config.n_loops
    got = user_block.wait("acquire", worker, None, timeout).result(timeout)
    if got is None:
        raise TimeoutError(f"user block {worker} not free within {timeout} s")
    U = got.rows
    sse, n_seen, kernel_time, wait_time, visits = 0.0, 0, 0.0, 0.0, 0
    if sync:
        todo = [(worker + s) % n_blocks for s in range(n_blocks)]
    else:
        todo = [int(b) for b in shard.rng.permutation(n_blocks)]
    try:
        while todo:
            tick = time.perf_counter()
            if sync:
                b = todo.pop(0)
                ticket = sync_ticket(epoch - config.first_epoch, worker, b, n_loops, n_blocks)
            else:
                b = checkout.wait("acquire_any", worker, todo, timeout).result(timeout)
                if b is None:
                    raise TimeoutError(
                        f"no item block free for loop {worker} within {timeout} s "
                        "(a worker loop is lost or stalled)")
                todo.remove(b)
                ticket = None
            reply = blocks[b].wait("acquire", worker, ticket, timeout).result(timeout)
            if reply is None:
                raise TimeoutError(
                    f"item block {b} not handed to loop {worker} within {timeout} s "
                    "(a worker loop is lost or stalled)")
            V = reply.rows
            wait_time += time.perf_counter() - tick
            users, items, ratings = shard.strata[b]
            tick = time.perf_counter()
            try:
                order = shard.rng.permutation(ratings.shape[0])
                part = sgd_ratings(users, items, ratings, order, U, V, config.mu, config.eta,
                                   config.reg_factors, config.reg_biases, config.rule,
                                   *config.adam)
                if not (math.isfinite(part) and np.isfinite(V).all()):
                    raise diverged(config)
            except BaseException:
                blocks[b].call("give_back", worker).result(10)
                raise
            kernel_time += time.perf_counter() - tick
            # posted, not sent: the block's next holder waits for both
            blocks[b].post("release", worker, V, ratings.shape[0])  # V: not used again
            if checkout is not None:
                checkout.post("release", b)
            sse += part
            n_seen += ratings.shape[0]
            visits += 1
        for call in [h.flush() for h in blocks]:  # every check-in applied
            call.result(timeout)
    except BaseException:
        user_block.call("give_back", worker).result(10)
        raise
    user_block.call("release", worker, U, n_seen).result(timeout)
    return PassReport(worker, sse, n_seen, kernel_time, time.perf_counter() - started,
                      steps=visits, wait_time=wait_time,
                      remote_calls=remote_calls([user_block, *blocks]))


class CheckedOutItems:
    """How the epochs reach the item rows under asyb/sync: item block actors,
    checked out by one loop at a time."""

    loop = staticmethod(run_mf_epoch)

    @staticmethod
    def submit(client, layout, problem, seed, inits, loop_workers, token):
        """One :class:`~dask_asyncopt.store.factors.FactorBlock` actor per item block,
        spread over the workers, and the check-out table on the first loop's
        worker."""
        workers = sorted(client.nthreads())
        width = row_width(problem.n_factors, problem.rule)
        n_blocks = len(layout.item_sizes)
        return [client.submit(FactorBlock, b, int(size), problem.n_factors, problem.init_scale,
                              [seed, 1, b], inits[b], width, actor=True,
                              workers=[workers[b % len(workers)]],
                              key=f"asyncopt-mf-items-{b}-{token}")
                for b, size in enumerate(layout.item_sizes)] + [
            client.submit(CheckoutTable, n_blocks, actor=True, workers=[loop_workers[0]],
                          key=f"asyncopt-mf-checkout-{token}")]

    def __init__(self, handles, layout, timeout):
        self.handles = handles[:-1]
        self.table = handles[-1].ref
        self.timeout = timeout

    def loop_config(self, config, n_values):
        return config

    def loop_args(self):
        return ([h.ref for h in self.handles],)

    def loop_kwargs(self, solver):
        return {} if solver == "sync" else {"table": self.table}

    def _call_all(self, method, *args):
        calls = [h.call(method, *args) for h in self.handles]
        return [c.result(self.timeout) for c in calls]

    def after_epoch(self, reports):
        """The blocks' statistics since the last epoch; no extra history columns."""
        return self._call_all("stats"), {}

    def item_blocks(self):
        return self._call_all("rows")


def predictions(model, mu, users, items, rule):
    """Predicted ratings of packed ``(U, V)`` for rows ``users``/``items``."""
    k = n_factors_of(model[0].shape[1], rule)
    U, V = (np.ascontiguousarray(W[:, :k + 2]) for W in model)
    out = np.empty(users.shape[0])
    predict_pairs(users, items, U, V, mu, out)
    return out


def rmse_of(model, mu, users, items, ratings, rule):
    """RMSE of packed ``(U, V)`` on ratings given as rows of ``U``/``V``."""
    if not users.shape[0]:
        return math.nan
    out = predictions(model, mu, users, items, rule)
    return float(np.sqrt(np.mean((ratings - out) ** 2)))
