"""A Ctrl-C that lands in a finaliser still stops the job (daskyard.interrupts)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# SIGINT is raised inside __del__, as when Ctrl-C lands in distributed's Future.__del__;
# the main thread then waits on, as a training waits on its cluster, for up to 5 s.
SCRIPT = textwrap.dedent(
    """
    import signal, sys, threading
    from daskyard.interrupts import never_swallowed

    class Result:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # Python steps on, where the handler then runs
                pass

    def train():
        Result()
        threading.Event().wait(5)  # as distributed waits on a result
        print("trained on")

    try:
        if sys.argv[1] == "guarded":
            with never_swallowed():
                train()
        else:
            train()
    except KeyboardInterrupt:
        print("interrupted")
    """
)


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60
    )


def test_an_interrupt_in_a_finaliser_reaches_the_main_thread():
    result = _run("guarded")
    assert result.stdout == "interrupted\n", result.stderr
    assert result.stderr == ""  # nor Python's "Exception ignored in ..." report


def test_python_alone_swallows_it():
    """What the guard is for: without it, the job goes on after its Ctrl-C."""
    result = _run("bare")
    assert result.stdout == "trained on\n"
    assert "Exception ignored in" in result.stderr and "KeyboardInterrupt" in result.stderr
