"""Zero suppression (``kernels/wire.py``): a lossless round trip to the bit."""

import numpy as np
import pytest

from dask_asyncopt.kernels.wire import count_significant_words, pack_words, unpack_words


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1001])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_any_pattern_comes_back_bit_for_bit(n, density):
    rng = np.random.default_rng([n, int(10 * density)])
    # zeros of both signs (a negative value times 0 is -0.0), NaN, infinities, a
    # subnormal; and as integers INT64_MIN, whose bits are those of -0.0
    values = rng.standard_normal(n) * (rng.random(n) < density)
    specials = [np.nan, np.inf, -np.inf, 5e-324, -0.0, 0.0]
    values[: min(n, len(specials))] = specials[: min(n, len(specials))]
    words = values.view(np.uint64)
    significant = np.count_nonzero(values != 0)  # NaN included, zeros of both signs not
    assert count_significant_words(words) == significant
    bitmap, signs = (np.zeros((n + 7) // 8, np.uint8) for _ in range(2))
    packed = np.empty(significant, np.uint64)
    pack_words(words, bitmap, signs, packed)
    np.testing.assert_array_equal(packed, words[(words << np.uint64(1)) != 0])  # in order
    out = np.full(n, 12345, np.uint64)  # every entry must be written
    unpack_words(bitmap, signs, packed, out)
    np.testing.assert_array_equal(out, words)
    assert out.view(np.int64).tobytes() == words.view(np.int64).tobytes()
