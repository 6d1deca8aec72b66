"""Make a worker process a straggler, from outside the algorithm.

For experiments with asynchronous solvers: :class:`DutyCycle` stops and resumes
a process (``SIGSTOP``/``SIGCONT``, POSIX only) on a fixed period from a helper
thread, so the process runs ``1 / slowdown`` of the time — a worker that is
``slowdown`` times slower, whatever it computes.
"""

import os
import signal
import threading
import time


class DutyCycle:
    """Run process ``pid`` only ``1 / slowdown`` of every ``period`` seconds.

    Parameters
    ----------
    pid : int
        Process to slow down (e.g. a worker's, from ``client.run(os.getpid)``).
    slowdown : float
        How many times slower the process becomes (> 1).
    period : float, default=0.1
        Length of one stop-and-run cycle in seconds; short enough that the
        process's work units span many cycles.

    Examples
    --------
    >>> import os
    >>> from dask_asyncopt.stragglers import DutyCycle
    >>> with DutyCycle(pid, slowdown=4):  # doctest: +SKIP
    ...     est.fit(X, y)
    """

    def __init__(self, pid, slowdown, period=0.1):
        if slowdown <= 1:
            raise ValueError(f"slowdown must be > 1, got {slowdown}")
        self.pid = pid
        self.stopped_for = period * (1.0 - 1.0 / slowdown)
        self.running_for = period / slowdown
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.halt.is_set():
            os.kill(self.pid, signal.SIGSTOP)
            time.sleep(self.stopped_for)
            os.kill(self.pid, signal.SIGCONT)
            self.halt.wait(self.running_for)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.thread.join()
        os.kill(self.pid, signal.SIGCONT)
