"""Plots of fit histories (needs matplotlib: ``pip install matplotlib``, or from a
clone of the repository ``pip install -e ".[plot]"``)."""

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

__all__ = ["plot_history"]

_AXIS_LABELS = {
    "time": "wall time since the fit started (s)",
    "epoch": "epoch",
    "samples": "samples processed",
    "updates": "block updates in the epoch",
    "objective": "objective (progressive loss + penalty)",
    "loss": "progressive loss",
    "staleness_mean": "mean staleness (versions)",
    "staleness_max": "max staleness (versions)",
    "compute_fraction": "share of loop time in kernels",
    # MatrixFactorization's history
    "train_rmse": "train RMSE (progressive)",
    "valid_rmse": "validation RMSE",
    "ratings": "ratings processed in the epoch",
    "wait_fraction": "share of loop time waiting for a block",
}
# default y: the first of these that every history has (linear models, then
# MatrixFactorization)
_DEFAULT_Y = ("objective", "train_rmse")


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "dask_asyncopt.plotting needs matplotlib, which is not installed: "
            "`pip install matplotlib` (or, in a clone of the dask_asyncopt repository, "
            "`pip install -e \".[plot]\"`)") from exc
    return plt


def _default_label(est, i):
    if isinstance(est, pd.DataFrame):
        return f"fit {i}"
    params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    solver = params.get("solver")
    name = type(est).__name__
    return f"{name}(solver={solver!r})" if solver is not None else name


def plot_history(est_or_list, x="time", y=None, ax=None, labels=None, **plot_kwargs):
    """Overlay the ``history_`` of one or several fits, e.g. asyb vs sync.

    Parameters
    ----------
    est_or_list : estimator, pandas.DataFrame, or list of them
        Fitted estimators (their ``history_`` is plotted) or history
        DataFrames.
    x : str, default="time"
        History column on the horizontal axis: ``"time"`` (seconds since the
        fit started) or ``"epoch"``; any other column of the history works too.
    y : str or None, default=None
        History column on the vertical axis.  ``None``: ``"objective"`` for the
        linear models, ``"train_rmse"`` for
        :class:`~dask_asyncopt.MatrixFactorization` (whose history also has
        ``"valid_rmse"`` with ``early_stopping``).
    ax : matplotlib.axes.Axes, optional
        Where to draw; default: a new figure's axes.
    labels : list of str, optional
        Legend entry per fit; default: the estimator class and its ``solver``
        (numbered when two fits would share a label).
    **plot_kwargs
        Passed to every :meth:`matplotlib.axes.Axes.plot` call (e.g. ``marker="o"``).

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on, with axis labels and a legend.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    sklearn.exceptions.NotFittedError
        If an estimator has no ``history_`` (it was not fitted).
    ValueError
        If ``x`` or ``y`` is not a history column, or ``labels`` has the wrong
        length.

    Examples
    --------
    >>> import pandas as pd
    >>> from matplotlib.figure import Figure
    >>> from dask_asyncopt.plotting import plot_history
    >>> asyb = pd.DataFrame({"epoch": [1, 2, 3], "time": [0.1, 0.2, 0.3],
    ...                      "objective": [0.70, 0.66, 0.65]})
    >>> sync = pd.DataFrame({"epoch": [1, 2, 3], "time": [0.2, 0.4, 0.6],
    ...                      "objective": [0.71, 0.67, 0.65]})
    >>> ax = Figure().subplots()  # or let plot_history open a pyplot figure
    >>> ax = plot_history([asyb, sync], x="time", labels=["asyb", "sync"], ax=ax)
    >>> [line.get_label() for line in ax.get_lines()]
    ['asyb', 'sync']

    With fitted estimators, ``plot_history([clf_asyb, clf_sync])`` labels the
    lines by solver; for matrix factorisation fits,
    ``plot_history([mf_asyb, mf_sync], y="valid_rmse")``.
    """
    items = list(est_or_list) if isinstance(est_or_list, (list, tuple)) else [est_or_list]
    if not items:
        raise ValueError("plot_history needs at least one fitted estimator or history")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(items):
            raise ValueError(f"got {len(labels)} labels for {len(items)} fits")
    histories = []
    for est in items:
        if isinstance(est, pd.DataFrame):
            histories.append(est)
            continue
        history = getattr(est, "history_", None)
        if history is None:
            raise NotFittedError(
                f"This {type(est).__name__} instance is not fitted yet (it has no "
                "history_); call fit before plot_history")
        histories.append(pd.DataFrame(history))
    if y is None:
        y = next((c for c in _DEFAULT_Y if all(c in h.columns for h in histories)),
                 _DEFAULT_Y[0])
    for axis, column in (("x", x), ("y", y)):
        for history in histories:
            if column not in history.columns:
                raise ValueError(
                    f"{axis}={column!r} is not a history column; available: "
                    f"{', '.join(map(str, history.columns))}")
    if labels is None:
        labels = [_default_label(est, i) for i, est in enumerate(items)]
        for name in set(labels):
            if labels.count(name) > 1:
                seen = 0
                for i, label in enumerate(labels):
                    if label == name:
                        seen += 1
                        labels[i] = f"{name} #{seen}"
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots()
    for history, label in zip(histories, labels, strict=True):
        ax.plot(np.asarray(history[x]), np.asarray(history[y]), label=label, **plot_kwargs)
    ax.set_xlabel(_AXIS_LABELS.get(x, x))
    ax.set_ylabel(_AXIS_LABELS.get(y, y))
    ax.legend()
    return ax
