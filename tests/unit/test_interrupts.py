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


# SIGINT lands inside an __init__, as in distributed's Future.__init__ before its
# _cleared: the half-built object's __del__ fails once the interrupt lets it go.
HALF_BUILT = textwrap.dedent(
    """
    import signal, sys
    from daskyard.interrupts import let_go

    class Future:
        def __init__(self):
            signal.raise_signal(signal.SIGINT)
            self._cleared = False

        def __del__(self):
            print("finalised")
            self._cleared

    def submit():
        Future()

    try:
        submit()
    except KeyboardInterrupt as interrupt:
        if sys.argv[1] == "let go":
            let_go(interrupt)
        print("interrupted", file=sys.stderr)
    """
)


def _half_built(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HALF_BUILT, mode], capture_output=True, text=True, timeout=60
    )


def test_a_half_built_object_is_let_go_before_the_line_and_quietly():
    result = _half_built("let go")
    assert result.stdout == "finalised\n"  # its __del__ ran, and failed
    assert result.stderr == "interrupted\n"


def test_python_alone_reports_its_failure_under_the_line():
    result = _half_built("kept")
    assert result.stdout == "finalised\n"
    assert result.stderr.startswith("interrupted\nException ignored in")
    assert "AttributeError" in result.stderr
