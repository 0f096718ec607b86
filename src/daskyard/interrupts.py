"""Ctrl-C stops the job even when it lands in a finaliser, and says one line.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives.
Inside a ``__del__`` or a weakref callback, such as distributed's ``Future.__del__``,
which runs for every result the job lets go of, Python cannot raise it: it prints
"Exception ignored in ..." and goes on. The job then trained on after its Ctrl-C
(seen in CI, and in 1 of 40 interrupts here). Such a KeyboardInterrupt is sent
again, once the main thread has left the finaliser (``never_swallowed``).

Inside an ``__init__``, it leaves a half-built object, which the interrupt's
traceback keeps until the job has said its line; then freed, its ``__del__``
failed and Python printed that failure under the line (seen in CI: a ``Future``
without its ``_cleared``). ``let_go`` frees it before, quietly.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

# Long enough for the main thread to leave the finaliser (microseconds), short
# enough that nobody waits on it.
RESEND_AFTER_S = 0.05


@contextlib.contextmanager
def never_swallowed() -> Iterator[None]:
    previous = sys.unraisablehook
    main = threading.main_thread()
    resends: list[threading.Timer] = []

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        swallowed = unraisable.exc_type is not None and issubclass(
            unraisable.exc_type, KeyboardInterrupt
        )
        if not (swallowed and threading.current_thread() is main):
            previous(unraisable)
            return
        # Not from here: the main thread is still in the finaliser, which would set
        # this one aside too. A real signal also ends a wait the main thread is in.
        resend = threading.Timer(RESEND_AFTER_S, signal.pthread_kill, (main.ident, signal.SIGINT))
        resend.daemon = True
        resend.start()
        resends.append(resend)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
        for resend in resends:
            resend.cancel()


def let_go(interrupt: BaseException) -> None:
    """Free what the interrupt's traceback holds, with its finalisers' errors unsaid:
    the job is over, and what a half-built object's ``__del__`` says of itself is no
    news to the user. (Frames still running, the caller's, stay as they are.)"""
    previous = sys.unraisablehook
    sys.unraisablehook = _unsaid
    try:
        traceback.clear_frames(interrupt.__traceback__)
    finally:
        sys.unraisablehook = previous


def _unsaid(unraisable: sys.UnraisableHookArgs) -> None:
    return None
