"""A worker's share of the training data, cut into chunks ready for the sweeps.

A chunk is the unit of one pull -> sweep -> push exchange.  At set-up, each
chunk's columns are renumbered into a compact local index space ordered by
(block, coordinate within block), so that

* a pull is one request per block for exactly the coordinates the chunk
  touches, and the replies concatenate into the local weight vector;
* the sweep runs over a small dense vector (cache-friendly) rather than the
  whole model;
* this renumbering is paid once per fit, not once per exchange.

Coordinates are assigned to blocks by interleaving: global coordinate ``i``
is local coordinate ``i // n_blocks`` of block ``i % n_blocks``.  The
intercept, when fitted, is global coordinate ``n_features``.
"""

import functools
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..kernels.columns import renumber_by_block


def block_sizes(n_coords, n_blocks):
    """Number of coordinates of each block under interleaving."""
    return [len(range(b, n_coords, n_blocks)) for b in range(n_blocks)]


def block_slices(owner, n_blocks):
    """Bounds of each block's run in an array sorted by block."""
    return np.searchsorted(owner, np.arange(n_blocks + 1))


#: the weights of an unweighted chunk (the kernels take every row's weight as 1)
NO_WEIGHTS = np.empty((0, 0))


@dataclass
class Chunk:
    """Rows of one exchange, in local coordinates.

    ``X`` is a CSR matrix whose column ``c`` is local coordinate ``c`` (sparse
    input) or a dense array whose columns are all coordinates in block order
    with a column of ones standing for the intercept (dense input).
    ``block_ids[b]`` are the local-in-block ids pulled from block ``b``;
    ``bounds[b]:bounds[b + 1]`` is their run in the local weight vector.
    """

    X: object
    Y: np.ndarray
    block_ids: list
    bounds: np.ndarray
    intercept: int  # local index of the intercept coordinate, else -1
    counts: np.ndarray | None = None  # rows touching each local coordinate (CSR chunks)
    energy: np.ndarray | None = None  # sum of squares of each local column (intercept: rows)
    # (n_rows, K) sample weights times class weights; (0, 0): every weight is 1
    W: np.ndarray = field(default_factory=lambda: NO_WEIGHTS)
    w_floor: float = 1.0  # the shard's mean of each row's largest weight (see
    # kernels.sweeps._heaviest)

    @property
    def n_rows(self):
        return self.Y.shape[0]


class WorkerShard:
    """Chunks of one worker loop plus its position in the data stream.

    The shard lives in the memory of the worker that owns the loop; every
    epoch task receives the same object, so the cursor carries over.
    """

    def __init__(self, chunks, seed):
        self.chunks = chunks
        self.rng = np.random.default_rng(seed)
        self.order = []
        self.n_rows = sum(c.n_rows for c in chunks)
        self.round = 0  # sync rounds taken part in

    def next_chunk(self):
        """Next chunk and a row order for it.

        Chunks come in a fresh random order every pass.  The rows of a shard
        were shuffled once when it was built, so within a chunk they are
        visited in storage order, from a random start and in a random
        direction: a sweep then streams the chunk's CSR arrays instead of
        jumping between rows, which slowed the SVRG sweep down.  Shuffling once converges as
        well as reshuffling every pass (Mishchenko, Khaled and Richtarik,
        2020, "Random Reshuffling: simple analysis with vast improvements").
        """
        if not self.order:
            self.order = list(self.rng.permutation(len(self.chunks)))
        self.current = self.order.pop()
        chunk = self.chunks[self.current]
        n = chunk.n_rows
        rows = np.arange(n, dtype=np.int64)
        rows += self.rng.integers(n)
        rows[rows >= n] -= n
        return chunk, rows[::-1] if self.rng.random() < 0.5 else rows

    def put_back(self, chunk):
        """Return the chunk just taken, unprocessed (it comes next again)."""
        self.order.append(self.current)


class _Scratch:
    """Per-shard work arrays of :func:`~dask_asyncopt.kernels.columns.renumber_by_block`
    (a word per 64 coordinates)."""

    def __init__(self, n_coords):
        n_words = (n_coords + 63) >> 6
        self.bits = np.zeros(n_words, dtype=np.uint64)
        self.before = np.empty(n_words, dtype=np.int64)


def _chunk_csr_bits(X, Y, n_features, n_blocks, fit_intercept, scratch):
    local, ids, bounds, intercept, counts, energy = renumber_by_block(
        X.indices, X.data, n_blocks, n_features if fit_intercept else -1, scratch.bits,
        scratch.before)
    block_ids = [ids[bounds[b]:bounds[b + 1]] for b in range(n_blocks)]
    Xl = CSRView(X.indptr, local, X.data, (X.shape[0], ids.shape[0]))
    return Chunk(Xl, Y, block_ids, bounds, int(intercept),
                 *_with_intercept(counts, energy, intercept, Y))


def _with_intercept(counts, energy, intercept, Y):
    """Entries and sums of squares per local coordinate, the intercept a
    column of ones (every row)."""
    if intercept >= 0:
        counts[intercept] = Y.shape[0]
        energy[intercept] = Y.shape[0]
    return counts, energy


