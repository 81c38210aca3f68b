"""Loading Stable Diffusion (+ ControlNet) from local folders, single checkpoint files or named
presets (``zodicli/presets/models.yaml``, resolved under ``$ZODI_MODELS``), and the :class:`Stack` the
algorithms call: text encoding, VAE encode/decode, and the guided noise prediction ε̂.

Hub ids are resolved to a local snapshot first (``hub.py``: the cache, or a download when online);
every ``from_pretrained`` then runs with ``local_files_only`` on that folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError


def models_root() -> Path:
    return Path(os.environ.get("ZODI_MODELS", "models"))


def presets() -> dict:
    from .. import presets as shipped

    return shipped.models()


def resolve(spec: str, revision: str | None = None, pipeline: bool = True, local_only: bool = False
            ) -> tuple[Path | None, Path | None]:
    """A preset, a local path or a Hugging Face repository id -> (local path, config folder for a
    single file or None). A preset's folder under $ZODI_MODELS wins; else its Hub repository is
    taken from the cache (or downloaded when online). ``local_only``: never download (None if absent)."""
    from . import hub

    table = presets()
    if spec in table:
        entry, root = table[spec], models_root()
        local = root / entry["path"] if entry.get("path") else None
        cfg = root / entry["config"] if entry.get("config") else None
        if (local is not None and local.exists()) or not entry.get("repo"):
            return local, cfg
        try:
            return hub.snapshot(entry["repo"], revision, pipeline, str(local) if local else None, local_only), cfg
        except InputError as e:             # say where the preset was looked for, then why the Hub failed
            raise InputError(f"preset '{spec}' is not at {local} ($ZODI_MODELS={root}), and {e.message}", e.hint) from None
    if hub.looks_like_repo_id(spec):
        return hub.snapshot(spec, revision, pipeline, local_only=local_only), None
    return Path(spec), None


def _missing(what: str, path: Path, spec: str) -> InputError:
    entry = presets().get(spec)
    if entry is not None:
        from .hub import hint

        how = hint(entry["repo"], str(path)) if entry.get("repo") else f"put it at {path}"
        return InputError(f"{what} not found at {path} (preset '{spec}' under $ZODI_MODELS={models_root()})", how)
    return InputError(f"{what} not found at {path}",
                      "pass an existing folder or .safetensors file, a preset ('zodi models list') or a Hugging Face "
                      "repository id such as stable-diffusion-v1-5/stable-diffusion-v1-5")


def fixed_batches(fn, k: int, *tensors):
    """``fn(*tensors)`` evaluated in calls of exactly ``k`` rows (the last one zero-padded).

    Kernels choose their blocking by batch shape, so float results depend on it (about 1e-6 on
    CPU between batch 1 and 3); at a fixed shape an item's result does not depend on the other
    rows. Calling every model at one shape makes outputs bit-identical whatever the batch size,
    order or sharding of the run."""
    n = next(t.shape[0] for t in tensors if t is not None)
    outs = []
    for i in range(0, n, k):
        rows = min(k, n - i)
        chunk = [None if t is None else torch.cat([t[i:i + rows], t.new_zeros((k - rows, *t.shape[1:]))]) for t in tensors]
        outs.append(fn(*chunk)[:rows])
    return torch.cat(outs)


class Stack:
    """The loaded models plus the schedule constants (ᾱ_t as float64). Every model call runs on
    ``compute_batch`` rows (see :func:`fixed_batches`); ControlNet residuals are scaled by ``control_scale``."""

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config: dict, controlnet=None,
                 device="cpu", dtype=torch.float32, compute_batch: int = 1, control_scale: float = 1.0):
        self.compute_batch, self.control_scale = compute_batch, control_scale
        from diffusers import DDIMScheduler

        self.unet, self.vae, self.text_encoder, self.tokenizer, self.controlnet = unet, vae, text_encoder, tokenizer, controlnet
        self.device, self.dtype = torch.device(device), dtype
        for m in (unet, vae, text_encoder, controlnet):
            if m is not None:
                m.to(self.device, dtype)           # also lifts weights stored in fp16 (the toy model)
                m.eval().requires_grad_(False)
        sched = DDIMScheduler.from_config(scheduler_config)
        self.alphas_cumprod = sched.alphas_cumprod.to(torch.float64)                # ᾱ_t, t = 0..T-1
        self.final_alpha = 1.0 if sched.config.set_alpha_to_one else float(self.alphas_cumprod[0])
        self.num_train_timesteps = sched.config.num_train_timesteps
        self.prediction_type = sched.config.prediction_type
        self.vae_scale = vae.config.scaling_factor
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.size_multiple = self.vae_factor * 2 ** (len(unet.config.block_out_channels) - 1)

    def alpha(self, t: int) -> float:
        """ᾱ_t; t < 0 means the end of sampling (ᾱ_0 under SD's set_alpha_to_one=False)."""
        return self.final_alpha if t < 0 else float(self.alphas_cumprod[t])

    # -- encoders -------------------------------------------------------------------------------
    @torch.no_grad()
    def text(self, prompts: list[str]) -> torch.Tensor:
        """(N, L, D) CLIP text embeddings."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device))[0].to(self.dtype)

    @torch.no_grad()
    def encode(self, images: list[np.ndarray], generators: list[torch.Generator]) -> torch.Tensor:
        """uint8 (H, W, 3) images -> z0 = scale · a posterior sample, (N, C, H/f, W/f) float32.
        Each item's sample uses its own generator (CPU), so batching does not change it."""
        x = torch.stack([torch.tensor(im).permute(2, 0, 1) for im in images]).float() / 127.5 - 1
        moments = fixed_batches(lambda b: self.vae.encode(b).latent_dist.parameters, self.compute_batch,
                                x.to(self.device, self.dtype)).float()
        mean, logvar = moments.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in generators]).to(self.device)
        return (mean + std * noise) * self.vae_scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> list[np.ndarray]:
        """(N, C, h, w) latents -> uint8 (H, W, 3) images (clipped)."""
        x = fixed_batches(lambda b: self.vae.decode(b).sample, self.compute_batch, (z / self.vae_scale).to(self.dtype)).float()
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return list(x)

    # -- the noise predictor -------------------------------------------------------------------
    def model_output(self, z, t: int, emb, control=None):
        """Raw UNet output (ε or v) for a batch at one timestep; ControlNet residuals if ``control``."""
        tt = torch.full((z.shape[0],), t, device=self.device, dtype=torch.long)
        zin = z.to(self.dtype)
        extra = {}
        if control is not None:
            if self.controlnet is None:
                raise InputError("a control image was given but no ControlNet is loaded", "pass --controlnet")
            down, mid = self.controlnet(zin, tt, encoder_hidden_states=emb, controlnet_cond=control.to(self.dtype),
                                        conditioning_scale=self.control_scale, return_dict=False)
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(zin, tt, encoder_hidden_states=emb, **extra).sample.float()

    def to_eps(self, out, z, t: int):
        """ε from the model output: v-prediction checkpoints need ε = √ᾱ·v + √(1−ᾱ)·z."""
        if self.prediction_type == "epsilon":
            return out
        if self.prediction_type == "v_prediction":
            a = self.alpha(t)
            return a ** 0.5 * out + (1 - a) ** 0.5 * z
        raise InputError(f"prediction type {self.prediction_type!r} is not supported", "use an epsilon or v-prediction model")

    def eps(self, z, t: int, cond, uncond=None, guidance: float = 1.0, control=None):
        """ε̂ with classifier-free guidance on the text only (the control image goes to both branches):
        ε̂ = ε(∅) + g·(ε(c) − ε(∅)). ``cond``/``uncond``: (N, L, D); ``control``: (N, 3, H, W) in [0, 1]."""
        if uncond is None or guidance == 1.0:
            uncond = None
        return fixed_batches(lambda z_, c_, u_, k_: self._eps(z_, t, c_, u_, guidance, k_),
                             self.compute_batch, z, cond, uncond, control)

    def _eps(self, z, t, cond, uncond, guidance, control):
        if uncond is None:
            return self.to_eps(self.model_output(z, t, cond, control), z, t)
        zz = torch.cat([z, z])
        cc = None if control is None else torch.cat([control, control])
        out = self.to_eps(self.model_output(zz, t, torch.cat([uncond, cond]), cc), zz, t)
        e_u, e_c = out.chunk(2)
        return e_u + guidance * (e_c - e_u)


