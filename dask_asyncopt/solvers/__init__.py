"""Solvers: strategies that drive worker loops against the parameter store.

* ``"asyb"`` — AsyB-ProxSGD: blocks in actors, every worker loop pulls the
  coordinates its chunk touches, sweeps, pushes; each block applies its
  proximal step on arrival (:mod:`.loop`, store mode ``"async"``).
* ``"sync"`` — the all-reduce baseline: the same exchanges with a barrier per
  round; a round's pushes are applied together in worker order.
* ``"adpsgd"`` — AD-PSGD: one full model replica per worker loop, pairwise
  averaging between active and passive loops, no server
  (:mod:`.adpsgd`, :mod:`dask_asyncopt.replica`).
"""

from .driver import SOLVERS, fit_blocks

__all__ = ["SOLVERS", "fit_blocks"]
