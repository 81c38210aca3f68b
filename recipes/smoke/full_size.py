"""make smoke-full: every command on the real architectures at full size, as a check anyone can run.

Random-weight SD 1.5 + ControlNet-seg and an SD 2.1-size UNet are built from their configs (nothing
is downloaded), the toy city is rendered at Cityscapes' 2048x1024, and then, each in its own process:
translate (at 512x1024, 2 of 20 steps, fp32 and a half precision), invert (edit-friendly DDPM, 2
steps), extract-features (SD 2.1 size, 3 UNet calls), train-seg (DeepLabv3+ R50 at ZoDi's 384x768
crop, 2 iterations) and evaluate (sliding 512x1024 window and flip on a 2048x1024 image). Prints each
command's wall time and peak memory, and writes OUT/report.json and OUT/report.md.

    python recipes/smoke/full_size.py [--out runs/smoke-full] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8)
SD21_UNET = {**SD15_UNET, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True}
SD_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
              scaling_factor=0.18215)
CLIP = {768: dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        1024: dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23)}


def build(folder: Path, unet_cfg: dict, controlnet: bool) -> None:
    """A random-weight pipeline folder of the real architecture (and its ControlNet)."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from zodicli.diffusion.tiny import SD15_SCHEDULER, _write_tokenizer

    if (folder / "sd" / "model_index.json").is_file():
        return
    torch.manual_seed(0)
    _write_tokenizer(folder / "tokenizer")
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    width = unet_cfg["cross_attention_dim"]
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1, projection_dim=width, **CLIP[width]))
    unet = UNet2DConditionModel(**unet_cfg)
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD_VAE), text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder / "sd")
    if controlnet:
        ControlNetModel.from_unet(unet).save_pretrained(folder / "controlnet")


def run(argv: list[str], env: dict, log: Path) -> dict:
    """One command in its own process, output to ``log``: wall seconds and its peak resident memory (GiB)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)            # the child's own rusage, not all children's
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc:
        sys.stderr.write(log.read_text()[-3000:])
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_gib": round(usage.ru_maxrss / 2**20, 2), "rc": rc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/smoke-full")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)    # the weights, in a child process
    a = ap.parse_args()
    if a.build:
        build(Path(a.out) / "sd15", SD15_UNET, controlnet=True)
        build(Path(a.out) / "sd21", SD21_UNET, controlnet=False)
        return
    from zodicli.errors import quiet_libraries

    quiet_libraries()                               # the commands inherit it
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    zodi = shutil.which("zodi") or str(Path(sys.executable).parent / "zodi")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ZODI_TOY_ROOT": str(out / "city")}
    half = "fp16" if a.device == "cuda" else "bf16"
    # Each step runs in a child of this lean process: a child's peak memory counts from what it
    # inherits at fork, so nothing heavy may live here (not even the weights being built).
    results = {"build random SD 1.5 + ControlNet and SD 2.1-size weights (skipped when present)":
               run([sys.executable, __file__, "--build", "--out", str(out)], os.environ.copy(), out / "build.log")}
    sd, cn, sd21 = out / "sd15/sd", out / "sd15/controlnet", out / "sd21/sd"
    dev = ["--device", a.device]
    runs = {
        "make the toy city at 2048x1024": [zodi, "datasets", "make-toy", "--out", out / "city", "--n-train", "2", "--n-val", "1",
                                            "--width", "2048", "--height", "1024"],
        "translate, 512x1024, 2 steps, fp32": [zodi, "translate", "--src", "toy:clear:val", "--domain", "fog", "--model", sd,
                                               "--controlnet", cn, "--steps", "20", "--strength", "0.1", *dev, "--dtype", "fp32",
                                               "--out", out / "t-fp32.h5", "--overwrite"],
        f"translate, 512x1024, 2 steps, {half}": [zodi, "translate", "--src", "toy:clear:val", "--domain", "fog", "--model", sd,
                                                  "--controlnet", cn, "--steps", "20", "--strength", "0.1", *dev, "--dtype", half,
                                                  "--out", out / f"t-{half}.h5", "--overwrite"],
        "invert (ddpm), 512x1024, 2 steps": [zodi, "invert", "--src", "toy:clear:val", "--method", "ddpm", "--prompt", "a street",
                                             "--model", sd, "--controlnet", cn, "--steps", "20", "--strength", "0.1", *dev,
                                             "--out", out / "inv.h5", "--overwrite"],
        "extract-features (SD 2.1 size), 512x1024, 3 UNet calls": [
            zodi, "extract-features", "--src", "toy:clear:val", "--model", sd21, "--inversion-timesteps", "1,3,5", "--timesteps", "3",
            *dev, "--out", out / "feats.h5", "--overwrite"],
        "train-seg DeepLabv3+ R50, 384x768 crop, 2 iterations": [
            zodi, "train-seg", "--model", "deeplabv3plus_r50", "--source", "toy:clear:train", "--iters", "2", "--batch-size", "2",
            "--num-workers", "0", *dev, "--out", out / "seg", "--overwrite"],
        "evaluate, 2048x1024, sliding 512x1024 window + flip": [
            zodi, "evaluate", "--checkpoint", out / "seg/last.pt", "--dataset", "toy:clear:val", "--window", "512x1024", "--flip",
            *dev, "--out", out / "preds.h5", "--overwrite"],
    }
    for i, (label, argv) in enumerate(runs.items()):
        print(f"== {label}", file=sys.stderr, flush=True)
        results[label] = run([str(x) for x in argv], env, out / f"step{i}.log")
        print(f"   {results[label]['wall_s']} s, peak {results[label]['peak_gib']} GiB, rc {results[label]['rc']}", file=sys.stderr)
    machine = f"{platform.system()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {a.device}"
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "results": results}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# make smoke-full ({report['date']}, {machine})", "", "| step | wall (s) | peak memory (GiB) | exit |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['wall_s']} | {v['peak_gib']} | {v['rc']} |" for k, v in results.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(max(v["rc"] for v in results.values()))


if __name__ == "__main__":
    main()
