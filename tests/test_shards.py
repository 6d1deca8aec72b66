"""Chunk layout: both ways of compacting a chunk's columns give the same chunk."""

import numpy as np
import pytest
import scipy.sparse as sp

from dask_asyncopt import shards


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("n_blocks", [1, 3, 7])
def test_stamped_compaction_matches_sorting(n_blocks, fit_intercept):
    rng = np.random.default_rng(n_blocks)
    X = sp.random(40, 97, density=0.08, format="lil", random_state=rng)
    X[5] = 0  # an empty row
    X = X.tocsr()
    Y = rng.normal(size=(40, 1))
    scratch = shards._Scratch(97 + int(fit_intercept))
    for s in (0, 20):  # two chunks through one scratch
        rows = slice(s, s + 20)
        want = shards._chunk_csr(X[rows], Y[rows], 97, n_blocks, fit_intercept)
        got = shards._chunk_csr_stamped(X[rows], Y[rows], 97, n_blocks, fit_intercept,
                                        scratch)
        np.testing.assert_array_equal(got.X.toarray(), want.X.toarray())
        np.testing.assert_array_equal(got.bounds, want.bounds)
        for a, b in zip(got.block_ids, want.block_ids, strict=True):
            np.testing.assert_array_equal(a, b)
        assert got.intercept == want.intercept
        # every local coordinate maps back to the global column it came from
        glob = np.concatenate([ids * n_blocks + b for b, ids in enumerate(got.block_ids)])
        Xg = X[rows].toarray()
        for local_col, g in enumerate(glob):
            if g < 97:
                np.testing.assert_array_equal(got.X.toarray()[:, local_col], Xg[:, g])
            else:
                assert fit_intercept and local_col == got.intercept
