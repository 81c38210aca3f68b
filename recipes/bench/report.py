"""make bench: run every benchmark the issues define, one after the other on this machine, and write
recipes/bench/report.json and recipes/bench/report.md (figures, ratios against the baseline measured
in the same script, targets, machine, date). GPU figures come from the same scripts with
--device cuda (see docs/benchmarks.md); they are added when run with --gpu on a machine that has one.

    python recipes/bench/report.py [--gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zodicli.errors import quiet_libraries

HERE = Path(__file__).parent
CPU_RUNS = {  # name: (script, arguments)
    "evaluate": ("bench_evaluate.py", []),
    "train": ("bench_train.py", []),
    "translate": ("bench_translate.py", []),
    "translate-b8": ("bench_translate.py", ["--batch", "8"]),   # eight rows per model call, as the toy yamls run
    "store": ("bench_store.py", []),
}
GPU_RUNS = {
    **{f"train-gpu-{amp}": ("bench_train.py", ["--model", "deeplabv3plus_r50", "--size", "384x768", "--batch", "4",
                                               "--device", "cuda", "--amp", amp]) for amp in ("none", "bf16")},
    **{f"translate-gpu-{dt}-b{b}": ("bench_translate.py", ["--full-size", "--device", "cuda", "--dtype", dt, "--batch", str(b)])
       for dt in ("fp16", "bf16") for b in (1, 4, 8)},
}
ROWS = [  # (run, figure, label, target, format)
    ("evaluate", "speedup", "evaluate: zodi vs cityscapesscripts, MP/s ratio (default threads)", "> 1", "{:.2f}x"),
    ("evaluate", "speedup_1_thread", "evaluate: zodi (1 loader thread) vs cityscapesscripts", "> 1", "{:.2f}x"),
    ("train", "ratio", "train-seg step time / bare torch loop", "<= 1.10", "{:.3f}"),
    ("train", "data_wait_share", "train-seg: share of step time waiting for data", "< 5 %", "{:.1%}"),
    ("train", "channels_last_speedup", "train-seg: NHWC (default) vs NCHW weights, iterations/s", "> 1", "{:.2f}x"),
    ("translate", "wall_over_model_calls", "translate wall time / UNet+ControlNet+VAE+text call time", "<= 1.10", "{:.3f}"),
    ("translate", "zodi_vs_diffusers_images_per_s", "translate: zodi vs diffusers img2img loop, images/s ratio", ">= 1", "{:.2f}x"),
    ("translate", "zodi_vs_diffusers_per_unet_row", "translate: zodi vs diffusers per UNet batch row (ZoDi's encoding adds one)",
     "", "{:.2f}x"),
    ("translate-b8", "zodi_vs_diffusers_images_per_s", "translate at --compute-batch 8 vs the same diffusers per-image loop, images/s",
     ">= 1", "{:.2f}x"),
    ("translate-b8", "wall_over_model_calls", "translate at --compute-batch 8: wall time / model call time", "<= 1.10", "{:.3f}"),
    ("store", "translate_write_vs_raw", "artifacts: translate's rows (2048x1024 images, labels) written compressed / raw, time",
     "", "{:.2f}x"),
    ("store", "translate_compress_ms_per_item", "artifacts: that cost per 2048x1024 item, ms", "", "{:.0f}"),
    ("store", "translate_read_vs_raw", "artifacts: translate's rows read compressed / raw, time", "", "{:.2f}x"),
    ("store", "evaluate_write_vs_raw", "artifacts: evaluate's rows (preds, float16 confidence) written compressed / raw, time",
     "", "{:.2f}x"),
    ("store", "evaluate_compress_ms_per_item", "artifacts: that cost per 2048x1024 item, ms", "", "{:.0f}"),
    ("store", "translate_raw_write_vs_cp", "artifacts: translate's rows written raw (parts, then the fold) / cp of the file", "",
     "{:.2f}x"),
    ("store", "resume_bytes_ratio", "artifacts: bytes a resume adding the last 10 % writes, per byte of the file", "< 0.3",
     "{:.2f}"),
    ("store", "resume_vs_cp", "artifacts: that resume's time / cp of the final file", "", "{:.2f}x"),
    ("store", "merge_vs_cp", "artifacts: zodi merge (metadata only) of 4 shards / cp of the shards", "", "{:.3f}x"),
    ("store", "pack_vs_cp", "artifacts: zodi merge --pack of 4 shards / cp of the shards", "", "{:.2f}x"),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:                                      # noqa: BLE001 - the report still names the CPU
        gpu = "?"
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores, {gpu}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="also run the GPU benchmarks (needs CUDA)")
    args = ap.parse_args()
    quiet_libraries()                                      # the scripts inherit it
    runs = {**CPU_RUNS, **(GPU_RUNS if args.gpu else {})}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (script, extra) in runs.items():
            out = Path(tmp) / f"{name}.json"
            print(f"== {name}: {script} {' '.join(extra)}", file=sys.stderr)
            r = subprocess.run([sys.executable, str(HERE / script), *extra, "--json", str(out)], stdout=subprocess.PIPE,
                               text=True, check=False)
            sys.stderr.write(r.stdout)
            results[name] = json.loads(out.read_text()) if r.returncode == 0 else {"error": f"exit code {r.returncode}"}
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "results": results}
    (HERE / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# zodi benchmark report", "", (f"{report['date']}, {report['machine']}. Every ratio is measured against "
                                              "its baseline in the same script, side by side (`make bench`; recipes/bench/report.py)."), "",
             "| benchmark | setting | figure | target |", "|---|---|---|---|"]
    for run, key, label, target, fmt in ROWS:
        res = results.get(run, {})
        value = fmt.format(res[key]) if key in res else res.get("error", "not run")
        lines.append(f"| {label} | {res.get('setting', '')} | {value} | {target} |")
    for run, res in results.items():
        if "gpu" in run and "error" not in res:
            value = f"{res['zodi_it_s']:.2f} it/s" if "zodi_it_s" in res else \
                f"{1 / res['zodi_s_per_image']:.2f} img/s, {res['zodi_vs_diffusers_images_per_s']:.2f}x diffusers"
            lines.append(f"| {run} | {res['setting']} | {value} | |")
    (HERE / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
