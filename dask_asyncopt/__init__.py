"""Asynchronous parallel stochastic optimisation over Dask, with a scikit-learn face."""

from .estimators.linear_model import AsyncSGDClassifier, AsyncSGDRegressor
from .estimators.recommender import MatrixFactorization

__all__ = ["AsyncSGDClassifier", "AsyncSGDRegressor", "MatrixFactorization"]
__version__ = "0.1.0"
