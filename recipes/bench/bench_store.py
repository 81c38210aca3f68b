"""Benchmark: the artifacts at dataset scale. The cost of fletcher32 row checksums: the same finished
items (synthetic 2048x1024 RGB images and label maps, as translate writes them) folded into a main
file with and without checksums and read back row by row, alternating, best of 3 rounds each. Then,
as ratios against copying the same bytes with ``cp``: finishing a resumed run that adds the last
10 % of the items (and the bytes it writes per byte of the final file), and merging 4 shards,
metadata only (the default) and ``--pack``.

    python recipes/bench/bench_store.py [--items 16] [--size 1024x2048]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--size", default="1024x2048", help="HxW")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    h, w = map(int, a.size.split("x"))
    from zodicli.store import Artifact, ArtifactWriter
    from zodicli.store.artifact import _Source, write_consolidated

    rng = np.random.default_rng(0)
    keys = [f"item{i:04d}" for i in range(a.items)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parts = tmp / "src.h5"
        writer = ArtifactWriter(parts, "bench", {}, {}, keys)
        writer.__enter__()
        for k in keys:            # image-like content: smooth plus noise; labels blocky
            img = (np.linspace(0, 255, w)[None, :, None] + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
            lbl = rng.integers(0, 19, (h // 32, w // 32)).repeat(32, 0).repeat(32, 1).astype(np.uint8)
            writer.write([k], {"images": [img], "labels": [lbl]})
        sources = {k: _Source(p, 0, True) for k, p in zip(keys, sorted(writer.parts.glob("part-*.h5")))}   # one item per part
        meta = dict(writer.meta, complete=True)
        mb = a.items * h * w * 4 / 2**20
        best = {"plain": [float("inf")] * 2, "fletcher32": [float("inf")] * 2}
        for _ in range(3):
            for name, checksum in (("plain", False), ("fletcher32", True)):
                out = tmp / f"{name}.h5"
                t0 = time.perf_counter()
                write_consolidated(out, meta, sources, checksum=checksum)
                t1 = time.perf_counter()
                art = Artifact(out)
                for k in keys:
                    art.get("images", k), art.get("labels", k)
                art.close()
                t2 = time.perf_counter()
                best[name] = [min(best[name][0], t1 - t0), min(best[name][1], t2 - t1)]
        writer._lock.release()
        scale = _scale(tmp, keys, sources)
    (wp, rp), (wc, rc) = best["plain"], best["fletcher32"]
    print(f"# store benchmark: {a.items} items of {w}x{h} RGB + labels ({mb:.0f} MiB), best of 3 alternated rounds")
    print(f"write: plain {mb / wp:7.1f} MiB/s, fletcher32 {mb / wc:7.1f} MiB/s ({wc / wp:.3f}x the time)")
    print(f"read : plain {mb / rp:7.1f} MiB/s, fletcher32 {mb / rc:7.1f} MiB/s ({rc / rp:.3f}x the time)")
    print(f"resume adding the last 10 %: finish {scale['resume_vs_cp']:.2f}x the time of cp of the final file, "
          f"{scale['resume_bytes_ratio']:.2f} bytes written per byte of it")
    print(f"merge of 4 shards: metadata only {scale['merge_vs_cp']:.3f}x, --pack {scale['pack_vs_cp']:.2f}x the time of cp of the shards")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "setting": f"{a.items} items of {w}x{h} RGB + labels", "baseline": "the same fold without checksums; cp",
            "write_mib_s": mb / wc, "read_mib_s": mb / rc, "checksum_write_cost": wc / wp, "checksum_read_cost": rc / rp,
            **scale}))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _scale(tmp: Path, keys: list[str], sources: dict) -> dict:
    """Resume and merge costs, each against cp of the same bytes."""
    import h5py

    from zodicli.store import ArtifactWriter
    from zodicli.store.shards import merge_shards, shard_keys, shard_path

    def item(k):
        s = sources[k]
        with h5py.File(s.path, "r") as f:
            return {name: [f[f"{name}/{s.row:08d}"][()]] for name in ("images", "labels")}

    def run(out, ks, upto, shard=None):
        with ArtifactWriter(out, "bench", {}, {}, ks, shard=shard) as w:
            for k in w.todo[: max(0, upto - (len(ks) - len(w.todo)))]:
                w.write([k], item(k))

    cut = len(keys) * 9 // 10
    resumed = tmp / "resumed.h5"
    run(resumed, keys, cut)                                   # an interrupted run: 90 % finished and folded
    parts_bytes = []

    def finish():
        with ArtifactWriter(resumed, "bench", {}, {}, keys) as w:
            for k in w.todo:
                w.write([k], item(k))
            parts_bytes.append(sum(p.stat().st_size for p in w.parts.glob("*.h5")))
    t_resume = _timed(finish)
    final = resumed.stat().st_size
    t_cp_final = _timed(lambda: shutil.copyfile(resumed, tmp / "cp.h5"))
    merged = tmp / "m.h5"
    for i in range(4):
        run(shard_path(merged, (i, 4)), shard_keys(keys, (i, 4)), len(keys), shard=(i, 4))
    shards = sorted(tmp.glob("m.shard-*.h5"))
    t_cp_shards = _timed(lambda: [shutil.copyfile(p, tmp / f"cp-{p.name}") for p in shards])
    t_merge = _timed(lambda: merge_shards(merged))
    t_pack = _timed(lambda: merge_shards(merged, overwrite=True, pack=True))
    return {"resume_vs_cp": t_resume / t_cp_final, "resume_bytes_ratio": (final + parts_bytes[0]) / final,
            "merge_vs_cp": t_merge / t_cp_shards, "pack_vs_cp": t_pack / t_cp_shards}


if __name__ == "__main__":
    main()
