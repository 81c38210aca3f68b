"""The one per-item loop shared by every command that writes an artifact.

settings -> dataset (sorted keys) -> shard subset -> keys not yet in the artifact -> batches ->
``work(keys)`` -> ``writer.write`` -> artifact marked complete -> summary.
Randomness must come from (seed, key) inside ``work`` so results do not depend on batching.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from ..progress import progress
from ..store import ArtifactWriter
from ..store.shards import shard_keys, shard_path


def check_projected_size(command: str, n_items: int, bytes_per_item: int, max_size: int | None, hint: str) -> None:
    """Say on stderr how large the output will be, and refuse it past ``max_size`` (None: no limit)."""
    import sys

    from ..errors import InputError

    total = n_items * bytes_per_item
    print(f"zodi {command}: the output will take about {_human(total)} ({n_items:,} items x {_human(bytes_per_item)})",
          file=sys.stderr)
    if max_size is not None and total > max_size:
        raise InputError(f"the output would take about {_human(total)}, more than --max-size {_human(max_size)}",
                         f"raise --max-size if the disk holds it, or {hint}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024


def bounded_map(fn, items, workers: int = 4):
    """``map(fn, items)`` in order on a thread pool, with at most ``2 * workers`` results in memory
    (image decoding releases the GIL, so threads overlap I/O and decoding)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * max(1, workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def run_per_item(out, command: str, settings: dict, inputs: dict, keys: Sequence[str],
                 work: Callable[[list[str]], Mapping[str, list]], *, batch_size: int = 1,
                 shard: tuple[int, int] | None = None, overwrite: bool = False, field_attrs: dict | None = None) -> dict:
    """Produce every key of this shard that the output does not hold yet; returns a summary."""
    mine = shard_keys(sorted(keys), shard)
    path = shard_path(out, shard)
    with ArtifactWriter(path, command, settings, inputs, mine, shard=shard, overwrite=overwrite, field_attrs=field_attrs) as w:
        todo = w.todo
        with progress(len(todo), command) as bar:
            for i in range(0, len(todo), max(1, batch_size)):
                batch = todo[i: i + batch_size]
                w.write(batch, work(batch))
                bar.update(len(batch))
    return {"out": str(path), "items": len(mine), "computed": len(todo), "reused": len(mine) - len(todo),
            "complete": True, "shard": f"{shard[0]}/{shard[1]}" if shard else None}
