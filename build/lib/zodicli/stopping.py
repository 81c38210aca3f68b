"""Ctrl-C and SIGTERM (Slurm pre-emption, ``timeout``, ``kill``) take one path: finished work is
kept, the command exits with 130 or 143.

Per-item commands stop at once: SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so the
artifact writer folds its finished parts as it does on Ctrl-C. A training loop instead defers the
first signal to the end of the step in flight (:func:`deferred_stop`), so that it can save a
consistent checkpoint; a second signal stops it at once.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""

    exit_code = 143


def _raise_terminated(signum, frame):
    raise Terminated()


def raise_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (called by the CLI)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


class StopRequest:
    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def exception(self) -> KeyboardInterrupt:
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def deferred_stop():
    """Within the block the first SIGINT/SIGTERM only sets ``stop.requested``; a second one raises."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise stop.exception()
        stop.signum = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
