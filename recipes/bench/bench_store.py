"""Benchmark: the artifacts at dataset scale, as ratios against copying the same bytes with ``cp``.
The fields translate writes (RGB images, label maps) and evaluate writes (predictions, float16
confidence), synthetic at 2048x1024, folded into a main file with and without fletcher32 row
checksums and read back row by row, best of 3 alternated rounds. Then finishing a resumed run that
adds the last 10 % of the items (its time, and the bytes it writes per byte of the final artifact),
and merging 4 shards, metadata only (the default) and ``--pack``.

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
    rng = np.random.default_rng(0)
    keys = [f"item{i:04d}" for i in range(a.items)]
    lbl = lambda: rng.integers(0, 19, (h // 32, w // 32)).repeat(32, 0).repeat(32, 1).astype(np.uint8)   # noqa: E731
    rows = {      # what translate and evaluate write per item: image-like content (smooth plus noise), blocky labels
        "translate": lambda: {"images": (np.linspace(0, 255, w)[None, :, None] + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8),
                              "labels": lbl()},
        "evaluate": lambda: {"preds": lbl(), "confidence": rng.random((h, w), dtype=np.float32).astype(np.float16)},
    }
    report = {"setting": f"{a.items} items of {w}x{h}", "baseline": "the same fold without checksums; cp of the same bytes"}
    lines = [f"# store benchmark: {a.items} items of {w}x{h}, best of 3 alternated rounds"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for command, make in rows.items():
            r = _fold(tmp / command, keys, make)
            report.update({f"{command}_{k}": v for k, v in r.items() if k != "sources"})
            lines += [f"{command} ({', '.join(r['fields'])}, {r['mib']:.0f} MiB): write {r['write_mib_s']:.0f} MiB/s = "
                      f"{r['write_vs_cp']:.2f}x the time of cp (without checksums {r['plain_write_vs_cp']:.2f}x); "
                      f"read {r['read_mib_s']:.0f} MiB/s ({r['checksum_read_cost']:.2f}x the time without checksums)"]
            if command == "translate":
                report.update(_scale(tmp / command, keys, r["sources"]))
    lines += [f"resume adding the last 10 %: finish {report['resume_vs_cp']:.2f}x the time of cp of the final file, "
              f"{report['resume_bytes_ratio']:.2f} bytes written per byte of it",
              f"merge of 4 shards: metadata only {report['merge_vs_cp']:.3f}x, --pack {report['pack_vs_cp']:.2f}x the time of cp of the shards"]
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps(report))


def _fold(tmp: Path, keys: list[str], make) -> dict:
    """Fold one-item parts into a main file, with and without fletcher32, and read it back row by row."""
    from zodicli.store import Artifact, ArtifactWriter
    from zodicli.store.artifact import _Source, write_consolidated

    tmp.mkdir()
    writer = ArtifactWriter(tmp / "src.h5", "bench", {}, {}, keys)
    writer.__enter__()
    for k in keys:
        writer.write([k], {name: [v] for name, v in make().items()})
    sources = {k: _Source(p, 0, True) for k, p in zip(keys, sorted(writer.parts.glob("part-*.h5")))}   # one item per part
    meta = dict(writer.meta, complete=True)
    mib = sum(p.path.stat().st_size for p in sources.values()) / 2**20
    best = {"plain": [float("inf")] * 2, "fletcher32": [float("inf")] * 2}
    for _ in range(3):
        for name, checksum in (("plain", False), ("fletcher32", True)):
            out = tmp / f"{name}.h5"
            t0 = time.perf_counter()
            write_consolidated(out, meta, sources, checksum=checksum)
            t1 = time.perf_counter()
            art = Artifact(out)
            for k in keys:
                for field in art.fields:
                    art.get(field, k)
            fields = art.fields
            art.close()
            t2 = time.perf_counter()
            best[name] = [min(best[name][0], t1 - t0), min(best[name][1], t2 - t1)]
    writer._lock.release()
    t_cp = min(_timed(lambda: shutil.copyfile(tmp / "fletcher32.h5", tmp / "cp.h5")) for _ in range(3))
    (wp, rp), (wc, rc) = best["plain"], best["fletcher32"]
    return {"fields": fields, "mib": mib, "write_mib_s": mib / wc, "read_mib_s": mib / rc, "write_vs_cp": wc / t_cp,
            "plain_write_vs_cp": wp / t_cp, "checksum_write_cost": wc / wp, "checksum_read_cost": rc / rp, "sources": sources}


def _bytes_written() -> int:
    """Bytes this process has written so far (Linux's per-process I/O counters)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar"))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _scale(tmp: Path, keys: list[str], sources: dict) -> dict:
    """Resume and merge costs, each against cp of the same bytes."""
    import h5py

    from zodicli.store import ArtifactWriter
    from zodicli.store.artifact import reads
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
    before = _bytes_written()
    t_resume = _timed(lambda: run(resumed, keys, len(keys)))
    written = _bytes_written() - before
    files = [resumed, *reads(resumed)]                        # the main file and the segments it reads
    final = sum(p.stat().st_size for p in files)
    t_cp_final = _timed(lambda: [shutil.copyfile(p, tmp / f"cp-{i}.h5") for i, p in enumerate(files)])
    merged = tmp / "m.h5"
    for i in range(4):
        run(shard_path(merged, (i, 4)), shard_keys(keys, (i, 4)), len(keys), shard=(i, 4))
    shards = sorted(tmp.glob("m.shard-*.h5"))
    t_cp_shards = _timed(lambda: [shutil.copyfile(p, tmp / f"cp-{p.name}") for p in shards])
    t_merge = _timed(lambda: merge_shards(merged))
    t_pack = _timed(lambda: merge_shards(merged, overwrite=True, pack=True))
    return {"resume_vs_cp": t_resume / t_cp_final, "resume_bytes_ratio": written / final,
            "merge_vs_cp": t_merge / t_cp_shards, "pack_vs_cp": t_pack / t_cp_shards}


if __name__ == "__main__":
    main()
