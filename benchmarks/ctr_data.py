"""Click-through-like data with Zipf column popularity, shared by the benchmarks.

Not a script: ``bench_vw.py`` and ``bench_gap.py`` import it (``benchmarks/`` is
on ``sys.path`` when they run).

Each row is an impression with up to :data:`N_FIELDS` categorical fields (site,
ad, device, hour, user segments, ...), each present in a share :data:`PRESENT`
of the rows (so a row's indicators do not add up to the intercept's column).
Field ``f`` has a vocabulary of ``VOCABULARY[f]`` values, drawn by Zipf ranks
(exponent :data:`ZIPF`, the ranks beyond the vocabulary wrapped around): each
field's most popular value is in about 14% of the rows, most values are in
few.  Every (field, value) token is hashed to one of ``n_features`` columns
(binary value 1; two tokens of a row that collide add up), so a row has about
26 non-zeros and the columns' popularity follows the tokens'.  Clicks follow a
logistic model in which a third of the tokens carry an effect (about 27%
positive).
"""

import numpy as np
import scipy.sparse as sp

N_FIELDS = 32
#: share of the rows in which a field is present (missing values, optional fields)
PRESENT = 0.8
ZIPF = 1.15
#: vocabulary sizes: from a hundred values (positions, hours x devices) to millions (users)
VOCABULARY = np.unique(np.geomspace(100, 4_000_000, N_FIELDS).astype(np.int64))
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _hash(tokens, n_features):
    """Fibonacci hashing of token ids to ``range(n_features)`` (a power of 2)."""
    bits = int(n_features).bit_length() - 1
    mixed = (tokens.astype(np.uint64) + np.uint64(1)) * _MIX
    return (mixed >> np.uint64(64 - bits)).astype(np.int64)


def make_zipf_ctr(n_samples, n_features, random_state=0, avoid=()):
    """``(X, y)``: CSR ``(n_samples, n_features)`` binary features, labels 0/1.

    ``n_features`` must be a power of 2 (hashed columns).  Columns in ``avoid``
    (e.g. where Vowpal Wabbit keeps its constant feature) are moved to the next
    column, so that a peer's intercept never shares a column with the data.
    """
    if n_features & (n_features - 1):
        raise ValueError(f"n_features={n_features} must be a power of 2 (hashed columns)")
    rng = np.random.default_rng(random_state)
    cols = np.empty((n_samples, len(VOCABULARY)), dtype=np.int64)
    present = rng.random(cols.shape) < PRESENT
    logit = np.full(n_samples, -1.6)
    offset = 0
    for f, size in enumerate(VOCABULARY):
        ranks = (rng.zipf(ZIPF, size=n_samples) - 1) % size  # the tail wraps around
        cols[:, f] = _hash(offset + ranks, n_features)
        effect = rng.normal(scale=0.6, size=size) * (rng.random(size) < 1 / 3)
        logit += effect[ranks] * present[:, f]
        offset += size
    for c in avoid:
        cols[cols == c] = (c + 1) % n_features
    y = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    cols = cols[present]  # row-major: each row's fields in order
    indptr = np.concatenate([[0], np.cumsum(present.sum(axis=1))])
    X = sp.csr_matrix((np.ones(cols.size), cols, indptr), shape=(n_samples, n_features))
    X.sum_duplicates()
    return X, y
