"""The solvers by name: the one table an estimator's ``solver`` parameter indexes.

Adding a solver is a topology module (a ``fit`` with the signature of
:func:`.blocks.fit` for linear models, or an item side with the interface of
:class:`.mf.CheckedOutItems` for matrix factorisation) and a line here.
"""

from . import adpsgd, blocks
from .mf import CheckedOutItems
from .mf_gossip import GossipItems

#: solver -> fit of a linear model (AsyB-ProxSGD, its synchronous baseline, AD-PSGD)
SOLVERS = {"asyb": blocks.fit, "sync": blocks.fit, "adpsgd": adpsgd.fit}

#: solver -> how a factorisation's loops reach the item rows
ITEM_SIDES = {"asyb": CheckedOutItems, "sync": CheckedOutItems, "adpsgd": GossipItems}
