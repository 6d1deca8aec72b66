"""Asynchronous parallel stochastic optimisation over Dask, with a scikit-learn face."""

from .linear_model import AsyncSGDClassifier, AsyncSGDRegressor

__all__ = ["AsyncSGDClassifier", "AsyncSGDRegressor"]
__version__ = "0.1.0"
