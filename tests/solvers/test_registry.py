"""The solver table (``solvers/registry.py``): what an estimator's ``solver`` indexes."""

import inspect

import pytest

from dask_asyncopt import AsyncSGDClassifier, AsyncSGDRegressor, MatrixFactorization
from dask_asyncopt.solvers import ITEM_SIDES, SOLVERS, adpsgd, blocks, registry
from dask_asyncopt.solvers.mf import CheckedOutItems
from dask_asyncopt.solvers.mf_gossip import GossipItems


def test_linear_solvers():
    assert SOLVERS is registry.SOLVERS
    assert SOLVERS == {"asyb": blocks.fit, "sync": blocks.fit, "adpsgd": adpsgd.fit}
    # one signature for every topology: the linear driver calls them alike
    signatures = {str(inspect.signature(f)) for f in SOLVERS.values()}
    assert signatures == {"(client, shards, loop_workers, n_samples, problem, settings, "
                          "init=None, t_start=0, kept=None, moments=None)"}


def test_item_sides():
    assert ITEM_SIDES == {"asyb": CheckedOutItems, "sync": CheckedOutItems,
                          "adpsgd": GossipItems}
    for side in set(ITEM_SIDES.values()):  # the interface solvers/factors.py drives
        for name in ("loop", "submit", "loop_config", "loop_args", "after_epoch",
                     "item_blocks"):
            assert callable(getattr(side, name)), (side, name)


@pytest.mark.parametrize("estimator,table", [(AsyncSGDClassifier, SOLVERS),
                                             (AsyncSGDRegressor, SOLVERS),
                                             (MatrixFactorization, ITEM_SIDES)])
def test_the_estimators_accept_exactly_the_registered_solvers(estimator, table):
    (options,) = [c for c in estimator._parameter_constraints["solver"]]
    assert options.options == set(table)
