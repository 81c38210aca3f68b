"""Where a toy model loses the lamps of night traffic lights (model card: "Where the lamp is lost").

A real toy-night traffic light is a dark box with one lit lamp. The lamp proxy of a set of images is
the brightest luminance (0-1, Rec. 601) inside each image's traffic-light pixels, the median over the
val images (night, or clear with --source clear) that hold at least --min-pixels of them (at 64x128).
Printed for the real images, for their VAE round trip, and for the images noised to t and denoised
back to 0 with DDIM (eta 0, strides of --stride) under night.yaml's prompt, guidance and control
scale, for each t of --from.

Usage: python recipes/toy/lamp_probe.py [OUT] [--model DIR] [--seed 3000] [--n-val 120] [--from 50,100,...]
[--source clear] (noise clear val images instead, as a translation starts) [--control-scale S] [--guidance-scale G]
Run from the repository root; writes OUT/lamp_probe.json. The tuning city (seed 3000) by default, not the check's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from zodicli.errors import quiet_libraries

SIZE = (64, 128)
TRAFFIC_LIGHT = 6           # Cityscapes train id


def lamp_proxy(images: list[np.ndarray], labels: list[np.ndarray]) -> float:
    """Median over images of the brightest luminance (0-1) among the traffic-light pixels.
    ``images``: uint8 (H, W, 3); ``labels``: (H, W) train ids, each holding a traffic light."""
    lum = [(im.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114]) for im in images]
    return float(np.median([y[lb == TRAFFIC_LIGHT].max() for y, lb in zip(lum, labels)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="runs/lamp-probe")
    ap.add_argument("--model", type=Path, default=Path("recipes/toy/model"), help="an exported stack (sd/, controlnet/)")
    ap.add_argument("--seed", type=int, default=3000, help="the toy city's seed (and the noise's)")
    ap.add_argument("--n-val", type=int, default=120)
    ap.add_argument("--source", choices=("night", "clear"), default="night",
                    help="the val images to noise: real night, or clear ones (as ZoDi translates them)")
    ap.add_argument("--min-pixels", type=int, default=4, help="traffic-light pixels an image needs to count")
    ap.add_argument("--from", dest="starts", default="50,100,200,300,400,500,999", help="the t to noise to, comma-separated")
    ap.add_argument("--control-scale", type=float, help="in place of night.yaml's")
    ap.add_argument("--guidance-scale", type=float, help="classifier-free guidance, in place of night.yaml's")
    ap.add_argument("--stride", type=int, default=50, help="DDIM stride (t = 500: 10 steps)")
    args = ap.parse_args()
    quiet_libraries()
    import yaml

    from zodicli.data.registry import open_dataset
    from zodicli.data.toy import make_toy
    from zodicli.diffusion.layout import control_image, resize_image, resize_label
    from zodicli.diffusion.models import load_stack
    from zodicli.diffusion.zodi_transfer import item_noise, sample
    from zodicli.pipeline.diffuse import domain_presets, generators

    out = Path(args.out)
    city = out / "toy"
    manifest = json.loads((city / "toy.json").read_text()) if (city / "toy.json").is_file() else {}
    if (manifest.get("seed"), manifest.get("n_val")) != (args.seed, args.n_val):
        shutil.rmtree(city, ignore_errors=True)            # a smaller city would keep the larger one's files
        make_toy(city, n_train=1, n_val=args.n_val, seed=args.seed, conditions=("clear", "night"))
    os.environ["ZODI_TOY_ROOT"] = str(city)
    ds = open_dataset(f"toy:{args.source}:val")
    resized = {k: resize_label(ds.label(k), SIZE) for k in ds.keys()}
    keys = [k for k, lb in resized.items() if (lb == TRAFFIC_LIGHT).sum() >= args.min_pixels]
    images, labels = [resize_image(ds.image(k), SIZE) for k in keys], [resized[k] for k in keys]
    if not keys:
        raise SystemExit(f"lamp-probe: no {args.source} val image holds {args.min_pixels} traffic-light pixels; raise --n-val")

    night = yaml.safe_load(Path("recipes/toy/night.yaml").read_text())
    prompt = night.get("prompt") or domain_presets()[night["domain"]]["prompt"]
    stack = load_stack(str(args.model / "sd"), str(args.model / "controlnet"), compute_batch=8,
                       control_scale=night["control_scale"] if args.control_scale is None else args.control_scale)
    guidance = night["guidance_scale"] if args.guidance_scale is None else args.guidance_scale
    n = len(keys)
    cond, uncond = stack.text([prompt] * n), stack.text([night.get("negative_prompt", "")] * n)
    control = control_image(labels, "cityscapes")
    z0 = stack.encode(images, generators(args.seed, keys))
    noise = item_noise(z0, generators(args.seed + 1, keys))
    rows = {"real": lamp_proxy(images, labels), "vae": lamp_proxy(stack.decode(z0), labels)}
    print(f"lamp proxy on {n} {args.source} val images of city {args.seed} holding a traffic light", file=sys.stderr)
    for name in rows:
        print(f"{name:>12}  {rows[name]:.3f}", flush=True)
    for t in (int(s) for s in args.starts.split(",")):
        a = stack.alpha(t)             # z_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε, then DDIM (eta 0) t, t − stride, … to the end
        z = sample(stack, a ** 0.5 * z0 + (1 - a) ** 0.5 * noise, list(range(t, 0, -args.stride)), cond, uncond,
                   guidance, control, eta=0.0)
        name = f"from t={t}"
        rows[name] = lamp_proxy(stack.decode(z), labels)
        print(f"{name:>12}  {rows[name]:.3f}", flush=True)
    report = {"model": str(args.model), "source": args.source, "seed": args.seed, "images": n, "stride": args.stride,
              "control_scale": stack.control_scale, "guidance": guidance, "proxy": rows}
    (out / "lamp_probe.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
