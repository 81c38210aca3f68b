"""Benchmark: zodi evaluate vs the official Cityscapes evaluator (cityscapesscripts) on the same
files, in one process. Prints megapixels per second and the ratio, and checks the scores agree.

    python recipes/bench/bench_evaluate.py [--images 12] [--size 2048x1024]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_files(root: Path, n: int, w: int, h: int):
    from zodicli.data.images import write_png

    rng = np.random.default_rng(0)
    gts, preds = [], []
    for i in range(n):
        # Blocky maps, like real label maps (PNG size and decode time matter for both tools).
        gt = np.repeat(np.repeat(rng.integers(0, 34, (h // 16, w // 16)), 16, 0), 16, 1).astype(np.uint8)
        pr = np.where(rng.random((h // 8, w // 8)).repeat(8, 0).repeat(8, 1) < 0.7, gt,
                      rng.integers(0, 34, (h // 8, w // 8)).repeat(8, 0).repeat(8, 1)).astype(np.uint8)
        stem = f"bench_{i:06d}_000019"
        write_png(root / "cityscapes/leftImg8bit/val/bench" / f"{stem}_leftImg8bit.png", np.zeros((8, 8, 3), np.uint8))
        gts.append(root / "cityscapes/gtFine/val/bench" / f"{stem}_gtFine_labelIds.png")
        preds.append(root / "preds" / f"{stem}_pred.png")
        write_png(gts[-1], gt)
        write_png(preds[-1], pr)
    return [str(p) for p in gts], [str(p) for p in preds]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--size", default="2048x1024")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        gts, preds = make_files(root, a.images, w, h)
        os.environ["CITYSCAPES_DATASET"] = str(root / "cityscapes")
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

        from zodicli.pipeline.evaluate import evaluate

        args = official.args
        args.evalInstLevelScore, args.evalPixelAccuracy, args.JSONOutput, args.quiet = False, False, False, True
        mp = a.images * w * h / 1e6

        def timed(fn):
            t0 = time.perf_counter()
            result = fn()
            return time.perf_counter() - t0, result

        runs = {"ref": lambda: official.evaluateImgLists(preds, gts, args),
                "ours": lambda: evaluate(str(root / "preds"), "cityscapes:val", pred_encoding="labelid", data_root=root),
                "one": lambda: evaluate(str(root / "preds"), "cityscapes:val", pred_encoding="labelid", data_root=root, workers=1)}
        best, results = {k: float("inf") for k in runs}, {}
        for _ in range(3):                  # alternated rounds, each side's best: this machine's speed swings
            for k, fn in runs.items():
                t, results[k] = timed(fn)
                best[k] = min(best[k], t)
        t_ref, t_ours, t_one = best["ref"], best["ours"], best["one"]
        ref, ours = results["ref"], results["ours"]
        assert abs(ours["miou"] / 100 - ref["averageScoreClasses"]) < 1e-6
        print(f"# evaluate benchmark: {a.images} image pairs of {w}x{h} ({mp:.1f} MP), {os.cpu_count()} cores, best of 3 alternated rounds each")
        print(f"cityscapesscripts (C extension: {official.CSUPPORT}) : {mp / t_ref:7.1f} MP/s")
        print(f"zodi evaluate, 1 loader thread           : {mp / t_one:7.1f} MP/s  ({t_ref / t_one:.2f}x)")
        print(f"zodi evaluate, default loader threads    : {mp / t_ours:7.1f} MP/s  ({t_ref / t_ours:.2f}x)")
        print(f"mIoU agree: zodi {ours['miou']:.6f} vs official {ref['averageScoreClasses'] * 100:.6f}")
        if a.json:
            Path(a.json).write_text(json.dumps({
                "setting": f"{a.images} label-map pairs of {w}x{h}", "baseline": "cityscapesscripts (no C extension)",
                "official_mp_s": mp / t_ref, "zodi_mp_s_1_thread": mp / t_one, "zodi_mp_s": mp / t_ours,
                "speedup_1_thread": t_ref / t_one, "speedup": t_ref / t_ours,
                "miou_abs_diff": abs(ours["miou"] - ref["averageScoreClasses"] * 100)}))


if __name__ == "__main__":
    main()
