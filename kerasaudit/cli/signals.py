"""SIGTERM and SIGINT as exceptions that cannot be lost.

A handler's exception is raised in whatever Python code the main thread is running when the
signal lands. If that code is a weakref callback or a ``__del__`` (importlib releases its module
locks through one while TensorFlow imports), Python prints "Exception ignored in ..." and goes on:
the command would run to its end and exit 0 (seen once in CI, 2026-12-07). So the handler also
arms a short timer; when it fires and the interrupt is neither being unwound (``finally`` blocks
see it as the exception in hand) nor handled (:func:`handled`), it raises the interrupt again.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from kerasaudit.errors import Terminated

RECHECK_SECONDS = 0.2
_pending: list[int] = []  # the signal whose interrupt is on its way, until handled


def install() -> None:
    """Called once by the CLI's entry point, on the main thread."""
    signal.signal(signal.SIGTERM, _raise)
    # SIGINT ignored (a job started with `cmd &` by a non-interactive shell) stays ignored.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise)
    signal.signal(signal.SIGALRM, _recheck)


def handled() -> None:
    """The interrupt reached the code that reports it: no more rechecks."""
    _pending.clear()
    signal.setitimer(signal.ITIMER_REAL, 0)


def _raise(signum: int, frame: FrameType | None) -> None:
    _pending[:] = [signum]
    signal.setitimer(signal.ITIMER_REAL, RECHECK_SECONDS)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"signal {signum}")


def _recheck(signum: int, frame: FrameType | None) -> None:
    if not _pending:
        return
    if _unwinding(sys.exc_info()[1]):
        signal.setitimer(signal.ITIMER_REAL, RECHECK_SECONDS)
        return
    _raise(_pending[0], frame)


def _unwinding(exc: BaseException | None) -> bool:
    """The exception in hand is the interrupt, or one raised while handling it (Click turns
    it into ``Abort``)."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False