def _chunk_csr(X, Y, n_features, n_blocks, fit_intercept):
    span = -(-(n_features + 1) // n_blocks)  # coordinates per block, rounded up
    cols = X.indices.astype(np.int64)
    keys = (cols % n_blocks) * span + cols // n_blocks
    if fit_intercept:
        icpt_key = (n_features % n_blocks) * span + n_features // n_blocks
        keys = np.append(keys, icpt_key)
    uniq, local = np.unique(keys, return_inverse=True)
    owner = uniq // span
    bounds = block_slices(owner, n_blocks)
    block_ids = [uniq[bounds[b]:bounds[b + 1]] - b * span for b in range(n_blocks)]
    intercept = -1
    if fit_intercept:
        intercept = int(local[-1])
        local = local[:-1]
    Xl = CSRView(X.indptr, local.astype(np.int32), X.data, (X.shape[0], uniq.shape[0]))
    counts = np.bincount(local, minlength=uniq.shape[0])
    energy = np.bincount(local, weights=np.square(X.data), minlength=uniq.shape[0])
    return Chunk(Xl, Y, block_ids, bounds, intercept,
                 *_with_intercept(counts, energy, intercept, Y))


def dense_layout(n_features, n_blocks, fit_intercept):
    """Column order of dense chunks (block order) and per-block bounds and ids."""
    n_coords = n_features + int(fit_intercept)
    coords = np.arange(n_coords)
    order = np.lexsort((coords // n_blocks, coords % n_blocks))
    owner = (coords % n_blocks)[order]
    bounds = block_slices(owner, n_blocks)
    block_ids = [None] * n_blocks  # every coordinate: pull whole blocks
    return order, bounds, block_ids


def _chunks_dense(X, Y, n_features, n_blocks, fit_intercept, batch_size):
    order, bounds, block_ids = dense_layout(n_features, n_blocks, fit_intercept)
    intercept = -1
    if fit_intercept:
        X = np.hstack([X, np.ones((X.shape[0], 1))])
        intercept = int(np.flatnonzero(order == n_features)[0])
    X = np.ascontiguousarray(X[:, order], dtype=np.float64)
    return [Chunk(X[s:s + batch_size], Y[s:s + batch_size], block_ids, bounds, intercept,
                  energy=np.einsum("ij,ij->j", X[s:s + batch_size], X[s:s + batch_size]))
            for s in range(0, X.shape[0], batch_size)]


class CSRView:
    """CSR arrays of a chunk (or of a row range), as the kernels read them.

    Not a scipy matrix on purpose: scipy copies index/data arrays that are
    views of a much larger array (``prune``), and a chunk's data *is* a view
    of its shard's; that copy was a large share of shard set-up.
    """

    __slots__ = ("indptr", "indices", "data", "shape")

    def __init__(self, indptr, indices, data, shape):
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self.shape = shape

    @classmethod
    def rows(cls, X, start, stop):
        """Rows ``start:stop`` of CSR ``X`` as views of its arrays (scipy's
        ``X[start:stop]`` copies through a general sub-matrix routine)."""
        stop = min(stop, X.shape[0])
        lo, hi = X.indptr[start], X.indptr[stop]
        return cls(X.indptr[start:stop + 1] - lo, X.indices[lo:hi], X.data[lo:hi],
                   (stop - start, X.shape[1]))

    @property
    def nnz(self):
        return int(self.indptr[-1])

    def toarray(self):
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape).toarray()


@dataclass(frozen=True)
class ShardLayout:
    """How a loop's rows are cut into chunks and numbered.

    ``batch_size`` is rows per chunk (``None``: chosen from the data, see
    :func:`~.placement.auto_batch_size`).
    """

    n_features: int
    n_blocks: int
    fit_intercept: bool
    batch_size: int | None = None


def make_shard(X, Y, layout, seed, W=None):
    """Cut ``X`` (CSR or dense, global columns), targets ``Y`` and, if any, sample
    weights ``W`` (shaped as ``Y``) into a shard."""
    n_features, n_blocks = layout.n_features, layout.n_blocks
    fit_intercept, batch_size = layout.fit_intercept, layout.batch_size
    if sp.issparse(X):
        # A CSR part as it arrived: re-wrapping it would copy its arrays (scipy
        # copies arrays that are views of a larger buffer, as received ones are).
        X = X if X.format == "csr" else sp.csr_matrix(X)
        if not X.has_canonical_format:
            # A column's statistics (the preconditioner, the drift) count its
            # entries: a duplicate (i, j) would count twice and shorten its steps
            # (the same optimum, reached more slowly).  Summed on a copy, as
            # scikit-learn's FeatureHasher sums them.
            X = X.copy()
            X.sum_duplicates()
        # A bit per model coordinate, walked a word at a time per chunk, beats
        # sorting the chunk's columns unless the model is much larger than a chunk.
        if n_features <= 64 * X.nnz * batch_size / max(X.shape[0], 1):
            scratch = _Scratch(n_features + int(fit_intercept))
            chunk_of = functools.partial(_chunk_csr_bits, scratch=scratch)
        else:
            chunk_of = _chunk_csr
        chunks = [chunk_of(CSRView.rows(X, s, s + batch_size), Y[s:s + batch_size],
                           n_features, n_blocks, fit_intercept)
                  for s in range(0, X.shape[0], batch_size)]
    else:
        chunks = _chunks_dense(np.asarray(X), Y, n_features, n_blocks, fit_intercept,
                               batch_size)
    if W is not None:
        W = np.asarray(W, dtype=np.float64).reshape(Y.shape)
        floor = float(W.max(axis=1).mean()) if W.size else 1.0
        start = 0
        for chunk in chunks:
            chunk.W = np.ascontiguousarray(W[start:start + chunk.n_rows])
            chunk.w_floor = floor
            start += chunk.n_rows
    return WorkerShard(chunks, seed)