def load_stack(model: str, controlnet: str | None = None, device="cpu", dtype=torch.float32,
               model_config: str | None = None, vae_tiling: bool = False, compute_batch: int = 1,
               control_scale: float = 1.0, revision: str | None = None) -> Stack:
    """Load SD (+ ControlNet) from a diffusers folder, a single .ckpt/.safetensors file, a preset or a
    Hugging Face repository id (``revision``: of the SD repository)."""
    from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()      # zodi's own bars are the ones users follow
    path, cfg = resolve(model, revision)
    cfg = Path(model_config) if model_config else cfg
    if path is None or not path.exists():
        raise _missing("Stable Diffusion model", path, model)
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise InputError(f"{path} is not a diffusers pipeline folder (no model_index.json, no unet/)",
                             "pass the folder that holds unet/, vae/, text_encoder/, tokenizer/, scheduler/")
        parts = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer}
        lacking = [sub for sub in (*parts, "scheduler") if not (path / sub).is_dir()]
        if lacking:
            raise InputError(f"model folder {path} lacks {', '.join(s + '/' for s in lacking)}",
                             "a diffusers pipeline folder holds unet/, vae/, text_encoder/, tokenizer/ and scheduler/; copy it whole")
        unet, vae, text, tok = (_load_part(cls, path, sub, **({} if sub == "tokenizer" else _precision(path / sub, dtype)))
                                for sub, cls in parts.items())
        sched_cfg = _read_json(path / "scheduler" / "scheduler_config.json")
    else:
        if path.suffix not in (".ckpt", ".safetensors"):
            raise InputError(f"{path} is neither a folder nor a .ckpt/.safetensors file", "pass a diffusers folder or a checkpoint file")
        if cfg is None or not cfg.is_dir():
            raise InputError(f"single-file checkpoint {path} needs a local config folder",
                             "pass --model-config DIR (a diffusers folder of the same architecture, e.g. stable-diffusion-v1-5)")
        pipe = _load_part(StableDiffusionPipeline.from_single_file, path, config=str(cfg), safety_checker=None,
                          requires_safety_checker=False)
        unet, vae, text, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
        sched_cfg = dict(pipe.scheduler.config)
    cn = None
    if controlnet:
        cpath, _ = resolve(controlnet, pipeline=False)
        if cpath is None or not cpath.exists():
            raise _missing("ControlNet", cpath, controlnet)
        cn = (_load_part(ControlNetModel, cpath, **_precision(cpath, dtype)) if cpath.is_dir()
              else _load_part(ControlNetModel.from_single_file, cpath))
    if vae_tiling:
        vae.enable_tiling()
        vae.enable_slicing()
    return Stack(unet, vae, text, tok, sched_cfg, cn, device, dtype, compute_batch, control_scale)


