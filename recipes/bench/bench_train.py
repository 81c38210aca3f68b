"""Benchmark: a train-seg step vs a bare torch loop over the same model, batch and loss, in one
process; and the share of time the model waits for data.

    python recipes/bench/bench_train.py [--model deeplabv3plus_r18] [--iters 30] [--batch 8]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def bare_loop(model_name, iters, batch, hw, threads):
    """The floor: random tensors already in memory, forward, CE, backward, SGD step."""
    from zodicli.seg.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, *hw)
    y = torch.randint(0, 19, (batch, *hw))
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        logits = F.interpolate(model(x)["logits"], size=hw, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times


def zodi_loop(model_name, iters, batch, hw, workers, toy):
    from zodicli.seg.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(model=model_name, source="toy:clear:train", out=d, iters=iters, batch_size=batch,
                          crop=hw, resize=None, num_workers=workers, log_every=1, ckpt_every=10 ** 9, seed=0)
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
    a = ap.parse_args()
    hw = tuple(int(v) for v in a.size.split("x"))
    root = Path(os.environ.get("ZODI_TOY_ROOT", "out/bench/toy"))
    os.environ["ZODI_TOY_ROOT"] = str(root)
    from zodicli.data.toy import make_toy

    make_toy(root, n_train=64, n_val=4, seed=0, conditions=("clear",))
    warm = 5
    bare = bare_loop(a.model, a.iters, a.batch, hw, torch.get_num_threads())[warm:]
    wall, recs = zodi_loop(a.model, a.iters, a.batch, hw, a.workers, root)
    steps = [r["sec_per_iter"] for r in recs][warm:]
    wait = sum(r["sec_per_iter"] * r["data_wait_share"] for r in recs[warm:]) / sum(steps)
    t_bare, t_zodi = sum(bare) / len(bare), sum(steps) / len(steps)
    print(f"# train-seg benchmark: {a.model}, batch {a.batch}, {hw[0]}x{hw[1]}, {a.iters} iterations "
          f"(first {warm} dropped), {torch.get_num_threads()} threads, {a.workers} loader workers")
    print(f"bare torch loop : {t_bare:.3f} s/iter")
    print(f"zodi train-seg  : {t_zodi:.3f} s/iter  (ratio {t_zodi / t_bare:.3f}; target <= 1.10)")
    print(f"data wait share : {wait * 100:.1f} %   (target < 5 %)")


if __name__ == "__main__":
    main()
