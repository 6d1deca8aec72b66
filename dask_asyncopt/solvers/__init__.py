"""Solvers: run a fit on a Dask cluster.  This module is their public face.

The estimators build a problem and settings (:mod:`.config`) and call
:func:`fit_linear` or :func:`fit_factors` inside :func:`session`; nothing
else of this package is theirs to import.

* ``"asyb"`` -- AsyB-ProxSGD: coefficient blocks in actors, every worker loop
  pulls the coordinates its chunk touches, sweeps, pushes; each block applies
  its proximal step on arrival (:mod:`.blocks`, :mod:`.loop`).
* ``"sync"`` -- the all-reduce baseline: the same exchanges with a barrier per
  round; a round's pushes are applied together in worker order.
* ``"adpsgd"`` -- AD-PSGD: one full model replica per worker loop, pairwise
  averaging between active and passive loops, no server (:mod:`.adpsgd`).

Matrix factorisation runs the same three over factor blocks (:mod:`.factors`).
"""

from contextlib import contextmanager

from ..cluster import fit_client
from .config import (
    SVRG,
    FactorProblem,
    FitResult,
    HeldOut,
    LinearProblem,
    Schedule,
    Settings,
    Validation,
)
from .factors import FACTOR_RULES, fit_factors
from .linear import fit_linear
from .registry import ITEM_SIDES, SOLVERS
from .run import KeptStore


@contextmanager
def session():
    """The client a fit runs on (the active one, else the embedded cluster's),
    made current for the block: dask collections the estimator computes
    before the fit (its classes, say) are computed there too.  Inside a Dask
    task (joblib's "dask" backend) it is the task's cluster, and the task
    secedes from its worker's thread pool until the block ends
    (:func:`~dask_asyncopt.cluster.fit_client`)."""
    with fit_client() as client, client.as_current():
        yield client


__all__ = ["FACTOR_RULES", "ITEM_SIDES", "SOLVERS", "SVRG", "FactorProblem", "FitResult",
           "HeldOut", "KeptStore", "LinearProblem", "Schedule", "Settings", "Validation",
           "fit_factors", "fit_linear", "session"]
