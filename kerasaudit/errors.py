"""Typed errors, each with the exit code the CLI maps it to (README, "Exit codes")."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done, nothing found
    FINDINGS = 1  # done, findings (flagged channels, backdoor verdict, ASR above --max-asr)
    BAD_INPUT = 2  # usage error or bad input; nothing written
    UNSAFE = 3  # model refused as unsafe
    INTERNAL = 4  # internal error (a bug)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (``cli.signals`` installs the handler) so that
    ``finally`` blocks run as for Ctrl-C: the private copy of the model is removed, a half-written
    output is not left. A ``KeyboardInterrupt`` so that code handling interrupts handles this too;
    the CLI exits 143 (128 + SIGTERM) rather than 130."""


class KerasauditError(Exception):
    """Base class; ``str(err)`` is a one-line message meant for the user."""

    exit_code: ExitCode = ExitCode.INTERNAL


class BadInputError(KerasauditError):
    """The user's input (file, data, option value) cannot be used."""

    exit_code = ExitCode.BAD_INPUT


class UnsafeModelError(KerasauditError):
    """The model file would execute code or exhaust resources if handed to Keras."""

    exit_code = ExitCode.UNSAFE

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(
            f"refused unsafe model: {where}: {reason} (pass --unsafe only if you trust this file)"
        )


class ModelResourceError(UnsafeModelError):
    """Loading the model would exhaust memory, CPU time or disk (a resource bomb): refused."""
