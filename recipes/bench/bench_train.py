"""Benchmark: a train-seg step vs a bare torch loop over the same model, batch, loss and memory
layout (NHWC), in one process; the share of time the model waits for data; and train-seg's NHWC
(the default) vs NCHW (--no-channels-last) step.

    python recipes/bench/bench_train.py [--model deeplabv3plus_r18] [--iters 30] [--batch 8]
    python recipes/bench/bench_train.py --model deeplabv3plus_r50 --size 384x768 --batch 4 --device cuda --amp bf16
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def bare_loop(model_name, iters, batch, hw, device, amp):
    """The floor: random tensors already on the device, forward, CE, backward, SGD step (NHWC weights, as train-seg's)."""
    from zodicli.runtime import amp_dtype
    from zodicli.seg.models import build_model

    torch.manual_seed(0)
    dtype = amp_dtype(amp)
    model = build_model(model_name).train().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, *hw, device=device)
    y = torch.randint(0, 19, (batch, *hw), device=device)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = F.interpolate(model(x)["logits"], size=hw, mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        loss.item()                          # the zodi loop syncs once per step (finite check)
        times.append(time.perf_counter() - t)
    return times


def zodi_loop(model_name, iters, batch, hw, workers, device, amp, channels_last=True):
    from zodicli.seg.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(model=model_name, source="toy:clear:train", out=d, iters=iters, batch_size=batch,
                          crop=hw, resize=None, num_workers=workers, log_every=1, ckpt_every=10 ** 9, seed=0,
                          device=str(device), amp=amp, channels_last=channels_last)
        t0 = time.perf_counter()
        train(cfg, log=lambda m: None)
        wall = time.perf_counter() - t0
        recs = [json.loads(line) for line in Path(d, "metrics.jsonl").read_text().splitlines()]
    return wall, recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="deeplabv3plus_r18")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", default="128x256")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare and zodi runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    device = torch.device(a.device)
    hw = tuple(int(v) for v in a.size.split("x"))
    root = Path(os.environ.get("ZODI_TOY_ROOT", "out/bench/toy"))
    os.environ["ZODI_TOY_ROOT"] = str(root)
    from zodicli.data.toy import make_toy

    make_toy(root, n_train=64, n_val=4, seed=0, conditions=("clear",))
    # Rounds of bare, zodi, bare, zodi... and medians of their steps: the machine's speed drifts
    # between phases (bare 1.56-1.87 it/s in three runs), and one round swung the ratio by +-0.07.
    warm, bare, steps, nchw, waits = 5, [], [], [], []
    for _ in range(a.rounds):
        bare += bare_loop(a.model, a.iters, a.batch, hw, device, a.amp)[warm:]
        _, recs = zodi_loop(a.model, a.iters, a.batch, hw, a.workers, device, a.amp)
        steps += [r["sec_per_iter"] for r in recs][warm:]
        waits += [r["sec_per_iter"] * r["data_wait_share"] for r in recs[warm:]]
        _, recs = zodi_loop(a.model, a.iters, a.batch, hw, a.workers, device, a.amp, channels_last=False)
        nchw += [r["sec_per_iter"] for r in recs][warm:]
    wait = sum(waits) / sum(steps)
    t_bare, t_zodi, t_nchw = statistics.median(bare), statistics.median(steps), statistics.median(nchw)
    print(f"# train-seg benchmark: {a.model}, batch {a.batch}, {hw[0]}x{hw[1]}, {a.iters} iterations "
          f"x {a.rounds} rounds (first {warm} of each dropped), {a.device} {a.amp}, {torch.get_num_threads()} threads, {a.workers} loader workers")
    print(f"iterations per second (median step): zodi {1 / t_zodi:.2f}, bare {1 / t_bare:.2f}")
    print(f"bare torch loop : {t_bare:.3f} s/iter")
    print(f"zodi train-seg  : {t_zodi:.3f} s/iter  (ratio {t_zodi / t_bare:.3f}; target <= 1.10)")
    print(f"data wait share : {wait * 100:.1f} %   (target < 5 %)")
    print(f"zodi NCHW       : {t_nchw:.3f} s/iter  (NHWC speed-up {t_nchw / t_zodi:.2f}x)")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "setting": f"{a.model}, batch {a.batch}, {hw[0]}x{hw[1]}, {a.device} {a.amp}", "baseline": "bare torch loop",
            "bare_s_per_iter": t_bare, "zodi_s_per_iter": t_zodi, "ratio": t_zodi / t_bare, "data_wait_share": wait,
            "zodi_it_s": 1 / t_zodi, "zodi_nchw_s_per_iter": t_nchw, "channels_last_speedup": t_nchw / t_zodi}))


if __name__ == "__main__":
    main()
