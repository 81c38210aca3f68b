"""One-line errors: what is wrong and how to fix it, with an exit code.

Core code raises :class:`ZodiError`; the CLI prints ``zodi: error: <message>`` on one stderr
line and exits with ``exit_code``. ``ZODI_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import os


class ZodiError(Exception):
    """A user-facing error. ``hint`` says how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(ZodiError):
    """Bad or missing input: a dataset root, an artifact, a model file."""


class ConflictError(ZodiError):
    """The output exists with other settings, or another writer holds it."""


def debug_enabled() -> bool:
    return os.environ.get("ZODI_DEBUG", "") not in ("", "0")


def quiet_libraries() -> None:
    """Keep transformers' and diffusers' chatter (torchvision and accelerate notices, weight-loading
    bars) off stderr, unless ZODI_DEBUG is set. Call before importing them; explicit settings win."""
    if not debug_enabled():
        for var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(var, "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def one_line(text: str) -> str:
    """Collapse a message to one line so stderr stays greppable."""
    return " ".join(str(text).split())
