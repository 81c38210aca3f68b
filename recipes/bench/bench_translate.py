"""Benchmark: zodi translate on the tiny stack (CPU) or a full-size random SD1.5 + ControlNet (GPU).

1. Wall time of `translate` divided by the time spent inside the UNet/ControlNet/VAE/text calls it
   must make (the pipeline's own overhead; target <= 1.10).
2. zodi vs a per-image loop over diffusers' StableDiffusionControlNetImg2ImgPipeline doing the same
   steps (strength 0.6, 20-step schedule -> 12 steps, CFG 9, eta 1), same models, same process.

    python recipes/bench/bench_translate.py [--images 8] [--short-side 64] [--full-size --device cuda --dtype fp16 --batch 4]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from zodicli.errors import quiet_libraries

quiet_libraries()          # before diffusers is imported: its loading notices are not the benchmark's output


class CallTimer:
    """Adds up the wall time spent inside chosen modules' forward calls (outermost only), and the
    batch rows of the calls wrapped with ``rows=True`` (the UNet: the work an algorithm asks for)."""

    def __init__(self, device):
        self.total, self.depth, self.device, self.rows = 0.0, 0, device, 0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def wrap(self, obj, name, rows=False):
        fn = getattr(obj, name)

        def timed(*a, **k):
            if rows:
                self.rows += a[0].shape[0]
            if self.depth == 0:
                self._sync()
                t = time.perf_counter()
            self.depth += 1
            try:
                return fn(*a, **k)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self._sync()
                    self.total += time.perf_counter() - t
        setattr(obj, name, timed)


def full_size_random(root: Path):
    """SD 1.5 + ControlNet architecture with random weights, from configs (no download)."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from zodicli.diffusion.tiny import SD15_SCHEDULER, _write_tokenizer
    from transformers import CLIPTokenizer

    _write_tokenizer(root / "tokenizer")
    tok = CLIPTokenizer.from_pretrained(root / "tokenizer")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(cross_attention_dim=768)      # the defaults are SD 1.5's UNet
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, scaling_factor=0.18215)
    cn = ControlNetModel.from_unet(unet)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(**SD15_SCHEDULER),
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(root / "sd")
    cn.save_pretrained(root / "controlnet")
    return {"model": str(root / "sd"), "controlnet": str(root / "controlnet")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--short-side", type=int, default=64)
    ap.add_argument("--full-size", action="store_true", help="random SD1.5-size models at 512x1024 (GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from diffusers import DDIMScheduler, StableDiffusionControlNetImg2ImgPipeline
    from PIL import Image

    from zodicli.data.toy import make_toy
    from zodicli.diffusion.layout import palette, resize_image, resize_label
    from zodicli.diffusion.models import load_stack
    from zodicli.diffusion.tiny import make_tiny
    from zodicli.pipeline.diffuse import DiffusionSettings, translate

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        w, h = (2048, 1024) if a.full_size else (256, 128)
        short = 512 if a.full_size else a.short_side
        os.environ["ZODI_TOY_ROOT"] = str(root / "toy")
        make_toy(root / "toy", n_train=1, n_val=a.images, seed=0, width=w, height=h, conditions=("clear",))
        paths = full_size_random(root / "m") if a.full_size else make_tiny(root / "m")
        s = DiffusionSettings(src="toy:clear:val", out=str(root / "out.h5"), model=paths["model"], controlnet=paths["controlnet"],
                              domain="fog", short_side=short, batch_size=a.batch, compute_batch=a.batch, device=a.device, dtype=a.dtype)

        # -- zodi, with model-call timing ------------------------------------------------------
        import zodicli.pipeline.diffuse as D

        timer = CallTimer(torch.device(a.device))
        real_stack = D._stack

        def timed_stack(settings, need_control):
            st = real_stack(settings, need_control)
            timer.wrap(st.unet, "forward", rows=True)
            for mod in (st.controlnet, st.text_encoder):
                timer.wrap(mod, "forward")
            timer.wrap(st.vae, "encode")
            timer.wrap(st.vae, "decode")
            return st

        D._stack = timed_stack
        translate(s.resolve(), {"bench": 0})                    # warm-up run (loads, first-call costs)

        def run_zodi(rep):
            timer.total, timer.rows = 0.0, 0
            t0 = time.perf_counter()
            translate(DiffusionSettings(**{**s.__dict__, "out": str(root / f"out{rep}.h5")}).resolve(), {"bench": rep})
            return time.perf_counter() - t0, timer.total, timer.rows

        # -- diffusers per-image loop over the same models ------------------------------------
        st = load_stack(paths["model"], paths["controlnet"], a.device, dtype)
        pipe = StableDiffusionControlNetImg2ImgPipeline(
            vae=st.vae, text_encoder=st.text_encoder, tokenizer=st.tokenizer, unet=st.unet, controlnet=st.controlnet,
            scheduler=DDIMScheduler.from_pretrained(paths["model"], subfolder="scheduler"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        diff_rows = CallTimer(torch.device(a.device))
        diff_rows.wrap(st.unet, "forward", rows=True)
        from zodicli.data.registry import open_dataset

        ds = open_dataset("toy:clear:val")
        size = (short, short * 2)
        jobs = [(Image.fromarray(resize_image(ds.image(k), size)), Image.fromarray(palette("cityscapes")[resize_label(ds.label(k), size)]))
                for k in ds.keys()]

        def run_diffusers():
            for i, (img, ctrl) in enumerate(jobs):
                pipe(prompt="driving in fog, best quality", negative_prompt="lower quality, worst quality", image=img,
                     control_image=ctrl, strength=0.6, num_inference_steps=20, guidance_scale=9.0, eta=1.0,
                     generator=torch.Generator().manual_seed(i), output_type="np", height=size[0], width=size[1])

        def time_diffusers():
            diff_rows.rows = 0
            t0 = time.perf_counter()
            run_diffusers()
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        run_diffusers()                                      # warm-up
        zodi_runs, diff_runs = [], []
        for rep in range(1, 4):                              # alternate, keep each side's best
            zodi_runs.append(run_zodi(rep))
            diff_runs.append(time_diffusers())
        wall, model_time, zodi_rows = min(zodi_runs)
        t_diff = min(diff_runs)
        D._stack = real_stack
    n = a.images
    print(f"# translate benchmark: {'full-size random SD1.5+ControlNet' if a.full_size else 'tiny stack'}, {n} images "
          f"{size[0]}x{size[1]}, fog preset (1 encode + 12 denoising steps, CFG), {a.device} {a.dtype}, batch {a.batch}")
    print(f"zodi translate     : {wall / n:.3f} s/image, model calls {model_time / n:.3f} s/image, "
          f"wall / model-call time = {wall / model_time:.3f} (target <= 1.10)")
    print(f"diffusers img2img  : {t_diff / n:.3f} s/image (per-image loop, 12 steps)")
    per_row = (t_diff / diff_rows.rows) / (wall / zodi_rows)
    print(f"zodi vs diffusers  : {t_diff / wall:.2f}x images per second (best of 3 alternated runs each)")
    print(f"UNet batch rows    : zodi {zodi_rows / n:g} per image (ZoDi's encoding adds one conditional call), "
          f"diffusers {diff_rows.rows / n:g}; zodi vs diffusers per row {per_row:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "setting": f"{'full-size SD1.5+ControlNet' if a.full_size else 'tiny stack'}, {n} images {size[0]}x{size[1]}, "
                       f"{a.device} {a.dtype}, batch {a.batch}", "baseline": "diffusers ControlNet img2img, per-image loop",
            "zodi_s_per_image": wall / n, "model_call_s_per_image": model_time / n, "wall_over_model_calls": wall / model_time,
            "diffusers_s_per_image": t_diff / n, "zodi_vs_diffusers_images_per_s": t_diff / wall,
            "unet_rows_per_image": zodi_rows / n, "diffusers_unet_rows_per_image": diff_rows.rows / n,
            "zodi_vs_diffusers_per_unet_row": per_row}))


if __name__ == "__main__":
    main()
