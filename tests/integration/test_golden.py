"""The reorganised code reproduces the reference fits bit for bit (see golden_cases)."""

import numpy as np
import pytest

from .golden_cases import GOLDEN, all_cases, fit_case


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as f:
        return dict(f)


@pytest.mark.parametrize("name", all_cases())
def test_fit_matches_the_reference(name, golden, client):
    got = fit_case(name)
    source = str(golden.get(f"{name}/source", "the code before the reorganisation"))
    for key, value in got.items():
        ref = golden[f"{name}/{key}"]
        assert value.shape == ref.shape, key
        assert np.array_equal(value, ref), (
            f"{name}: {key} differs from the reference of {source} (max abs diff "
            f"{np.max(np.abs(value - ref)) if value.size else 0:.3g})")
