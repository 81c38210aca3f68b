"""zodi finetune: adapt the diffusion UNet to K unlabelled target images with a LoRA adapter,
binding the target's look to a prompt (DreamBooth-style personalisation, Ruiz et al., CVPR 2023,
as DATUM and DGInStyle use it for segmentation), so that ``translate --lora DIR --prompt P``
reaches domains no prompt of the base model reaches (a new sensor, a camera's colour response).

Per step, with z0 = s·VAE.encode(x).mean of a target image (flipped half the time), t ~ U{0..T−1},
ε ~ N(0, I) and z_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε:
    L = ‖ε̂(z_t, t, e(P)) − y‖²  [+ w_prior·‖ε̂(z_t', t', e(P_prior)) − y'‖² on source images]
with y = ε, or v = √ᾱ_t·ε − √(1−ᾱ_t)·z0 for v-prediction models. Only the adapter trains; the VAE,
the text encoder and any ControlNet stay frozen, so translation keeps its layouts. Each step draws its
randomness from (seed, step), so a run stopped and resumed ends with the same adapter.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.registry import open_dataset
from ..errors import ConflictError, InputError
from ..runtime import key_seed

# Settings that change how the run executes, not what it computes: a resume may change them.
RUN_ONLY = {"out", "device", "ckpt_every", "overwrite", "data_root", "allow_partial"}


@dataclass
class FinetuneConfig:
    target: str                              # unlabelled target images (a dataset spec)
    out: str                                 # the adapter folder
    prompt: str                              # the prompt the target's look is bound to, e.g. "driving in sks style"
    model: str = "sd15"
    revision: str | None = None
    model_config: str | None = None
    num_images: int = 10                     # K: the first K keys of --target, in sorted order
    steps: int = 400
    batch_size: int = 4
    lr: float = 1e-4
    rank: int = 4
    alpha: float | None = None               # LoRA α (default: the rank, so α/r = 1)
    targets: str = "attention"               # or "attention+conv" (diffusion/lora.py: TARGETS)
    size: tuple[int, int] | None = None      # training size HxW (default: the short side at --short-side)
    short_side: int = 512
    prior: str | None = None                 # source images for prior preservation
    prior_prompt: str = ""
    prior_weight: float = 1.0
    num_prior: int = 100                     # the first N keys of --prior
    seed: int = 0
    ckpt_every: int = 50
    device: str = "auto"
    data_root: str | None = None
    allow_partial: bool = False
    overwrite: bool = False

    def check(self) -> None:
        if not self.prompt:
            raise InputError("--prompt is empty", "name the target's look, e.g. --prompt 'driving in sks style'")
        for name in ("num_images", "steps", "batch_size", "rank"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1", "e.g. --num-images 10 --steps 400")


def identity(cfg: FinetuneConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY}


def finetune(cfg: FinetuneConfig, log=print) -> dict:
    """Train (or resume) the adapter in ``cfg.out``; returns a summary. One run per folder."""
    from ..store.lock import WriterLock

    cfg.check()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with WriterLock(out / "finetune", "zodi finetune"):
        return _finetune(cfg, out, log)


def _finetune(cfg: FinetuneConfig, out: Path, log) -> dict:
    from safetensors.torch import save_file

    from ..diffusion.lora import CARD, WEIGHTS, add_lora, lora_state, set_lora_state
    from ..diffusion.models import load_stack
    from ..runtime import choose_device
    from ..stopping import deferred_stop
    from ..store.artifact import library_versions
    from ..store.files import atomic_path, write_text
    from ..torchfile import load_state, save_state
    from .diffuse import model_fingerprint

    device = choose_device(cfg.device)
    stack = load_stack(cfg.model, None, device, torch.float32, cfg.model_config, revision=cfg.revision)
    target, keys = _images(cfg, cfg.target, cfg.num_images, exact=True)
    prior, prior_keys = _images(cfg, cfg.prior, cfg.num_prior) if cfg.prior else (None, [])
    inputs = {"target": target.fingerprint(), "target_keys": keys,
              "model": model_fingerprint(cfg.model, cfg.revision, config=cfg.model_config)[0],
              **({"prior": prior.fingerprint()} if prior is not None else {})}
    ident = identity(cfg)
    state_path, card_path = out / "state.pt", out / CARD
    if cfg.overwrite:
        for p in (state_path, card_path, out / WEIGHTS):
            p.unlink(missing_ok=True)
    torch.manual_seed(key_seed(cfg.seed, "lora-init"))          # peft draws A from the global generator
    params = add_lora(stack.unet, cfg.rank, cfg.alpha, cfg.targets)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    step = 0
    if state_path.exists():
        state = load_state(state_path, "finetune state")
        _check_same(state, ident, inputs, state_path)
        set_lora_state(stack.unet, state["lora"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        log(f"resuming {out} at step {step}/{cfg.steps}")
    latents = _encode(stack, target, keys, cfg)                 # (K, 2, C, h, w): each image and its mirror
    prior_latents = _encode(stack, prior, prior_keys, cfg) if prior is not None else None
    emb = stack.text([cfg.prompt])
    prior_emb = stack.text([cfg.prior_prompt]) if prior is not None else None
    stack.unet.train()

    def save(done: int) -> None:
        save_state(state_path, {"lora": lora_state(stack.unet), "optimizer": opt.state_dict(), "step": done,
                                "settings": ident, "inputs": inputs})

    t0, losses = time.perf_counter(), []
    with deferred_stop() as stop:
        try:
            while step < cfg.steps:
                loss = _loss(stack, latents, emb, cfg, step, "target")
                if prior_latents is not None:
                    loss = loss + cfg.prior_weight * _loss(stack, prior_latents, prior_emb, cfg, step, "prior")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step += 1
                losses.append(loss.item())
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    save(step)
                    log(f"step {step}/{cfg.steps}: loss {np.mean(losses[-cfg.ckpt_every:]):.4f}")
                if stop.requested:
                    raise stop.exception()
        except KeyboardInterrupt:
            save(step)
            log(f"stopped at step {step}; saved {state_path}")
            raise
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(lora_state(stack.unet), str(tmp))
    card = {"settings": ident, "inputs": inputs, "versions": library_versions(), "steps_done": step,
            "seconds_this_run": round(time.perf_counter() - t0, 1)}
    write_text(card_path, json.dumps(card, indent=2) + "\n")
    return {"out": str(out), "steps": step, "images": len(keys), "adapter": str(out / WEIGHTS),
            "final_loss": float(np.mean(losses[-10:])) if losses else None}


def _check_same(state: dict, ident: dict, inputs: dict, path: Path) -> None:
    from ..settings import diff_settings

    problems = diff_settings(state["settings"], ident)
    changed = sorted(k for k in set(state["inputs"]) | set(inputs) if state["inputs"].get(k) != inputs.get(k))
    if problems or changed:
        raise ConflictError(f"{path} comes from a run with other settings or data: "
                            + "; ".join(problems + ([f"inputs changed: {', '.join(changed)}"] if changed else [])),
                            "pass --overwrite to start over, or choose another --out")


def _images(cfg: FinetuneConfig, spec: str, n: int, exact: bool = False):
    ds = open_dataset(spec, cfg.data_root, cfg.allow_partial)
    keys = ds.keys()[:n]
    if exact and len(keys) < n:
        raise InputError(f"{spec} holds {len(keys)} images, fewer than --num-images {n}", "lower --num-images")
    return ds, list(keys)


@torch.no_grad()
def _encode(stack, ds, keys: list[str], cfg: FinetuneConfig) -> torch.Tensor:
    """z0 = s·VAE.encode(x).mean of each image and of its mirror, at the training size: (N, 2, C, h, w)."""
    from ..diffusion.layout import check_size, processing_size, resize_image

    out = []
    for k in keys:
        img = ds.image(k)
        if cfg.size:
            check_size(cfg.size, stack.size_multiple)
            hw = tuple(cfg.size)
        else:
            hw = processing_size(img.shape[0], img.shape[1], cfg.short_side, stack.size_multiple)
        x = torch.from_numpy(resize_image(img, hw)).permute(2, 0, 1).float()[None] / 127.5 - 1
        x = torch.cat([x, x.flip(-1)]).to(stack.device)
        out.append(stack.vae.encode(x).latent_dist.mean * stack.vae_scale)
    shapes = {tuple(z.shape) for z in out}
    if len(shapes) > 1:
        raise InputError(f"the images of {cfg.target} have different sizes", "pass --size HxW to train at one size")
    return torch.stack(out)


def _loss(stack, latents: torch.Tensor, emb: torch.Tensor, cfg: FinetuneConfig, step: int, part: str) -> torch.Tensor:
    """One batch's noise-prediction loss; its images, flips, timesteps and noise come from (seed, part, step)."""
    gen = torch.Generator().manual_seed(key_seed(cfg.seed, "finetune", part, step))
    n = cfg.batch_size
    idx = torch.randint(0, len(latents), (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen)
    t = torch.randint(0, stack.num_train_timesteps, (n,), generator=gen)
    z0 = latents[idx, flip]
    eps = torch.randn(z0.shape, generator=gen).to(z0.device)
    a = stack.alphas_cumprod[t].to(z0.device, torch.float32).view(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    target = a.sqrt() * eps - (1 - a).sqrt() * z0 if stack.prediction_type == "v_prediction" else eps
    pred = stack.unet(z_t, t.to(z0.device), encoder_hidden_states=emb.expand(n, -1, -1)).sample
    return torch.nn.functional.mse_loss(pred.float(), target)
