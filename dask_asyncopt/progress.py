"""Progress reporting during ``fit``: a ``tqdm.auto`` bar and per-epoch log lines.

The epoch driver calls ``Settings.callback(row)`` with each new ``history_``
row; :class:`FitProgress` is that callback.  What it shows depends on the
estimator's ``verbose``:

=========  ==================================================================
verbose    shown during ``fit``
=========  ==================================================================
0          nothing
1          a progress bar over epochs (``tqdm.auto``: a widget in Jupyter,
           text on stderr in a terminal) with the objective (train and
           validation RMSE for ``MatrixFactorization``), block updates per
           second and staleness of the last epoch
>= 2       the bar, and one ``INFO`` line per epoch on the ``dask_asyncopt``
           logger (written above the bar so that it is not garbled)
=========  ==================================================================

Log lines go through :mod:`logging` only.  With ``verbose >= 2`` and no
handler configured anywhere (neither on ``dask_asyncopt`` nor on an ancestor
such as the root logger), a handler is attached *for the duration of the
fit*; the logger's level is lowered to ``INFO`` for the fit and restored
afterwards, so one verbose fit does not make later fits chatty.
"""

import logging
import math
import sys

logger = logging.getLogger("dask_asyncopt")

__all__ = ["FitProgress"]


class _BarHandler(logging.Handler):
    """Writes records through ``tqdm.write`` so that they appear above the bar."""

    def __init__(self, bar, file=None):
        super().__init__(logging.INFO)
        self.bar = bar
        self.file = file
        self.setFormatter(logging.Formatter("[dask_asyncopt] %(message)s"))

    def emit(self, record):
        try:
            # the bar's stream (tqdm.write would default to stdout); looked up per
            # record so that a redirected sys.stderr is honoured
            self.bar.write(self.format(record), file=self.file or sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break a fit
            self.handleError(record)


class FitProgress:
    """Show the progress of a fit: the callback for the per-epoch history rows.

    Use it as a context manager around the fit and pass it as the epoch
    callback; on exit (also on an exception) the bar is closed and the logger
    restored.  A fit that stops early (``tol``) completes the bar at the last
    epoch; a failed fit leaves it where the failure happened (red in Jupyter).

    Parameters
    ----------
    verbose : int, default=1
        0: nothing; 1: progress bar; 2 or more: progress bar and one ``INFO``
        log line per epoch on the ``dask_asyncopt`` logger.
    total : int or None, default=None
        Maximum number of epochs (``max_iter``), the bar's length.
    desc : str, default="fit"
        Label in front of the bar, e.g. the estimator and solver.
    file : file-like or None, default=None
        Where a text bar is written; ``None`` is ``sys.stderr`` (tqdm's default).
    tqdm_class : type or None, default=None
        The bar's class; ``None`` is ``tqdm.auto.tqdm`` (the widget in Jupyter,
        text elsewhere).  E.g. ``tqdm.notebook.tqdm`` or ``tqdm.tqdm`` to force one.

    Attributes
    ----------
    bar : tqdm.auto.tqdm or None
        The bar (``None`` with ``verbose=0``); after the fit, closed, at its last
        state.
    n_epochs : int
        History rows received so far.

    Examples
    --------
    The estimators create one when ``verbose`` is set; standalone, it consumes
    rows such as those of ``history_``:

    >>> import io
    >>> from dask_asyncopt.progress import FitProgress
    >>> out = io.StringIO()
    >>> with FitProgress(verbose=1, total=2, desc="demo", file=out) as progress:
    ...     progress({"epoch": 1, "time": 0.5, "updates": 40, "objective": 0.71,
    ...               "staleness_mean": 0.4, "staleness_max": 2})
    >>> progress.n_epochs
    1
    >>> "objective=0.71" in out.getvalue()
    True
    """

    def __init__(self, verbose=1, total=None, desc="fit", file=None, tqdm_class=None):
        self.verbose = int(verbose)
        self.total = total
        self.desc = desc
        self.file = file
        self.tqdm_class = tqdm_class
        self.bar = None
        self.n_epochs = 0
        self._last_time = 0.0
        self._handler = None
        self._saved_level = None

    def __enter__(self):
        if self.verbose <= 0:
            return self
        tqdm = self.tqdm_class
        if tqdm is None:
            # imported here: tqdm.auto picks the notebook or terminal bar on import,
            # and a library import should not pay for (or fix) that choice early
            from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="epoch", file=self.file,
                        dynamic_ncols=True, leave=True)
        if self.verbose >= 2:
            self._saved_level = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            if not logger.hasHandlers():
                self._handler = _BarHandler(self.bar, self.file)
                logger.addHandler(self._handler)
        return self

    def __call__(self, row):
        """Take one history row (a mapping) and update the bar.

        Parameters
        ----------
        row : mapping
            A ``history_`` row; ``time``, ``updates``, ``objective``,
            ``train_rmse``, ``valid_rmse``, ``staleness_mean`` and
            ``staleness_max`` are shown when present.

        Returns
        -------
        None
            The row is only displayed.

        Examples
        --------
        >>> from dask_asyncopt.progress import FitProgress
        >>> progress = FitProgress(verbose=0)
        >>> progress({"epoch": 1, "objective": 0.7})
        >>> progress.n_epochs
        1
        """
        self.n_epochs += 1
        if self.bar is None:
            return
        self.bar.set_postfix(self.postfix(row, self._last_time), refresh=False)
        self.bar.update(1)
        self._last_time = row.get("time", self._last_time)

    @staticmethod
    def postfix(row, previous_time=0.0):
        """The bar's postfix for one history row: objective, updates/s, staleness.

        A :class:`~dask_asyncopt.MatrixFactorization` row has no objective: its
        ``train_rmse`` and ``valid_rmse`` (with early stopping) are shown instead.

        Parameters
        ----------
        row : mapping
            A ``history_`` row; missing fields are left out.
        previous_time : float, default=0.0
            The previous row's ``time`` (seconds since the fit started): the
            epoch's updates per second are ``updates / (time - previous_time)``.

        Returns
        -------
        dict
            Ordered ``{name: formatted value}``.

        Examples
        --------
        >>> from dask_asyncopt.progress import FitProgress
        >>> FitProgress.postfix({"time": 2.0, "updates": 300, "objective": 0.52,
        ...                     "staleness_mean": 1.25, "staleness_max": 4})
        {'objective': '0.52', 'updates/s': '150', 'staleness': '1.25/4'}
        >>> FitProgress.postfix({"time": 3.0, "updates": 80, "train_rmse": 0.8123,
        ...                     "valid_rmse": 0.9011}, previous_time=1.0)
        {'train_rmse': '0.8123', 'valid_rmse': '0.9011', 'updates/s': '40'}
        """
        out = {}
        if "objective" in row:
            out["objective"] = f"{row['objective']:.6g}"
        for name in ("train_rmse", "valid_rmse"):  # MatrixFactorization's rows
            if name in row:
                out[name] = f"{row[name]:.5g}"
        elapsed = row["time"] - previous_time if "time" in row else 0.0
        if "updates" in row and elapsed > 0:
            out["updates/s"] = f"{row['updates'] / elapsed:.3g}"
        if "staleness_mean" in row:
            worst = row.get("staleness_max", math.nan)
            out["staleness"] = f"{row['staleness_mean']:.3g}/{worst:.0f}"
        return out

    @staticmethod
    def _complete(bar, n):
        """End ``bar`` full at ``n``: its length becomes ``n``, elapsed time kept.

        Through tqdm's ``reset(total=...)``, which the notebook bar follows too
        (assigning ``bar.total`` leaves the widget's length at ``max_iter``);
        ``reset`` restarts the clock, so the fit's start time is put back for the
        final line's elapsed time and rate.
        """
        started = bar.start_t
        bar.reset(total=n)
        bar.start_t = started
        bar.update(n)

    def __exit__(self, exc_type, exc, tb):
        if self._handler is not None:
            logger.removeHandler(self._handler)
            self._handler = None
        if self._saved_level is not None:
            logger.setLevel(self._saved_level)
            self._saved_level = None
        if self.bar is not None:
            if exc_type is None and self.total is not None and 0 < self.n_epochs < self.total:
                # stopped early (converged): a full bar, not a failure
                self._complete(self.bar, self.n_epochs)
            self.bar.close()
        return False
