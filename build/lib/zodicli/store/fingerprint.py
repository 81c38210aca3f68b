"""Content fingerprints of input files and folders (checkpoints, model folders), recorded in an
artifact's inputs: new weights at the same path are a different input, so a resume refuses to mix
them with outputs of the old ones."""
from __future__ import annotations

import hashlib
from pathlib import Path


def _update(h, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_fingerprint(path) -> str:
    """sha256 of a file's bytes, 16 hex digits."""
    h = hashlib.sha256()
    _update(h, Path(path))
    return h.hexdigest()[:16]


def tree_fingerprint(path) -> str:
    """sha256 over a file, or over a folder's files (relative path and bytes, in sorted order; hidden
    files and *.md, such as model cards, left out), 16 hex digits."""
    path = Path(path)
    if path.is_file():
        return file_fingerprint(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if f.suffix == ".md" or any(part.startswith(".") for part in rel.parts):
            continue
        h.update(str(rel.as_posix()).encode() + b"\0")
        _update(h, f)
    return h.hexdigest()[:16]
