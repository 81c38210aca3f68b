"""Benchmark: the artifacts at dataset scale, as ratios against copying the same bytes with ``cp``.
The fields translate writes (RGB images, label maps) and evaluate writes (predictions, float16
confidence), from toy-city scenes at 2048x1024, folded into a main file raw, with fletcher32 row
checksums, and with checksums and the default compression, each read back row by row, best of 3
alternated rounds; the bytes per pixel each field takes, against PNG of the same arrays. Then finishing a resumed run that
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
    keys = [f"item{i:04d}" for i in range(a.items)]
    scenes = _scenes(4, h, w)
    rows = {      # what translate and evaluate write per item, from toy-city scenes at full size
        "translate": lambda i: {"images": scenes[i % 4][0], "labels": scenes[i % 4][1]},
        "evaluate": lambda i: {"preds": scenes[i % 4][1], "confidence": scenes[i % 4][2]},
    }
    report = {"setting": f"{a.items} items of {w}x{h}", "baseline": "the same rows stored raw; cp of the same bytes"}
    lines = [f"# store benchmark: {a.items} items of {w}x{h} (4 toy-city scenes), best of 3 alternated rounds"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for command, make in rows.items():
            r = _fold(tmp / command, keys, make)
            report.update({f"{command}_{k}": v for k, v in r.items() if k != "sources"})
            lines += [f"{command} ({r['mib']:.0f} MiB raw): written {r['write_mib_s']:.0f} MiB/s ({r['write_vs_raw']:.2f}x the time "
                      f"of raw rows, +{r['compress_ms_per_item']:.0f} ms per item), read {r['read_mib_s']:.0f} MiB/s "
                      f"({r['read_vs_raw']:.2f}x, +{r['decompress_ms_per_item']:.0f} ms per item); raw rows {r['raw_write_vs_cp']:.2f}x cp"]
            lines += [f"  {f}: {bpp:.3f} bytes/pixel stored, PNG {r['png_bpp'][f]:.3f}" if f in r["png_bpp"] else
                      f"  {f}: {bpp:.3f} bytes/pixel stored (raw {r['raw_bpp'][f]:.0f})" for f, bpp in r["bpp"].items()]
            if command == "translate":
                report.update(_scale(tmp / command, keys, r["sources"]))
    lines += [f"resume adding the last 10 %: finish {report['resume_vs_cp']:.2f}x the time of cp of the final file, "
              f"{report['resume_bytes_ratio']:.2f} bytes written per byte of it",
              f"merge of 4 shards: metadata only {report['merge_vs_cp']:.3f}x, --pack {report['pack_vs_cp']:.2f}x the time of cp of the shards"]
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps(report))


def _scenes(n: int, h: int, w: int) -> list[tuple]:
    """(image, label ids, confidence) of ``n`` toy-city scenes; the confidence is synthetic, near 1
    inside regions and lower within ~8 pixels of a label boundary, as a segmenter's tends to be."""
    from zodicli.data.toy import generate_scene
    from zodicli.data.toy_styles import render

    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        scene = generate_scene(rng, w, h)
        edge = np.zeros((h, w), np.float32)
        edge[:, 1:] += scene.label[:, 1:] != scene.label[:, :-1]
        edge[1:] += scene.label[1:] != scene.label[:-1]
        for axis in (0, 1):                                 # a 17-pixel box blur, by cumulative sums
            c = np.cumsum(np.pad(edge, [(9, 8) if ax == axis else (0, 0) for ax in (0, 1)]), axis=axis)
            edge = np.take(c, range(17, c.shape[axis]), axis=axis) - np.take(c, range(0, c.shape[axis] - 17), axis=axis)
        conf = np.clip(0.99 - 0.05 * edge + rng.normal(0, 0.005, (h, w)), 0.3, 1).astype(np.float16)
        out.append((render(scene, "clear", rng), scene.label, conf))
    return out


def _png_bytes(a: np.ndarray) -> int:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return len(buf.getvalue())


def _fold(tmp: Path, keys: list[str], make) -> dict:
    """Write the items through ArtifactWriter (one per batch, then the fold), with the default
    compression and raw, alternating, and read each back row by row. Bytes per pixel per field
    against PNG."""
    import h5py

    from zodicli.store import Artifact, ArtifactWriter
    from zodicli.store.artifact import _Source

    tmp.mkdir()
    items = [{name: [v] for name, v in make(i).items()} for i in range(len(keys))]
    best = {"raw": [float("inf")] * 2, "default": [float("inf")] * 2}
    for _ in range(3):
        for name in best:
            out = tmp / f"{name}.h5"
            t0 = time.perf_counter()
            with ArtifactWriter(out, "bench", {}, {}, keys, overwrite=True, compress=name == "default") as w:
                for k, item in zip(keys, items):
                    w.write([k], item)
            t1 = time.perf_counter()
            with Artifact(out) as art:
                for k in keys:
                    for field in art.fields:
                        art.get(field, k)
            best[name] = [min(best[name][0], t1 - t0), min(best[name][1], time.perf_counter() - t1)]
    t_cp = min(_timed(lambda: shutil.copyfile(tmp / "raw.h5", tmp / "cp.h5")) for _ in range(3))

    writer = ArtifactWriter(tmp / "src.h5", "bench", {}, {}, keys)       # parts left unfolded, for the resume test
    writer.__enter__()
    for k, item in zip(keys, items):
        writer.write([k], item)
    sources = {k: _Source(p, 0, True) for k, p in zip(keys, sorted(writer.parts.glob("part-*.h5")))}   # one item per part
    writer._lock.release()

    first = make(0)
    pixels = first[next(iter(first))].shape[0] * first[next(iter(first))].shape[1]
    with h5py.File(tmp / "default.h5") as f:
        bpp = {name: f[name].id.get_storage_size() / len(keys) / pixels for name in sorted(first)}
    png = {name: np.mean([_png_bytes(make(i)[name]) for i in range(4)]) / pixels for name in first if first[name].dtype == np.uint8}
    mib = sum(v.nbytes for v in first.values()) * len(keys) / 2**20
    (wr, rr), (wd, rd) = best["raw"], best["default"]
    return {"mib": mib, "write_mib_s": mib / wd, "read_mib_s": mib / rd, "write_vs_raw": wd / wr, "read_vs_raw": rd / rr,
            "compress_ms_per_item": (wd - wr) / len(keys) * 1e3, "decompress_ms_per_item": (rd - rr) / len(keys) * 1e3,
            "raw_write_vs_cp": wr / t_cp, "bpp": bpp, "png_bpp": png,
            "raw_bpp": {name: v.nbytes / pixels for name, v in first.items()}, "sources": sources}


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
