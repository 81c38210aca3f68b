"""``--shard i/N|auto``: a deterministic strided subset of the sorted keys."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError


MAX_SHARDS = 100_000


def env_int(env, name: str, default: int | None = None) -> int:
    """An integer environment variable (Slurm's, torchrun's), or one line naming it."""
    value = env.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not an integer", f"unset or fix {name}, or pass --shard i/N") from None


def parse_shard(spec: str | None, env=None) -> tuple[int, int] | None:
    """``"i/N"`` (0 <= i < N) or ``"auto"`` -> ``(i, N)``; ``None``/``"1/1"``-like -> ``None``.

    ``auto`` reads SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (offset by SLURM_ARRAY_TASK_MIN),
    then RANK/WORLD_SIZE (torchrun).
    """
    if spec is None or spec == "":
        return None
    env = os.environ if env is None else env
    if spec == "auto":
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            i = env_int(env, "SLURM_ARRAY_TASK_ID") - env_int(env, "SLURM_ARRAY_TASK_MIN", 0)
            n = env_int(env, "SLURM_ARRAY_TASK_COUNT")
        elif "RANK" in env and "WORLD_SIZE" in env:
            i, n = env_int(env, "RANK"), env_int(env, "WORLD_SIZE")
        else:
            raise InputError(
                "--shard auto found neither SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT nor RANK/WORLD_SIZE",
                "run inside a Slurm job array or torchrun, or pass --shard i/N",
            )
    else:
        m = re.fullmatch(r"(\d+)/(\d+)", spec.strip())
        if not m:
            raise InputError(f"--shard {spec!r} is not of the form i/N", "e.g. --shard 0/4 (shards are numbered from 0)")
        i, n = int(m[1]), int(m[2])
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {i}/{n} is out of range", f"use 0 <= i < N, e.g. --shard 0/{max(n, 1)}")
    if n > MAX_SHARDS:
        raise InputError(f"--shard {i}/{n}: at most {MAX_SHARDS:,} shards", "split the work into fewer shards")
    return None if n == 1 else (i, n)


def shard_keys(keys: list[str], shard: tuple[int, int] | None) -> list[str]:
    return list(keys) if shard is None else list(keys)[shard[0]:: shard[1]]


def shard_path(out: str | os.PathLike, shard: tuple[int, int] | None) -> Path:
    out = Path(out)
    if shard is None:
        return out
    stem = out.name[:-3] if out.name.endswith(".h5") else out.name
    return out.with_name(f"{stem}.shard-{shard[0]}-of-{shard[1]}.h5")


def find_shards(out: str | os.PathLike) -> tuple[int, dict[int, Path]]:
    """The shard files of ``out``: ``(N, {i: path})``. Several N at once is an error."""
    out = Path(out)
    stem = out.name[:-3] if out.name.endswith(".h5") else out.name
    pat = re.compile(re.escape(stem) + r"\.shard-(\d+)-of-(\d+)\.h5$")
    found: dict[int, dict[int, Path]] = {}
    for p in out.parent.glob(f"{stem}.shard-*-of-*.h5"):
        m = pat.fullmatch(p.name)
        if m:
            found.setdefault(int(m[2]), {})[int(m[1])] = p
    if not found:
        raise InputError(
            f"no shards of {out} found (expected {stem}.shard-<i>-of-<N>.h5 beside it)",
            "run the command with --shard i/N first, with the same --out",
        )
    if len(found) > 1:
        raise InputError(f"shards of {out} exist for several N ({', '.join(map(str, sorted(found)))})",
                         "delete the shards of the runs you abandoned")
    (n, shards), = found.items()
    return n, shards


def merge_shards(out: str | os.PathLike, overwrite: bool = False, pack: bool = False) -> dict:
    """Check that all N shards of ``out`` exist, are complete and share settings and inputs, then
    write ``out``, whose content equals an unsharded run's: by default metadata only, reading its
    rows from the shards (which must then stay beside it); ``pack`` copies every row into it."""
    from ..errors import ConflictError
    from ..settings import canonical_json, diff_settings
    from .artifact import Artifact, _Source, content_fingerprint, write_consolidated, write_virtual
    from .lock import WriterLock

    out = Path(out)
    n, shards = find_shards(out)
    missing = [shard_path(out, (i, n)).name for i in range(n) if i not in shards]
    if missing:
        raise InputError(f"{len(missing)} of {n} shards are missing: {', '.join(missing[:4])}",
                         "run those shards (same --out, --shard i/N) before merging")
    arts = [Artifact(shards[i], allow_partial=True) for i in range(n)]
    for i, a in enumerate(arts):
        if not a.complete:
            raise InputError(f"shard {shards[i].name} is incomplete ({len(a)}/{a.meta['n_expected']} items)",
                             f"re-run it with --shard {i}/{n} to finish it")
        diff = diff_settings(arts[0].meta["settings"], a.meta["settings"])
        if diff or canonical_json(a.meta["inputs"]) != canonical_json(arts[0].meta["inputs"]) \
                or a.meta["command"] != arts[0].meta["command"]:
            raise InputError(f"shard {shards[i].name} was made with other settings or inputs than {shards[0].name}"
                             + (f": {'; '.join(diff)}" if diff else ""), "re-run the odd shard with the same settings")
    sources: dict[str, _Source] = {}
    for a in arts:
        for row, k in enumerate(a.keys):
            if k in sources:
                raise InputError(f"key {k!r} appears in two shards", "shards of one run never overlap; re-run them")
            sources[k] = _Source(a.path, row, False)
    meta = dict(arts[0].meta)
    meta["settings"] = {**meta["settings"], "shard": None}
    meta.update(shard="", complete=True, n_expected=len(sources),
                fingerprint=content_fingerprint(meta["settings_hash"], meta["inputs"], sorted(sources)))
    for a in arts:
        a.close()
    with WriterLock(out, "zodi merge"):
        if out.exists() and not overwrite:
            try:
                old = Artifact(out, allow_partial=True).meta
            except InputError:
                old = {}
            if old.get("settings_hash") != meta["settings_hash"] or canonical_json(old.get("inputs")) != canonical_json(meta["inputs"]):
                raise ConflictError(f"{out} exists with other settings or inputs", "pass --overwrite to replace it")
        packed = pack or not write_virtual(out, meta, [shards[i] for i in range(n)])
        if packed:
            write_consolidated(out, meta, sources)
    return {"out": str(out), "shards": n, "items": len(sources), "packed": packed}
