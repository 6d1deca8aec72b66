"""The store's named replies (``store/replies.py``): fields, defaults, tuple behaviour and
pickling (they cross process boundaries)."""

import dataclasses
import pickle

import numpy as np
import pytest

from dask_asyncopt.store.replies import (
    Averaged,
    CheckedIn,
    CheckedOut,
    Pulled,
    Pushed,
    StoreStats,
)


def test_fields_and_defaults():
    # the variance-reduced solver's snapshot terms (drift, counts, the preconditioner)
    # come only when asked for
    assert Pulled._fields == ("values", "version", "samples", "drift", "counts", "precond")
    assert Pulled(None, 3) == (None, 3, 0, None, None, None)
    assert Pushed._fields == ("version", "samples", "staleness")
    assert CheckedOut._fields == ("rows", "version")
    assert CheckedIn._fields == ("version", "staleness")
    assert Averaged._fields == ("delta", "known")
    assert [f.name for f in dataclasses.fields(StoreStats)] == [
        "block", "version", "samples", "pushes", "staleness_sum", "staleness_max", "penalty",
        "exchanges", "sent", "loss_sum", "kernel_time"]
    assert StoreStats(2, 7) == StoreStats(2, 7, 0, 0, 0, 0, 0.0, 0, 0, 0.0, 0.0)


def test_replies_are_immutable_tuples_and_stats_a_mutable_record():
    pushed = Pushed(4, 100, 1)
    version, samples, staleness = pushed  # still unpacks
    assert (version, samples, staleness) == (4, 100, 1) == tuple(pushed)
    with pytest.raises(AttributeError):
        pushed.version = 5
    assert pushed._replace(staleness=0) == Pushed(4, 100, 0)
    stats = StoreStats(0, 1)
    stats.samples = 10  # the drivers adjust samples of replicas' statistics
    assert dataclasses.replace(stats, samples=20).samples == 20 and stats.samples == 10


@pytest.mark.parametrize("reply", [
    Pulled(np.ones((2, 1)), 1, 5, np.zeros((2, 1)), np.array([1, 2])), Pushed(1, 2, 3),
    CheckedOut(np.eye(2), 4), CheckedIn(5, 0), Averaged(np.ones(3), np.array([1, 2])),
    StoreStats(1, 2, 3, 4, 5, 6, 0.5, 7, 8, 0.25, 0.125)])
def test_replies_pickle(reply):
    back = pickle.loads(pickle.dumps(reply))
    assert type(back) is type(reply)
    for a, b in zip(dataclasses.astuple(back) if dataclasses.is_dataclass(back) else back,
                    dataclasses.astuple(reply) if dataclasses.is_dataclass(reply) else reply,
                    strict=True):
        np.testing.assert_array_equal(a, b)
