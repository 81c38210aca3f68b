"""Writing files into output folders without trusting what is already there.

Every file zodi writes goes to a fresh temporary beside its target (``mkstemp``: created with
O_EXCL, so a planted symlink is never followed), is fsynced, then renamed over the target
(``os.replace`` replaces a link itself, never what it points to). Logs are appended with
O_NOFOLLOW. A failed write removes its temporary and leaves the old target as it was.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError, OutOfSpace

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporaries(path: Path) -> list[Path]:
    """Leftover temporaries of ``path`` (from a killed writer); remove them only under its lock."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"))


@contextmanager
def atomic_path(path):
    """Yield a new empty temporary file beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes 0600; outputs get the usual mode
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_space(path, needed: int, hint: str) -> None:
    """Refuse a write that cannot fit (with 8 MiB to spare), naming the space it needs."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free
    if needed + (8 << 20) > free:
        raise OutOfSpace(f"not enough space to write {path}: it needs about {needed / 2**20:,.1f} MiB, "
                         f"{free / 2**20:,.1f} MiB are free there", hint)


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def open_append(path):
    """Open a log for appending, refusing a symlink in its place."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refuse_link(path) from None
        raise
    return os.fdopen(fd, "a")


def refuse_link(path) -> InputError:
    return InputError(f"{path} is a symbolic link; zodi does not write through links in its output folders",
                      "remove the link, or choose another --out")


def check_not_link(path) -> None:
    if Path(path).is_symlink():
        raise refuse_link(path)
