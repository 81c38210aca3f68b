"""Writer and reader of zodi artifacts (one HDF5 file per command output).

Schema (plain HDF5, readable with h5py or ``h5ls -r``)::

    /keys                  (N,) utf-8 strings, sorted; row i of every field belongs to keys[i]
    /<field>               (N, ...) one row per item, e.g. images (N,H,W,3) uint8,
                           labels (N,H,W) uint8 train ids (255 = ignore), preds, confidence,
                           latents, noise, logits/probs float16, features/<name>
    /<field>/<i:08d>       "ragged" fields (items of different shapes): a group, one dataset per row
                           every row is stored with HDF5's fletcher32 checksum (no plugin needed to
                           read it), so a flipped bit is an error, never a silently wrong value
    attributes zodi_*      command, settings (JSON), settings_hash, inputs (JSON fingerprints),
                           versions (JSON), zodi_version, created, complete, n_items, n_expected,
                           shard, fingerprint, schema

Crash safety does not rely on HDF5 surviving a kill: the main file is only ever replaced whole
(written to a fresh ``.OUT.*.tmp``, then ``os.replace``). Finished items go, one batch per file, to
``OUT.parts/`` the same way. A kill -9 therefore loses at most the batch in flight; the next run
(or ``finish``) folds the parts into the main file, sorted by key, so the result does not depend
on batch size, order, interruptions or sharding.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np

from .. import __version__
from ..errors import ConflictError, InputError, one_line
from ..settings import canonical_json, diff_settings, settings_hash
from .files import atomic_path, check_not_link, check_space, temporaries, write_bytes
from .lock import WriterLock

SCHEMA = 1
STR = h5py.string_dtype("utf-8")
RESERVED = {"keys"}
MAX_SEGMENTS = 16         # a resume adds one segment; past this many, the next fold writes one file again


def library_versions() -> dict:
    """Versions of the libraries that shape results (read from metadata, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version
    import platform

    out = {"python": platform.python_version(), "zodi": __version__}
    for pkg in ("numpy", "h5py", "torch", "diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub", "peft", "pillow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    out["hdf5"] = h5py.version.hdf5_version
    return out


def _atomic_h5(path: Path, fill, in_memory: bool = False) -> None:
    """Write an HDF5 file to a fresh temporary with ``fill(h5file)``, fsync, then rename over ``path``.

    HDF5 that meets a full disk cannot close its file and crashes the process at exit, so small files
    (``in_memory``: a batch's part) are built in memory and written with plain writes, and big ones are
    written only after :func:`~zodicli.store.files.check_space`."""
    if in_memory:
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            fill(f)
        write_bytes(path, buf.getbuffer())
        return
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        fill(f)


def _field_names(group: h5py.Group, prefix: str = "") -> list[str]:
    """Per-item fields: datasets, nested groups (features/<name>), and ragged groups."""
    names = []
    for name, obj in group.items():
        full = f"{prefix}{name}"
        if full in RESERVED:
            continue
        if isinstance(obj, h5py.Dataset) or obj.attrs.get("ragged", False):
            names.append(full)
        else:
            names.extend(_field_names(obj, full + "/"))
    return sorted(names)


def _read_attrs(f: h5py.File) -> dict:
    a = f.attrs
    if "zodi_schema" not in a:
        return {}
    return {
        "command": str(a["zodi_command"]),
        "settings": json.loads(a["zodi_settings"]),
        "settings_hash": str(a["zodi_settings_hash"]),
        "inputs": json.loads(a["zodi_inputs"]),
        "versions": json.loads(a["zodi_versions"]),
        "zodi_version": str(a["zodi_version"]),
        "created": str(a["zodi_created"]),
        "complete": bool(a["zodi_complete"]),
        "n_items": int(a["zodi_n_items"]),
        "n_expected": int(a["zodi_n_expected"]),
        "shard": str(a["zodi_shard"]),
        "fingerprint": str(a["zodi_fingerprint"]),
        "schema": int(a["zodi_schema"]),
        "field_attrs": json.loads(a["zodi_field_attrs"]) if "zodi_field_attrs" in a else {},
        "reads": json.loads(a["zodi_reads"]) if "zodi_reads" in a else [],
    }


def _write_attrs(f: h5py.File, meta: dict) -> None:
    f.attrs["zodi_schema"] = SCHEMA
    f.attrs["zodi_command"] = meta["command"]
    f.attrs["zodi_settings"] = canonical_json(meta["settings"])
    f.attrs["zodi_settings_hash"] = meta["settings_hash"]
    f.attrs["zodi_inputs"] = canonical_json(meta["inputs"])
    f.attrs["zodi_versions"] = canonical_json(meta["versions"])
    f.attrs["zodi_version"] = meta["zodi_version"]
    f.attrs["zodi_created"] = meta["created"]
    f.attrs["zodi_complete"] = bool(meta["complete"])
    f.attrs["zodi_n_items"] = int(meta["n_items"])
    f.attrs["zodi_n_expected"] = int(meta["n_expected"])
    f.attrs["zodi_shard"] = meta["shard"]
    f.attrs["zodi_fingerprint"] = meta["fingerprint"]
    f.attrs["zodi_field_attrs"] = canonical_json(meta.get("field_attrs") or {})


def unreadable(path: Path, e: OSError) -> InputError:
    if not h5py.is_hdf5(path):
        return InputError(f"{path} is not an HDF5 file", "pass an artifact (.h5) written by a zodi command")
    return InputError(f"{path} is a damaged HDF5 file ({one_line(str(e))})",
                      "re-run the command that made it (with --overwrite)")


def content_fingerprint(settings_hash_: str, inputs: Mapping, keys: Iterable[str]) -> str:
    """What downstream commands record for this artifact as one of their inputs."""
    import hashlib

    h = hashlib.sha256()
    h.update(settings_hash_.encode())
    h.update(canonical_json(inputs).encode())
    for k in keys:
        h.update(k.encode() + b"\0")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Reading


class Artifact:
    """Read-only view of an artifact. Opens the file lazily and reopens it after a fork, so it can
    be handed to DataLoader workers (no HDF5 handle crosses a fork)."""

    def __init__(self, path: str | os.PathLike, allow_partial: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            hint = "run the command that makes it first"
            if list(self.path.parent.glob(self.path.name.removesuffix(".h5") + ".shard-*-of-*.h5")):
                hint = f"its shards exist: run 'zodi merge {self.path}'"
            raise InputError(f"artifact {self.path} does not exist", hint)
        self._file: h5py.File | None = None
        self._pid = None
        try:
            f = self.file
        except OSError as e:
            raise unreadable(self.path, e) from None
        self.meta = _read_attrs(f)
        if not self.meta:
            raise InputError(f"{self.path} is an HDF5 file but not a zodi artifact", "pass a file written by zodi")
        missing = missing_reads(self.path)
        if missing:                 # HDF5 would read a missing source's rows as zeros, silently
            if missing.parent.name.endswith(".segments"):
                raise InputError(f"{self.path} reads rows from {missing.parent.name}/{missing.name}, which is missing",
                                 f"keep the folder {missing.parent.name}/ beside the file it belongs to "
                                 "('zodi pack' makes one self-contained file)")
            raise InputError(f"{self.path} reads its rows from its shards, and {missing.name} is not beside it",
                             "keep the shards beside the merged file, or merge again with 'zodi merge --pack'")
        self.keys: list[str] = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][()]] if "keys" in f else []
        if not self.meta["complete"] and not allow_partial:
            raise InputError(
                f"{self.path} is incomplete ({len(self.keys)}/{self.meta['n_expected']} items)",
                "re-run the command that made it to finish it, or pass --allow-partial",
            )
        self._index = {k: i for i, k in enumerate(self.keys)}

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def complete(self) -> bool:
        return self.meta["complete"]

    @property
    def fields(self) -> list[str]:
        return _field_names(self.file)

    def has(self, field: str) -> bool:
        return field in self.file

    def index(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise InputError(f"key {key!r} is not in {self.path}", "check that the artifacts come from the same dataset") from None

    def get(self, field: str, key: str | int) -> np.ndarray:
        """One item's row of ``field``, by key or row index."""
        i = key if isinstance(key, (int, np.integer)) else self.index(key)
        return _read_item(self.file, field, i, False, self.path)

    def describe(self) -> list[dict]:
        """Name, per-item shape, dtype and bytes of every field."""
        rows = []
        for name in self.fields:
            obj = self.file[name]
            if isinstance(obj, h5py.Group):
                shapes = {obj[k].shape for k in obj}
                dtype = next(iter(obj.values())).dtype if len(obj) else None
                rows.append({"field": name, "shape": "ragged " + " | ".join(map(str, sorted(shapes)[:3])),
                             "dtype": str(dtype), "bytes": sum(_stored_size(obj[k]) for k in obj)})
            else:
                rows.append({"field": name, "shape": str(obj.shape[1:]), "dtype": str(obj.dtype),
                             "bytes": _stored_size(obj), **dict(obj.attrs)})
        return rows


def _stored_size(ds: h5py.Dataset) -> int:
    """Bytes a dataset takes on disk; for a virtual one (merged shards, resume segments), its share of
    the source datasets it maps."""
    if not ds.is_virtual:
        return ds.id.get_storage_size()
    total, folder = 0, Path(ds.file.filename).parent
    for m in ds.virtual_sources():
        with h5py.File(folder / m.file_name, "r") as f:
            src = f[m.dset_name]
            total += int(_stored_size(src) * m.src_space.get_select_npoints() / max(src.size, 1))
    return total


def open_artifact(path, allow_partial: bool = False) -> Artifact:
    return Artifact(path, allow_partial=allow_partial)


def reads(path: Path) -> list[Path]:
    """The files whose rows ``path`` reads (merged shards, resume segments); empty when self-contained."""
    with h5py.File(path, "r") as f:
        names = json.loads(f.attrs["zodi_reads"]) if "zodi_reads" in f.attrs else []
    return [Path(path).parent / name for name in names]


def _stored_bytes(path: Path) -> int:
    """Bytes of ``path`` and of the files it reads its rows from."""
    return os.path.getsize(path) + sum(_stored_bytes(p) for p in reads(path))


def missing_reads(path: Path) -> Path | None:
    """The first file that ``path`` reads, directly or through a file it reads, that is not there."""
    for p in reads(path):
        if not p.is_file():
            return p
        deeper = missing_reads(p)
        if deeper:
            return deeper
    return None


def pack_artifact(path) -> dict:
    """Rewrite ``path`` as one self-contained file holding every row it reads from shards or segments;
    its own segments are then deleted (shards are left for the user to delete)."""
    path = Path(path)
    with WriterLock(path, "zodi pack"):
        art = Artifact(path, allow_partial=True)
        sources = {k: _Source(path, i, False) for i, k in enumerate(art.keys)}
        read = reads(path)
        meta = art.meta
        art.close()
        if read:
            write_consolidated(path, meta, sources)
        segments = path.with_name(path.name + ".segments")
        if segments.is_dir():
            shutil.rmtree(segments)
    return {"out": str(path), "items": len(sources), "was_reading": [str(p) for p in read]}


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class _Source:
    """Where one finished item lives before consolidation: a file and a row in it."""

    path: Path
    row: int
    part: bool


def _damaged(f: h5py.File, field: str, row: int, e: OSError, path=None) -> InputError:
    return InputError(f"{path or f.filename}: row {row} of '{field}' cannot be read, the file is damaged "
                      f"({one_line(str(e))})", "re-run the command that made it with --overwrite, or restore a copy")


def _row_dataset(f: h5py.File, field: str, row: int, part: bool) -> tuple[h5py.Dataset, int | None]:
    """The dataset that holds one row, and the row's index in it (None: the dataset is the row)."""
    obj = f[f"{field}/{row:08d}"] if part else f[field]
    if isinstance(obj, h5py.Group):
        return obj[f"{row:08d}"], None
    return obj, None if part else row


def _chunk_offset(ds: h5py.Dataset, index: int | None) -> tuple:
    return (0,) * ds.ndim if index is None else (index,) + (0,) * (ds.ndim - 1)


def _one_chunk_per_row(ds: h5py.Dataset, index: int | None) -> bool:
    if ds.is_virtual or ds.chunks is None:
        return False
    row_shape = ds.shape if index is None else ds.shape[1:]
    return ds.chunks == (row_shape if index is None else (1, *row_shape))


def _same_chunks(src: h5py.Dataset, i: int | None, dst: h5py.Dataset, j: int | None) -> bool:
    """Whether a row's stored chunk in ``src`` is byte for byte what ``dst`` would store for it."""
    return (_one_chunk_per_row(src, i) and _one_chunk_per_row(dst, j) and src.dtype == dst.dtype
            and (src.shape if i is None else src.shape[1:]) == (dst.shape if j is None else dst.shape[1:])
            and all(getattr(src, a) == getattr(dst, a) for a in ("compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset")))


def _read_item(f: h5py.File, field: str, row: int, part: bool, path=None) -> np.ndarray:
    """One row; a row whose checksum (fletcher32) fails is one line naming the file, field and row."""
    try:
        ds, index = _row_dataset(f, field, row, part)
        return ds[()] if index is None else ds[index]
    except OSError as e:
        raise _damaged(f, field, row, e, path) from None


def _copy_row(dst: h5py.Dataset, j: int | None, f: h5py.File, field: str, row: int, part: bool) -> None:
    """Copy one row into row ``j`` of ``dst`` (None: ``dst`` is the row): its stored chunk as it is,
    not decompressed and compressed again, where both sides store it alike; else its values. A copied
    chunk keeps its checksum, so a damaged row is still an error when it is read."""
    try:
        src, i = _row_dataset(f, field, row, part)
        if _same_chunks(src, i, dst, j):
            mask, data = src.id.read_direct_chunk(_chunk_offset(src, i))
            dst.id.write_direct_chunk(_chunk_offset(dst, j), data, mask)
            return
    except OSError as e:
        raise _damaged(f, field, row, e) from None
    value = _read_item(f, field, row, part)
    if j is None:
        dst[()] = value
    else:
        dst[j] = value


def row_filters(shape: tuple, dtype: np.dtype) -> dict:
    """HDF5 filters for one row (one chunk) of a field, by what it holds; plain gzip, which h5py and
    h5ls read without plugins. Measured at 2048x1024 (docs/benchmarks.md): label maps take 1.8x their
    PNG size at gzip 6 (raw: 55x), toy-city images 1.15x at gzip 1, float16 maps about half their raw
    size with shuffle. Latents, noise, logits and features stay raw: gzip saves ~25 % of them at 6-7x
    the write time, and training reads them every epoch."""
    dtype = np.dtype(dtype)
    if len(shape) == 2 and dtype.kind in "iub" and dtype.itemsize <= 2:              # labels, preds
        return {"compression": "gzip", "compression_opts": 6}
    if len(shape) == 3 and shape[-1] in (1, 3) and dtype == np.uint8:                 # images
        return {"compression": "gzip", "compression_opts": 1}
    if len(shape) == 2 and dtype == np.float16:                                       # confidence
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    return {}


def _row_layout(shape: tuple, dtype, compress: bool = True, checksum: bool = True) -> dict:
    """Chunking and filters of one row: one chunk, fletcher32, :func:`row_filters`; nothing for a
    scalar or empty row, which HDF5 cannot chunk."""
    if not shape or not np.prod(shape, dtype=np.int64):
        return {}
    return {"chunks": tuple(shape), "fletcher32": checksum, **(row_filters(shape, dtype) if compress else {})}


def write_consolidated(path: Path, meta: dict, sources: dict[str, _Source], compress: bool = True,
                       checksum: bool = True) -> None:
    """Write ``path`` atomically holding the items of ``sources`` in sorted key order, each row with a
    fletcher32 checksum and the filters of :func:`row_filters` unless ``checksum`` or ``compress`` is
    off (the benchmark's baselines)."""
    keys = sorted(sources)
    handles: dict[Path, h5py.File] = {}

    def h(p: Path) -> h5py.File:
        if p not in handles:
            handles[p] = h5py.File(p, "r")
        return handles[p]

    # Per field: the shape and dtype of every item, read from metadata only.
    shapes: dict[str, list] = {}
    dtypes: dict[str, np.dtype] = {}
    for k in keys:
        s = sources[k]
        f = h(s.path)
        for field in _item_fields(f, s):
            per_item = s.part or isinstance(f[field], h5py.Group)      # one dataset per item, or a stacked row
            ds = f[f"{field}/{s.row:08d}"] if per_item else f[field]
            shape = ds.shape if per_item else ds.shape[1:]
            shapes.setdefault(field, []).append(shape)
            dtypes[field] = ds.dtype
    for field, lst in shapes.items():
        if len(lst) != len(keys):
            raise InputError(f"field '{field}' is missing for some items of {path}", "re-run with --overwrite")

    def fill(out: h5py.File) -> None:
        out.create_dataset("keys", data=np.array(keys, dtype=object), dtype=STR)
        for field, lst in sorted(shapes.items()):
            ragged = len(set(lst)) > 1
            if ragged:
                g = out.create_group(field)
                g.attrs["ragged"] = True
                for i, k in enumerate(keys):
                    s = sources[k]
                    row = g.create_dataset(f"{i:08d}", shape=lst[i], dtype=dtypes[field],
                                           **_row_layout(lst[i], dtypes[field], compress, checksum))
                    _copy_row(row, None, h(s.path), field, s.row, s.part)
            else:
                shape = lst[0] if lst else ()
                layout = _row_layout(shape, dtypes[field], compress, checksum) if len(keys) else {}
                if layout:
                    layout["chunks"] = (1, *layout["chunks"])
                ds = out.create_dataset(field, shape=(len(keys), *shape), dtype=dtypes[field], **layout)
                for i, k in enumerate(keys):
                    s = sources[k]
                    _copy_row(ds, i, h(s.path), field, s.row, s.part)
        for field, attrs in (meta.get("field_attrs") or {}).items():
            if field in out:
                for k, v in attrs.items():
                    out[field].attrs[k] = v
        _write_attrs(out, {**meta, "n_items": len(keys)})

    try:
        files = {s.path: s.part for s in sources.values()}
        check_space(path, sum(os.path.getsize(p) if part else _stored_bytes(p) for p, part in files.items()),
                    f"free some space, then re-run; the finished items are kept in {path.name} and {path.name}.parts/")
        _atomic_h5(path, fill)
    finally:
        for f in handles.values():
            f.close()


def _runs(dest: list[int]) -> list[tuple[int, int, int, int]]:
    """Split increasing destination rows into arithmetic runs: ``(first row in dest, step, source
    start, count)``; a strided shard is one run, a resumed artifact's segments a few runs each."""
    runs, i = [], 0
    while i < len(dest):
        step = dest[i + 1] - dest[i] if i + 1 < len(dest) else 1
        j = i + 1
        while j < len(dest) and dest[j] - dest[j - 1] == step:
            j += 1
        runs.append((dest[i], step, i, j - i))
        i = j
    return runs


def write_virtual(path: Path, meta: dict, sources: list[Path]) -> bool:
    """Write ``path`` as metadata only: HDF5 virtual datasets (and external links for ragged fields)
    over the artifacts ``sources`` (shards or segments, beside it or below it), whose keys together
    are this artifact's keys. A field whose rows differ in shape across sources is ragged here.
    Returns False, writing nothing, when the sources' fields differ in names or dtypes (pack them then)."""
    files = [h5py.File(p, "r") for p in sources]
    names = [os.path.relpath(p, path.parent) for p in sources]
    try:
        own = [[k.decode() if isinstance(k, bytes) else k for k in f["keys"][()]] for f in files]
        keys = sorted(k for ks in own for k in ks)
        row = {k: i for i, k in enumerate(keys)}
        if len(row) != len(keys):
            return False
        dest = [[row[k] for k in ks] for ks in own]
        used = [(f, name, rows) for f, name, rows in zip(files, names, dest) if rows]
        fields = _field_names(used[0][0]) if used else []
        if any(_field_names(f) != fields for f, _, _ in used):
            return False
        ragged, dtypes = {}, {}
        for fld in fields:
            objs = [f[fld] for f, _, _ in used]
            dtypes[fld] = {(o if isinstance(o, h5py.Dataset) else next(iter(o.values()))).dtype for o in objs}
            ragged[fld] = any(isinstance(o, h5py.Group) for o in objs) or len({o.shape[1:] for o in objs}) > 1
        if any(len(d) != 1 for d in dtypes.values()):
            return False

        def fill(out: h5py.File) -> None:
            out.create_dataset("keys", data=np.array(keys, dtype=object), dtype=STR)
            for fld in fields:
                dtype = next(iter(dtypes[fld]))
                if ragged[fld]:        # one link per row; a row of a stacked source is a one-row virtual dataset
                    g = out.create_group(fld)
                    g.attrs["ragged"] = True
                    for f, name, rows in used:
                        stacked = f[fld] if isinstance(f[fld], h5py.Dataset) else None
                        for j, i in enumerate(rows):
                            if stacked is None:
                                g[f"{i:08d}"] = h5py.ExternalLink(name, f"{fld}/{j:08d}")
                            else:
                                one = h5py.VirtualLayout(shape=stacked.shape[1:], dtype=dtype)
                                one[...] = h5py.VirtualSource(name, fld, shape=stacked.shape)[j]
                                g.create_virtual_dataset(f"{i:08d}", one)
                    continue
                layout = h5py.VirtualLayout(shape=(len(keys), *used[0][0][fld].shape[1:]), dtype=dtype)
                for f, name, rows in used:
                    src = h5py.VirtualSource(name, fld, shape=f[fld].shape)
                    for d0, step, s0, n in _runs(rows):
                        layout[d0: d0 + step * (n - 1) + 1: step] = src[s0: s0 + n]
                out.create_virtual_dataset(fld, layout)
            for fld, attrs in (meta.get("field_attrs") or {}).items():
                if fld in out:
                    for k, v in attrs.items():
                        out[fld].attrs[k] = v
            _write_attrs(out, {**meta, "n_items": len(keys)})
            out.attrs["zodi_reads"] = canonical_json(names)

        _atomic_h5(path, fill, in_memory=True)
        return True
    finally:
        for f in files:
            f.close()


def _item_fields(f: h5py.File, s: _Source) -> list[str]:
    if not s.part:
        return _field_names(f)
    return sorted(f.attrs["fields"]) if "fields" in f.attrs else []


class ArtifactWriter:
    """Writes one artifact, resumably.

    >>> with ArtifactWriter(out, "translate", settings, inputs, keys) as w:
    ...     for batch in chunks(w.todo, 4):
    ...         w.write(batch, {"images": imgs, "labels": labels})

    ``keys`` are all the items this writer must produce (already sharded). On entry the writer
    takes the lock, checks an existing output's settings and inputs (a mismatch is refused unless
    ``overwrite``), and lists the keys still to do. On exit, normal or not, it folds finished
    items into the main file, marking it complete once every key is there.
    """

    def __init__(self, path, command: str, settings: dict, inputs: dict, keys: list[str],
                 shard: tuple[int, int] | None = None, overwrite: bool = False, compress: bool = True,
                 field_attrs: dict | None = None):
        self.path = Path(path)
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.segments = self.path.with_name(self.path.name + ".segments")
        self.keys = sorted(keys)
        if len(set(self.keys)) != len(self.keys):
            raise InputError("the input lists the same key twice", "keys must be unique")
        shash = settings_hash(settings)
        self.meta = {
            "command": command, "settings": settings, "settings_hash": shash, "inputs": inputs,
            "versions": library_versions(), "zodi_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False, "n_items": 0,
            "n_expected": len(self.keys), "shard": f"{shard[0]}/{shard[1]}" if shard else "",
            "fingerprint": content_fingerprint(shash, inputs, self.keys),
            "field_attrs": field_attrs or {},   # per-field attributes, e.g. a feature map's stride
        }
        self.overwrite = overwrite
        self.compress = compress        # off: rows stored raw (the benchmark's baseline)
        self._lock = WriterLock(self.path, f"zodi {command}")
        self._done: set[str] = set()
        self._seq = 0
        self._created = False
        self._folded = -1             # items in the main file after finish(); -1 until then

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "ArtifactWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, exc_type, *exc):
        try:
            self.finish()
            if exc_type is not None and self._created and self._folded == 0:   # failed before its first item:
                self._remove_outputs()                                           # leave nothing behind
        finally:
            self._lock.release()

    def _open(self) -> None:
        check_not_link(self.parts)
        check_not_link(self.segments)
        for stale in temporaries(self.path):
            stale.unlink()
        if self.overwrite:
            self._remove_outputs()
        if self.path.exists():
            try:
                with h5py.File(self.path, "r") as f:
                    old = _read_attrs(f)
                    keys = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][()]] if "keys" in f else []
            except OSError as e:
                raise InputError(f"{self.path} exists but is not a readable HDF5 file ({one_line(str(e))})",
                                 "move it away or pass --overwrite") from None
            if not old:
                raise ConflictError(f"{self.path} exists and is not a zodi artifact", "choose another --out or pass --overwrite")
            self._check_same(old)
            self.meta["created"] = old["created"]
            self._done.update(keys)
        else:
            self._refuse_unmerged_shards()
            self._created = True
            _atomic_h5(self.path, lambda f: (f.create_dataset("keys", shape=(0,), dtype=STR), _write_attrs(f, self.meta)),
                       in_memory=True)
        if self.parts.is_dir():
            for p in sorted(self.parts.glob("*.h5")):
                with h5py.File(p, "r") as f:
                    self._done.update(k.decode() if isinstance(k, bytes) else k for k in f["keys"][()])
                self._seq = max(self._seq, int(p.stem.split("-")[-1]) + 1)
            for t in self.parts.glob(".*.tmp"):
                t.unlink()
        self._remove_unread_segments()
        extra = self._done - set(self.keys)
        if extra:
            raise ConflictError(f"{self.path} holds {len(extra)} item(s) not in this run's input (e.g. {sorted(extra)[0]!r})",
                                "pass --overwrite to start over")

    def _refuse_unmerged_shards(self) -> None:
        """An unsharded run beside the shards of a sharded one would silently redo all their work."""
        from .shards import find_shards

        if self.meta["shard"] or self.overwrite:
            return
        try:
            n, _ = find_shards(self.path)
        except InputError:
            return
        raise ConflictError(f"{self.path} was started as {n} shards and is not merged yet",
                            f"run 'zodi merge {self.path}' first (or pass --overwrite to redo it unsharded)")

    def _check_same(self, old: dict) -> None:
        problems = diff_settings(old["settings"], self.meta["settings"])
        if old["command"] != self.meta["command"]:
            problems.insert(0, f"command: {old['command']!r} -> {self.meta['command']!r}")
        if canonical_json(old["inputs"]) != canonical_json(self.meta["inputs"]):
            changed = sorted(k for k in set(old["inputs"]) | set(self.meta["inputs"])
                             if old["inputs"].get(k) != self.meta["inputs"].get(k))
            problems.append(f"inputs changed: {', '.join(changed)}")
        if old["n_expected"] != self.meta["n_expected"] and not problems:
            problems.append(f"number of items: {old['n_expected']} -> {self.meta['n_expected']}")
        if old["shard"] != self.meta["shard"] and not problems:
            problems.append(f"shard: {old['shard']!r} -> {self.meta['shard']!r}")
        if problems:
            raise ConflictError(f"{self.path} was made with other settings: {'; '.join(problems)}",
                                "pass --overwrite to replace it, or choose another --out")

    def _remove_outputs(self) -> None:
        if self.path.exists():
            self.path.unlink()
        for folder in (self.parts, self.segments):
            if folder.exists():
                shutil.rmtree(folder)

    # -- progress -------------------------------------------------------------------------------
    @property
    def todo(self) -> list[str]:
        """Keys still to produce, in sorted order."""
        return [k for k in self.keys if k not in self._done]

    @property
    def complete(self) -> bool:
        return not self.todo

    def write(self, keys: list[str], fields: Mapping[str, Iterable[np.ndarray]]) -> None:
        """Persist finished items: ``fields[name][j]`` is the row of ``keys[j]``.

        The batch lands in its own part file (tmp + rename), so it is either fully there or not."""
        fields = {name: [np.asarray(a) for a in rows] for name, rows in fields.items()}
        for name, rows in fields.items():
            if len(rows) != len(keys):
                raise ValueError(f"field {name}: {len(rows)} rows for {len(keys)} keys")
            if name in RESERVED or name.startswith("/") or not name:
                raise ValueError(f"invalid field name {name!r}")
        unknown = set(keys) - set(self.keys)
        if unknown:
            raise ValueError(f"keys not expected by this writer: {sorted(unknown)[:3]}")
        self.parts.mkdir(exist_ok=True)
        part = self.parts / f"part-{self._seq:08d}.h5"
        self._seq += 1

        def fill(f: h5py.File) -> None:
            f.create_dataset("keys", data=np.array(keys, dtype=object), dtype=STR)
            f.attrs["fields"] = sorted(fields)
            for name, rows in fields.items():
                for j, a in enumerate(rows):
                    f.create_dataset(f"{name}/{j:08d}", data=a, **_row_layout(a.shape, a.dtype, self.compress))

        _atomic_h5(part, fill, in_memory=True)
        self._done.update(keys)

    def finish(self) -> bool:
        """Fold the part files into the artifact; mark it complete if every key is done.

        The first fold writes the main file whole. A later one (a resumed run) writes only the new
        items, as one immutable segment in ``OUT.h5.segments/``, and rewrites the main file as
        metadata over the segments (the earlier main file becomes the first segment by a hard link),
        so its cost is in proportion to the items it adds. Past ``MAX_SEGMENTS`` it folds everything
        into one file again."""
        parts = sorted(self.parts.glob("*.h5")) if self.parts.is_dir() else []
        if not parts and self.path.exists():
            with h5py.File(self.path, "r") as f:
                self._folded = len(f["keys"]) if "keys" in f else 0
                if bool(f.attrs.get("zodi_complete", False)) or not self.complete:
                    return bool(f.attrs.get("zodi_complete", False))
        held, segments = self._main_contents()
        new: dict[str, _Source] = {}
        for p in parts:
            with h5py.File(p, "r") as f:
                for j, k in enumerate(f["keys"][()]):
                    k = k.decode() if isinstance(k, bytes) else k
                    if k not in held:         # a kill after the last fold, before its parts were removed
                        new[k] = _Source(p, j, True)
        done = set(held) | set(new)
        self.meta["complete"] = set(self.keys) <= done
        # counted from the files, not from _done: a signal may land between a part's rename and its bookkeeping
        self._folded = len(done)
        if not held or max(len(segments), 1) + 1 > MAX_SEGMENTS or not self._fold_as_segment(segments, new):
            write_consolidated(self.path, self.meta, {**{k: _Source(self.path, i, False) for i, k in enumerate(held)}, **new},
                               self.compress)
        self._remove_unread_segments()
        if self.parts.is_dir():
            shutil.rmtree(self.parts)
        return self.meta["complete"]

    # -- segments -------------------------------------------------------------------------------
    def _main_contents(self) -> tuple[list[str], list[Path]]:
        """The main file's keys (in row order) and the segments it reads."""
        if not self.path.exists():
            return [], []
        with h5py.File(self.path, "r") as f:
            keys = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][()]] if "keys" in f else []
        return keys, reads(self.path)

    def _fold_as_segment(self, segments: list[Path], new: dict[str, _Source]) -> bool:
        """Write ``new`` as one more segment and the main file as metadata over all of them."""
        self.segments.mkdir(exist_ok=True)
        seq = max((int(p.stem.split("-")[-1]) for p in self.segments.glob("segment-*.h5")), default=-1) + 1
        if not segments:                          # the main file holds rows itself: it becomes segment 0
            first = self.segments / f"segment-{seq:06d}.h5"
            try:
                os.link(self.path, first)
            except OSError:                       # a filesystem without hard links: copy it once
                with atomic_path(first) as tmp:
                    shutil.copyfile(self.path, tmp)
            segments, seq = [first], seq + 1
        if new:
            segment = self.segments / f"segment-{seq:06d}.h5"
            write_consolidated(segment, {**self.meta, "complete": False}, new, self.compress)
            segments = [*segments, segment]
        if write_virtual(self.path, self.meta, segments):
            return True
        if new:                                   # fields changed shape between runs: fold it all instead
            segment.unlink()
        return False

    def _remove_unread_segments(self) -> None:
        """Segments the main file no longer reads (after a full fold, or written by a killed fold)."""
        if not self.segments.is_dir():
            return
        keep = {p.name for p in (reads(self.path) if self.path.exists() else []) if p.parent == self.segments}
        for p in self.segments.iterdir():
            if p.name not in keep:
                p.unlink()
        if not keep:
            self.segments.rmdir()
