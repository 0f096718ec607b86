"""Errors that carry the exit code of the contract (DESIGN.md, "Exit codes").

Every failure a user can act on is one of these; ``cli`` is the one place that
turns them into a message line and an exit code.
"""

from __future__ import annotations


class DaskyardError(Exception):
    """Base class: ``str(error)`` is the one line shown to the user."""

    exit_code = 1


class ConfigError(DaskyardError):
    """Invalid configuration or arguments: retrying cannot help."""

    exit_code = 2


class DataError(DaskyardError):
    """Invalid input data: retrying cannot help."""

    exit_code = 3


class InfrastructureError(DaskyardError):
    """Transient infrastructure failure: a retried pod may succeed and resumes."""

    exit_code = 75


def short(exc: BaseException, limit: int = 200) -> str:
    """An exception as it goes into a message line: its type and its text, on one line."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text[:limit]}"
