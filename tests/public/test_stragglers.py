"""Making a process a straggler (``stragglers.py``): ``DutyCycle`` stops and resumes a real
process, and always leaves it running.  Process states are read from ``/proc``; the
waits are bounded polls, nothing depends on how fast the machine is."""

import os
import signal
import subprocess
import sys
import time

import pytest

from dask_asyncopt.stragglers import DutyCycle

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"),
                                reason="reads process states from /proc")


def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), ...


def _seen(pid, states, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _state(pid) in states:
            return True
        time.sleep(0.001)
    return False


@pytest.fixture
def sleeper():
    """A process asleep (state S): it says so once started, so that no state of its
    start-up (reading files: D) is taken for anything else."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    yield proc.pid
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_slowdown_must_exceed_one():
    for bad in (1, 0.5):
        with pytest.raises(ValueError, match="slowdown must be > 1"):
            DutyCycle(os.getpid(), bad)
    cycle = DutyCycle(os.getpid(), 4, period=0.2)
    assert cycle.stopped_for == pytest.approx(0.15) and cycle.running_for == pytest.approx(0.05)


def test_the_process_is_stopped_and_resumed_and_left_running(sleeper):
    with DutyCycle(sleeper, slowdown=2, period=0.05) as cycle:
        assert cycle.thread.is_alive()
        assert _seen(sleeper, {"T", "t"})  # stopped (SIGSTOP) ...
        assert _seen(sleeper, {"S", "R"})  # ... and resumed (SIGCONT), repeatedly
        assert _seen(sleeper, {"T", "t"})
    assert not cycle.thread.is_alive()
    for _ in range(50):  # running after the exit, whatever phase the cycle was in
        assert _state(sleeper) in {"S", "R"}
        time.sleep(0.002)


def test_the_exit_resumes_a_process_stopped_from_outside(sleeper):
    os.kill(sleeper, signal.SIGSTOP)
    assert _seen(sleeper, {"T", "t"})
    cycle = DutyCycle(sleeper, slowdown=10, period=1.0)  # its first stop lasts 0.9 s
    with cycle:
        pass
    assert _seen(sleeper, {"S", "R"}, timeout=5.0)