def _precision(folder: Path, dtype) -> dict:
    """Load straight into ``dtype`` (no fp32 copy first), from the repository's fp16 files when it has them."""
    kw = {"torch_dtype": dtype}
    if dtype == torch.float16 and any(folder.glob("*.fp16.safetensors")):
        kw["variant"] = "fp16"
    return kw


def _load_part(loader, path: Path, subfolder: str | None = None, **kw):
    """``loader.from_pretrained`` (or a loader function) on local files; a missing, truncated or
    foreign weight file becomes one line naming the folder."""
    where = path / subfolder if subfolder else path
    fn = loader.from_pretrained if hasattr(loader, "from_pretrained") else loader
    try:
        return fn(str(path), **({"subfolder": subfolder} if subfolder else {}), local_files_only=True, **kw)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        reason = " ".join(str(e).split())[:300]
        raise InputError(f"cannot load {where}: {type(e).__name__}: {reason}",
                         "the weights may be truncated or of another architecture; copy the folder again") from None
    except Exception as e:  # noqa: BLE001 - safetensors' own error type is not importable by a stable name
        if type(e).__name__ != "SafetensorError":
            raise
        raise InputError(f"cannot load {where}: the safetensors file is damaged ({e})", "copy the folder again") from None


def _read_json(p: Path) -> dict:
    import json

    if not p.is_file():
        raise InputError(f"{p} is missing", "the pipeline folder is incomplete; copy it again")
    return json.loads(p.read_text())
