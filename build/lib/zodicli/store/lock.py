"""One writer per output: an exclusive ``flock`` on ``OUT.lock``.

The kernel drops the lock when its holder dies (kill -9 included), so a stale lock file never
blocks a resume. The file names its holder, so a second writer can say who it is waiting on.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time

from ..errors import ConflictError
from .files import refuse_link


class WriterLock:
    def __init__(self, target: str | os.PathLike, what: str = "zodi"):
        self.target = os.fspath(target)
        self.path = self.target + ".lock"
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> "WriterLock":
        while True:
            try:       # O_NOFOLLOW: a link planted at OUT.lock must not get its target truncated
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise refuse_link(self.path) from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise ConflictError(
                    f"{self.target} is being written by {holder}",
                    "wait for that run to finish or stop it; one writer per output",
                ) from None
            # The previous holder may have unlinked the file between our open and flock.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} ({self.what}, since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
