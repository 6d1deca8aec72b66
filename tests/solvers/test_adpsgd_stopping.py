"""AD-PSGD's default stopping rule (``solvers/adpsgd.py`` with ``solvers/steps.py``):
``tol`` is the relative gap to the optimum at which the replicas' average stops."""


import numpy as np
from sklearn.linear_model import LogisticRegression

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification

from ..conftest import cluster_is_clean, logistic_objective, penalty_args

ALPHA = 1e-5


def test_default_tol_stops_within_it_of_the_optimum_on_an_ill_conditioned_problem(client):
    """L1 with a small ``alpha``: the objective keeps falling slowly for tens of
    epochs, so scikit-learn's objective-decrease rule stopped this fit about 7e-3
    above the optimum.  The gap rule stops it within ``tol=1e-3`` (the optimum
    from liblinear's exact coordinate descent, without an intercept so that
    nothing is penalised differently)."""
    X, y = make_sparse_classification(3000, 1000, random_state=3)
    ref = LogisticRegression(**penalty_args("l1"), C=1.0 / (X.shape[0] * ALPHA),
                             solver="liblinear", fit_intercept=False, tol=1e-8,
                             max_iter=1000).fit(X, y)
    f_star = logistic_objective(X, y, ref.coef_, np.zeros(1), ALPHA, 1.0)
    est = AsyncSGDClassifier(loss="log_loss", penalty="l1", alpha=ALPHA, solver="adpsgd",
                             fit_intercept=False).fit(X, y)
    f = logistic_objective(X, y, est.coef_, est.intercept_, ALPHA, 1.0)
    assert (f - f_star) / f_star <= 1e-3, (est.n_iter_, (f - f_star) / f_star)
    assert est.n_iter_ < est.max_iter
    last = est.history_.iloc[-1]
    assert last.gap_bound <= 1e-3 or last.gap_estimate <= 1e-3 / 2
    assert cluster_is_clean(client)
