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


class OutOfSpace(ZodiError):
    """The output's file system lacks the space a write needs."""


def debug_enabled() -> bool:
    return os.environ.get("ZODI_DEBUG", "") not in ("", "0")


def quiet_libraries() -> None:
    """Keep transformers' and diffusers' chatter (torchvision and accelerate notices, weight-loading
    bars) off stderr, unless ZODI_DEBUG is set. Call before importing them; explicit settings win."""
    if not debug_enabled():
        for var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(var, "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def worker_message(text: str) -> str:
    """The original error of a DataLoader worker, whose message torch wraps in the worker's whole
    traceback: its last line, without the exception's module and class."""
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and " " not in head else last


def os_error_message(e: OSError) -> str | None:
    """One line for the operating-system faults a user can fix (full disk, read-only or forbidden
    output); None for the others."""
    import errno
    import re
    import shutil

    path = e.filename or (m[1] if (m := re.search(r"filename = '([^']+)'", str(e))) else None)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = ""
        if path:
            try:
                free = f"; {shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20:.1f} MiB free there"
            except OSError:
                pass
        return (f"no space left on the device while writing {path or 'the output'}{free} (free some space or choose "
                "another --out, then re-run: finished items and the last checkpoint are kept)")
    if e.errno == errno.EROFS:
        return f"{path or 'the output'} is on a read-only file system, so it is not writable (choose another --out)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{path or 'a file'}: permission denied (fix its permissions, or choose a writable --out)"
    return None


def one_line(text: str) -> str:
    """Collapse a message to one line so stderr stays greppable."""
    return " ".join(str(text).split())
