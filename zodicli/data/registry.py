"""The dataset registry: ``open_dataset("acdc:fog:val")`` -> a :class:`Dataset`.

A spec is ``NAME[:ARG[:ARG]]``, or several joined by ``+`` for their union (e.g. every toy style:
``toy:clear:train+toy:fog:train``; keys must not collide). Each dataset type registers itself with its name, aliases and
expected folder layout (printed when a root is missing or malformed). Roots resolve, per dataset,
from ``ZODI_<NAME>_ROOT``, else ``<data root>/<folder>``, where the data root is ``--data-root``,
then ``$ZODI_DATA``, then ``./data``.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from . import classsets
from .images import key_of, read_label, read_rgb


@dataclass(frozen=True)
class DatasetType:
    name: str
    aliases: tuple[str, ...]
    folder: str          # default folder name under the data root ("" = none)
    usage: str           # spec syntax, e.g. "acdc:COND[:SPLIT]"
    layout: str          # expected layout, one line
    factory: Callable    # (args: list[str], root: Path | None, **opts) -> Dataset


REGISTRY: dict[str, DatasetType] = {}
ALIASES: dict[str, str] = {}


def register(name: str, *, aliases=(), folder="", usage="", layout=""):
    def deco(factory):
        REGISTRY[name] = DatasetType(name, tuple(aliases), folder, usage or name, layout, factory)
        for a in (name, *aliases):
            ALIASES[a] = name
        return factory
    return deco


class Dataset:
    """Items in sorted key order. ``image(key)`` -> (H, W, 3) uint8; ``label(key)`` -> (H, W)
    uint8 train ids with 255 = ignore, or ``None`` when the split has no labels."""

    spec: str = ""
    classes = property(lambda self: classsets.load("cityscapes19"))

    def keys(self) -> list[str]:
        raise NotImplementedError

    def image(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def label(self, key: str) -> np.ndarray | None:
        raise NotImplementedError

    @property
    def has_labels(self) -> bool:
        return True

    def label_ids(self, key: str) -> np.ndarray | None:
        """(H, W) uint8 Cityscapes label ids as stored (ZoDi colours all 34 for ControlNet), or None."""
        return None

    @property
    def has_label_ids(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.keys())

    def fingerprint(self) -> str:
        """Identity of the item list (name, spec, keys); recorded as an input of every output."""
        h = hashlib.sha256(type(self).__name__.encode())
        for k in self.keys():
            h.update(k.encode() + b"\0")
        return h.hexdigest()[:16]


class Union(Dataset):
    """Several datasets as one; each key belongs to exactly one part."""

    def __init__(self, parts: list[Dataset]):
        self.parts = parts
        self._owner = {}
        for part in parts:
            for k in part.keys():  # noqa: SIM118 - Dataset.keys() is a method, not a dict view
                if k in self._owner:
                    raise InputError(f"{self._owner[k].spec} and {part.spec} share the key {k!r}",
                                     "a union (A+B) needs distinct keys: join datasets with different file names")
                self._owner[k] = part
        self._keys = sorted(self._owner)

    def keys(self):
        return self._keys

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"union")
        for part in self.parts:
            h.update(part.fingerprint().encode())
        return h.hexdigest()[:16]

    def image(self, key):
        return self._owner[key].image(key)

    def label(self, key):
        return self._owner[key].label(key)

    def label_ids(self, key):
        return self._owner[key].label_ids(key)

    @property
    def has_labels(self):
        return all(p.has_labels for p in self.parts)

    @property
    def has_label_ids(self):
        return all(p.has_label_ids for p in self.parts)


class FileDataset(Dataset):
    """Images and labels as files. ``pairs`` maps key -> (image path, label path or None);
    ``decode`` turns a stored label array into train ids."""

    def __init__(self, spec: str, pairs: dict[str, tuple[Path, Path | None]], decode: Callable[[np.ndarray], np.ndarray]):
        self.spec = spec
        self._pairs = pairs
        self._keys = sorted(pairs)
        self._decode = decode
        self._fingerprint: str | None = None

    def keys(self):
        return self._keys

    def fingerprint(self) -> str:
        """Keys plus each file's size and first 4 KiB: another dataset under the same keys (another
        city, re-rendered images) is a different input, while a copy elsewhere (node-local scratch,
        whatever its mtimes) is the same one."""
        if self._fingerprint is None:
            h = hashlib.sha256(type(self).__name__.encode())
            for k in self._keys:
                h.update(k.encode() + b"\0")
                for path in self._pairs[k]:
                    if path is not None:
                        h.update(file_signature(path))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def paths(self, key: str) -> tuple[Path, Path | None]:
        try:
            return self._pairs[key]
        except KeyError:
            raise InputError(f"{self.spec} has no item {key!r}", "check the key") from None

    def image(self, key):
        return read_rgb(self.paths(key)[0])

    def label(self, key):
        path = self.paths(key)[1]
        if path is None:
            return None
        raw = read_label(path)
        warn_unknown_ids(path, raw, self._decode, self.spec)
        return self._decode(raw)

    @property
    def has_labels(self):
        return any(lbl is not None for _, lbl in self._pairs.values())

    def label_ids(self, key):
        path = self.paths(key)[1]
        if path is None or not self.has_label_ids:
            return None
        return np.minimum(read_label(path), 255).astype(np.uint8)

    @property
    def has_label_ids(self):
        return self._decode is decode_label_ids and self.has_labels


def file_signature(path: Path, head: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return size.to_bytes(8, "little") + hashlib.sha256(f.read(head)).digest()
    except OSError as e:
        raise InputError(f"cannot read {path} ({e.strerror})", "check the dataset's files and their permissions") from None


def decode_label_ids(a: np.ndarray) -> np.ndarray:
    """Cityscapes/GTA5 label ids (0-33) -> train ids; any other id -> 255 (ignore)."""
    return np.take(classsets.label_id_to_train_id(), a if a.dtype == np.uint8 else np.minimum(a, 255))


def decode_train_ids(a: np.ndarray) -> np.ndarray:
    """Train ids (0-18, 255 = ignore) as stored; any other value -> 255."""
    out = a.astype(np.uint8) if a.dtype == np.uint8 else np.minimum(a, 255).astype(np.uint8)
    if a.max(initial=0) >= 19:
        out[(a >= 19) & (a != 255)] = 255
    return out


# The ids each stored encoding defines; anything else becomes ignore, with a warning. An encoding
# mistake shows in every file, so only the first CHECKED files of a dataset are looked at (each
# look is a pass over the pixels: 15 % of evaluate's time when made on every file).
decode_label_ids.unknown = lambda a: a >= 34 if a.max(initial=0) >= 34 else np.zeros(a.shape, bool)
decode_train_ids.unknown = lambda a: (a >= 19) & (a != 255) if a.max(initial=0) >= 19 else np.zeros(a.shape, bool)
CHECKED = 50
_warned: set[str] = set()
_checked: dict[str, int] = {}


def warn_unknown_ids(path, a: np.ndarray, decode, what: str) -> None:
    """Tell once per dataset that a label file holds ids outside its encoding, and how many pixels."""
    unknown = getattr(decode, "unknown", None)
    if unknown is None or what in _warned or _checked.get(what, 0) >= CHECKED:
        return
    _checked[what] = _checked.get(what, 0) + 1
    mask = unknown(a)
    if mask.any():
        _warned.add(what)
        ids = np.unique(a[mask])
        shown = ", ".join(map(str, ids[:5].tolist())) + (", ..." if len(ids) > 5 else "")
        print(f"zodi: warning: {path} holds ids outside the {decode.__name__.removeprefix('decode_')} encoding "
              f"({shown}) on {mask.mean():.1%} of its pixels; they count as ignore (check the label encoding; "
              f"reported for the first such file of {what} only)", file=sys.stderr)


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("ZODI_DATA") or "data")


def dataset_root(dtype: DatasetType, explicit=None) -> Path:
    env = os.environ.get(f"ZODI_{dtype.name.upper()}_ROOT")
    return Path(env) if env else data_root(explicit) / dtype.folder


def missing_layout(dtype: DatasetType, root: Path, what: str) -> InputError:
    return InputError(
        f"{dtype.name}: {what} under {root}; expected layout: {dtype.layout}",
        f"pass --data-root, set ZODI_DATA or ZODI_{dtype.name.upper()}_ROOT",
    )


def scan(dtype: DatasetType, root: Path, pattern: str, label_of: Callable[[Path], Path | None], require_labels=True):
    """Glob ``pattern`` under ``root`` and pair each image with ``label_of(image)``."""
    if not root.is_dir():
        raise missing_layout(dtype, root, "root folder does not exist")
    pairs = {}
    for img in root.glob(pattern):
        key = key_of(img)
        if key in pairs:
            raise InputError(f"{dtype.name}: two images share the key {key!r} ({pairs[key][0]} and {img})",
                             "keys are file names without suffixes and must be unique")
        lbl = label_of(img)
        if lbl is not None and not lbl.is_file():
            if require_labels:
                raise missing_layout(dtype, root, f"label file {lbl} for {img.name} is missing")
            lbl = None
        pairs[key] = (img, lbl)
    if not pairs:
        raise missing_layout(dtype, root, f"no images match {pattern}")
    return pairs


def _load_all() -> None:
    from . import acdc, cityscapes, flat, folder, toyset  # noqa: F401  (they register themselves)


def open_dataset(spec: str, data_root: str | os.PathLike | None = None, allow_partial: bool = False) -> Dataset:
    """Open a dataset by spec, e.g. ``cs:val``, ``acdc:fog:val``, ``gta``, ``h5:out/syn.h5``, ``toy:fog:val``."""
    _load_all()
    if not spec:
        raise InputError("empty dataset spec", "e.g. cityscapes:val, acdc:fog:val, gta5, h5:FILE, toy:fog:val")
    union = _split(spec, "+")
    if len(union) > 1 and not (spec.startswith("h5:") and Path(spec[3:]).exists()):
        ds = Union([open_dataset(part, data_root, allow_partial) for part in union])
        ds.spec = spec
        return ds
    name, _, rest = spec.partition(":")
    if name not in ALIASES:
        raise InputError(f"unknown dataset {name!r} in {spec!r}", f"known: {', '.join(sorted(REGISTRY))} (see 'zodi datasets list')")
    dtype = REGISTRY[ALIASES[name]]
    if dtype.name == "h5":
        args = [_unescape(rest)] if rest else []
    else:
        args = [_unescape(a) for a in _split(rest, ":")] if rest else []
    ds = dtype.factory(args, data_root=data_root, dtype=dtype, allow_partial=allow_partial)
    ds.spec = spec
    return ds


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` unless escaped with a backslash (a path holding ':' or '+': ``folder:/data/a\\:b``)."""
    return re.split(r"(?<!\\)" + re.escape(sep), text)


def _unescape(text: str) -> str:
    return text.replace("\\:", ":").replace("\\+", "+")


def split_arg(args: list[str], i: int, default: str, choices: tuple[str, ...], dtype: DatasetType) -> str:
    value = args[i] if len(args) > i and args[i] else default
    if value not in choices:
        raise InputError(f"{dtype.name}: unknown split or condition {value!r}", f"usage: {dtype.usage}; choose from {', '.join(choices)}")
    return value
