"""Benchmark: the cost of the artifacts' fletcher32 row checksums. The same finished items (synthetic
2048x1024 RGB images and label maps, as translate writes them) are folded into a main file with and
without checksums, and read back row by row, alternating, best of 3 rounds each.

    python recipes/bench/bench_store.py [--items 16] [--size 1024x2048]
"""
from __future__ import annotations

import argparse
import json
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
    (wp, rp), (wc, rc) = best["plain"], best["fletcher32"]
    print(f"# store benchmark: {a.items} items of {w}x{h} RGB + labels ({mb:.0f} MiB), best of 3 alternated rounds")
    print(f"write: plain {mb / wp:7.1f} MiB/s, fletcher32 {mb / wc:7.1f} MiB/s ({wc / wp:.3f}x the time)")
    print(f"read : plain {mb / rp:7.1f} MiB/s, fletcher32 {mb / rc:7.1f} MiB/s ({rc / rp:.3f}x the time)")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "setting": f"{a.items} items of {w}x{h} RGB + labels", "baseline": "the same fold without checksums",
            "write_mib_s": mb / wc, "read_mib_s": mb / rc, "checksum_write_cost": wc / wp, "checksum_read_cost": rc / rp}))


if __name__ == "__main__":
    main()
