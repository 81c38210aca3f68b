"""Train a toy Stable-Diffusion + ControlNet-seg stack on a toy-city corpus, on the CPU.

Stage 1 trains an AutoencoderKL (factor 2, channels 64/128, 8 latent channels) with L1 + MSE on
crops of every style (``_vae_loss``); REFERENCE §12 measured factor-4 VAEs stalling near 22 dB, with
1-px poles, windows and lane dashes lost, and 4 latent channels at factor 2 measured here gave
19-27 dB after 300 steps, as did 8 (colour was still lost: the posterior's initial unit noise drowns it;
the log-variance now starts at -6). The latent scaling factor is set from the data (1 / std of the latents),
as SD's 0.18215 was. Stage 1b (``decoder_steps``) fine-tunes the decoder alone on whole images; the
frozen encoder keeps the latents, so it can follow at any time. Stage 2 freezes the VAE and trains a
UNet (32, 64, 128; no attention at the full latent resolution), its ControlNet and the tiny CLIP
text model jointly on ε-prediction, conditioned on the caption ("driving in fog, best quality", ...; 10 % dropped to the empty caption for
classifier-free guidance) and on the Cityscapes-palette label map. The text model trains too, as
LDM trained its own text transformer: a random CLIP gives the five captions nearly the same
embedding (cosine 0.91-0.94), and a UNet trained 2,099 steps behind it frozen was measured blind to
them (ε error within 1.7 % whichever the caption), so its translations kept the source style; the
loss is min-SNR-5 weighted and the noise carries an offset (see below) so that the high-noise steps,
where only the caption can tell the styles apart, count. All
start from scratch, so the ControlNet's zero convolutions start small but non-zero: nothing
pretrained needs protecting, and the layout then steers the UNet from the first step. The exported
weights are an exponential moving average. The corpus is a toy city made with its own seed, so no
scene of the demo's train or val splits is ever seen.

Resumable: ``OUT/state.pt`` holds the stage, step and optimiser states; the diffusers folders
``OUT/sd`` and ``OUT/controlnet`` are replaced atomically at every checkpoint. Each step draws its
randomness from generators seeded by (seed, stage, step) (``_step_rng``), so a run stopped and resumed
at any checkpoint ends with the same weights as an uninterrupted one. ``init_from`` starts
stage 2 from exported folders (e.g. the committed recipes/toy/model) with fresh optimiser state.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime import item_rng, key_seed
from ..torchfile import load_state, save_state

CAPTIONS = {"clear": "driving on a clear day", "fog": "driving in fog", "night": "driving at night",
            "rain": "driving under rain", "snow": "driving in snow"}
SIZE = (64, 128)          # training images (H, W): the toy city at half resolution
OFFSET_NOISE = 0.1        # default std of the per-channel constant added to ε in stage 2 (diffusers' --noise_offset)
HISTORY = ("min_snr_from", "text_from", "offset_noise", "decoder_step", "decoder_on_mean_from", "rare_class", "unet_from",
           "focus", "class_weight")   # the recipe's history, TRAINING.json on export


def _corpus(root: Path, n: int, seed: int):
    """(images uint8 (N, H, W, 3), labels uint8 (N, H, W) train ids, captions) of every style."""
    from ..data.registry import open_dataset
    from ..data.toy import make_toy
    from .layout import resize_image, resize_label

    make_toy(root, n_train=n, n_val=1, seed=seed)
    os.environ["ZODI_TOY_ROOT"] = str(root)
    images, labels, captions = [], [], []
    for cond, text in CAPTIONS.items():
        ds = open_dataset(f"toy:{cond}:train")
        for k in ds.keys():
            images.append(resize_image(ds.image(k), SIZE))
            labels.append(resize_label(ds.label(k), SIZE))
            captions.append(text + ", best quality")
    return np.stack(images), np.stack(labels), captions


def _models(tiny_dir: Path):
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_dir / "sd" / "tokenizer")
    text = CLIPTextModel.from_pretrained(tiny_dir / "sd" / "text_encoder")
    vae = AutoencoderKL(block_out_channels=(64, 128), layers_per_block=1, latent_channels=8,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=32, scaling_factor=0.18215)
    unet = UNet2DConditionModel(sample_size=32, in_channels=8, out_channels=8, block_out_channels=(32, 64, 128),
                                layers_per_block=1, cross_attention_dim=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                attention_head_dim=8, norm_num_groups=32)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))   # downsamples by 2, as the VAE
    with torch.no_grad():       # start the posterior narrow (std e^-3): at std 1 its noise drowns colour for hundreds of steps
        vae.encoder.conv_out.bias[vae.config.latent_channels:] = -6.0
    g = torch.Generator().manual_seed(0)
    for zero in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
        with torch.no_grad():
            zero.weight.copy_(torch.randn(zero.weight.shape, generator=g) * 0.01)
    return tok, text, vae, unet, cn


def _save(out: Path, tok, text, vae, unet, cn) -> None:
    """Replace OUT/sd and OUT/controlnet atomically (write aside, then rename)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .tiny import SD15_SCHEDULER

    tmp = out / "export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(**SD15_SCHEDULER),
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(tmp / "sd")
    cn.save_pretrained(tmp / "controlnet")
    for name in ("sd", "controlnet"):
        old = out / f"{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if (out / name).exists():
            os.replace(out / name, old)
        os.replace(tmp / name, out / name)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _load_exported(src: Path, vae, unet, cn, text) -> float:
    """Load the weights of exported diffusers folders (``src/sd``, ``src/controlnet``) in place;
    returns the VAE's latent scaling factor."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    for model, loaded in ((vae, AutoencoderKL.from_pretrained(src / "sd", subfolder="vae", local_files_only=True)),
                          (text, CLIPTextModel.from_pretrained(src / "sd", subfolder="text_encoder", local_files_only=True)),
                          (unet, UNet2DConditionModel.from_pretrained(src / "sd", subfolder="unet", local_files_only=True)),
                          (cn, ControlNetModel.from_pretrained(src / "controlnet", local_files_only=True))):
        model.load_state_dict({k: v.float() for k, v in loaded.state_dict().items()})
    return AutoencoderKL.load_config(src / "sd", subfolder="vae", local_files_only=True)["scaling_factor"]


def _parse_focus(spec: str) -> tuple[str, list[int]]:
    """"STYLE:CLASS,CLASS,..." (train-id names of cityscapes19, e.g. "night:bus,wall") -> (style, class ids)."""
    from ..data.classsets import load
    from ..errors import InputError

    style, _, names = spec.partition(":")
    classes = load("cityscapes19").names
    if style not in CAPTIONS or not names or any(n not in classes for n in names.split(",")):
        raise InputError(f"--focus {spec!r}: expected STYLE:CLASS[,CLASS...] with STYLE one of {', '.join(CAPTIONS)} "
                         f"and classes among {', '.join(classes)}")
    return style, [classes.index(n) for n in names.split(",")]


def _focus_scenes(labels: np.ndarray, captions: list[str], spec: str, min_pixels: int = 16) -> np.ndarray:
    """Corpus indices of the images of ``spec``'s style holding >= min_pixels of any of its classes."""
    from ..errors import InputError

    style, ids = _parse_focus(spec)
    in_style = np.array([c.startswith(CAPTIONS[style]) for c in captions])
    holds = np.stack([(labels == i).sum(axis=(1, 2)) >= min_pixels for i in ids]).any(0)
    found = np.nonzero(in_style & holds)[0]
    if not len(found):
        raise InputError(f"--focus {spec!r}: no corpus image of that style holds {min_pixels} px of those classes",
                         'name classes the corpus has, or stop the focus with --focus ""')
    return found


def _step_rng(seed: int, stage: str, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The NumPy (batch choice) and torch (noise) generators of one step of one stage ("vae",
    "decoder", "unet"): a resumed run redraws exactly what an uninterrupted one would."""
    return item_rng(seed, stage, step), torch.Generator().manual_seed(key_seed(seed, stage, "noise", step))


def _from_now_on(state: dict, key: str, value, none=None):
    """``state[key]`` lists ``[from_step, value]`` changes of a setting; record ``value`` when it differs from
    the current one (None keeps it) and return the current one (``none`` when never set)."""
    changes = state.setdefault(key, [])
    if value is not None and (changes[-1][1] if changes else none) != value:
        changes.append([state["step"], value])
    return changes[-1][1] if changes else none


def _rare_class_table(labels: np.ndarray, temperature: float, min_pixels: int = 16):
    """DAFormer's rare-class sampling over the corpus layouts: P(c) ∝ exp((1 − f_c) / T), f_c the
    pixel share of class c; returns (P over classes, for each class the scenes holding >= min_pixels of it)."""
    counts = np.stack([np.bincount(lab.ravel(), minlength=256)[:255] for lab in labels])   # (N, 255)
    classes = [c for c in range(counts.shape[1]) if (counts[:, c] >= min_pixels).any()]
    freq = counts[:, classes].sum(0) / counts[:, classes].sum()
    p = np.exp((1 - freq) / temperature)
    return p / p.sum(), [np.nonzero(counts[:, c] >= min_pixels)[0] for c in classes]


def _class_weights(labels: np.ndarray, power: float, cap: float = 10.0) -> torch.Tensor:
    """Per-latent-pixel weights of the noise loss, (N, 1, H/2, W/2): a pixel of class c weighs
    (f_max / f_c) ** power (f_c its pixel share in the corpus; the commonest class weighs 1; at most
    ``cap``; ignore pixels 1), averaged over the 2x2 pixels under each latent pixel."""
    counts = np.bincount(labels.ravel(), minlength=256)[:255].astype(np.float64)
    table = np.ones(256, np.float32)
    seen = counts > 0
    table[:255][seen] = np.minimum(cap, (counts.max() / counts[seen]) ** power)
    return F.avg_pool2d(torch.from_numpy(table[labels.astype(np.int64)])[:, None], 2)


@torch.no_grad()
def _latent_means(vae, x_all: torch.Tensor) -> torch.Tensor:
    """Posterior means of the (frozen) encoder, (N, C, H/2, W/2), in chunks of 64 images."""
    return torch.cat([vae.encode(x_all[i:i + 64]).latent_dist.mean for i in range(0, len(x_all), 64)])


def _cosine(start: float, end: float, frac: float) -> float:
    """Cosine decay from ``start`` to ``end`` as ``frac`` goes from 0 to 1."""
    return end + 0.5 * (start - end) * (1 + np.cos(np.pi * frac))


def _psnr(rec, x) -> float:
    """PSNR (dB) of a reconstruction in [-1, 1] (peak-to-peak 2, so 4 / MSE)."""
    return 10 * torch.log10(4 / F.mse_loss(rec.detach().clamp(-1, 1), x)).item()


def _vae_loss(rec, x, mu):
    """L1 + MSE of the reconstruction, + 1e-6 · mean(μ²) to keep the means near zero.

    The toy city's per-pixel grain (``data.toy.paint``) alone puts an image 26.2 dB from its own blur,
    so 28 dB needs latents that carry it: MSE weighs those small errors in, and with no KL on the
    variance the posterior narrows until samples are nearly means (std 0.02 against a spread of 4.9,
    measured), so the UNet learns the very latents the decoder reads. The earlier L1 + 1e-6 KL on
    samples (v6's VAE) stalled at 25.5 dB on clear images."""
    return F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * mu.pow(2).mean()


def _start_from(src: Path, vae, x_all, z_all, unet, cn, text, log) -> None:
    """Load the UNet, ControlNet and text model of exported folders, with their input and output
    convolutions mapped from the exported VAE's latent space to this one's.

    An orthogonal map Q (C × C, Procrustes) takes this VAE's scaled latents ``z_all`` nearest to the old
    VAE's on the same images, per pixel; ``conv_in`` then reads Q·z and ``conv_out`` returns Qᵀ·ε̂.
    Orthogonal, so unit Gaussian noise stays unit Gaussian noise and the old network reads the noise
    level right. Start loss with a VAE 200 steps in: 0.148 through Q, 0.33 unmapped, 16.0 through a
    least-squares map (R² 0.59; it shrinks the noise), 1.12 from random networks."""
    import copy

    old_vae = copy.deepcopy(vae).eval()                             # same architecture; the old weights and scale
    old_scale = _load_exported(src, old_vae, unet, cn, text)
    z_old = _latent_means(old_vae, x_all) * old_scale
    a = z_all.permute(0, 2, 3, 1).reshape(-1, z_all.shape[1]).double()
    b = z_old.permute(0, 2, 3, 1).reshape(-1, z_old.shape[1]).double()
    u, _, vt = torch.linalg.svd(a.T @ b)                            # b ≈ a @ Qᵀ, Qᵀ = U Vᵀ
    q = (u @ vt).T
    residual = ((a @ q.T - b) ** 2).sum() / ((b - b.mean(0)) ** 2).sum()
    with torch.no_grad():
        for conv in (unet.conv_in, cn.conv_in):
            conv.weight.copy_(torch.einsum("oikl,ij->ojkl", conv.weight.double(), q).float())
        unet.conv_out.weight.copy_(torch.einsum("ji,jckl->ickl", q, unet.conv_out.weight.double()).float())
        unet.conv_out.bias.copy_((q.T @ unet.conv_out.bias.double()).float())
    log(f"UNet, ControlNet and text model from {src}; the latent map leaves {residual.item():.2f} of the old latents' variance")


def _train_vae(vae, x_all, state, steps, batch_size, seed, deadline, ckpt_every, checkpoint, log) -> None:
    """Stage 1: train the VAE on 32x64 crops (``_vae_loss``, AdamW cosine 1e-3 -> 1e-4) up to ``steps``; when
    done, set the latent scaling factor from the data and hand over to the UNet stage."""
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    vae.train()
    while state["step"] < steps and not (deadline and time.time() > deadline):
        for group in opt.param_groups:
            group["lr"] = _cosine(1e-3, 1e-4, state["step"] / steps)
        rng, gen = _step_rng(seed, "vae", state["step"])
        idx = torch.from_numpy(rng.integers(0, len(x_all), batch_size))
        # Crops at even offsets, on the latent grid, so a crop encodes as its part of the whole image.
        y0, x0 = 2 * int(rng.integers(0, (SIZE[0] - 32) // 2 + 1)), 2 * int(rng.integers(0, (SIZE[1] - 64) // 2 + 1))
        x = x_all[idx][..., y0:y0 + 32, x0:x0 + 64]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        loss = _vae_loss(rec, x, post.mean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["step"] += 1
        if state["step"] % 50 == 0:
            log(f"vae step {state['step']}/{steps}: L1 {loss.item():.4f}, PSNR {_psnr(rec, x):.1f} dB")
        if state["step"] % ckpt_every == 0:
            state["opt"] = opt.state_dict()
            checkpoint()
    if state["step"] >= steps:      # unit-variance latents for the UNet, in the exported config from now on
        state.update(stage="unet", step=0, scale=float(1 / _latent_means(vae.eval(), x_all).std()))
        vae.register_to_config(scaling_factor=state["scale"])
        log(f"latent scaling factor {state['scale']:.4f}")
        state.pop("opt", None)
    checkpoint()


def _finetune_decoder(vae, x_all, state, steps, batch_size, seed, deadline, ckpt_every, checkpoint, log) -> None:
    """Fine-tune the VAE's decoder on whole images of every style, L1 loss, AdamW cosine 3e-4 -> 3e-5.

    The encoder stays frozen, so the latents the UNet learnt are unchanged: this lifts reconstruction
    quality (stage 1 sees only 32x64 crops) without retraining the UNet. Its own step count,
    RNG streams and optimiser state (``state["decoder_opt"]``) keep it resumable and leave stage 2's alone."""
    # Decode posterior means (the committed weights' first 250 steps decoded samples): the UNet learns
    # and generates means and toy-check scores them, while in samples 4 of the 8 channels are mostly
    # noise (posterior std 0.5-0.9 against a spread of 0.3-0.5 in their means).
    state.setdefault("decoder_on_mean_from", state.get("decoder_step", 0))
    vae.eval().requires_grad_(False)
    z_all = _latent_means(vae, x_all)                           # the encoder is frozen: encode once
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4)
    if "decoder_opt" in state:
        opt.load_state_dict(state["decoder_opt"])
    state.setdefault("decoder_step", 0)
    while state["decoder_step"] < steps and not (deadline and time.time() > deadline):
        rng, _ = _step_rng(seed, "decoder", state["decoder_step"])
        for group in opt.param_groups:
            group["lr"] = _cosine(3e-4, 3e-5, state["decoder_step"] / steps)
        idx = torch.from_numpy(rng.integers(0, len(x_all), batch_size))
        x = x_all[idx]
        rec = vae.decode(z_all[idx]).sample
        loss = F.l1_loss(rec, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["decoder_step"] += 1
        if state["decoder_step"] % 50 == 0:
            log(f"decoder step {state['decoder_step']}/{steps}: L1 {loss.item():.4f}, PSNR {_psnr(rec, x):.1f} dB")
        if state["decoder_step"] % ckpt_every == 0 or state["decoder_step"] == steps:
            state["decoder_opt"] = opt.state_dict()
            checkpoint()
    vae.requires_grad_(False)


@dataclass
class ToyTrainConfig:
    """Settings of :func:`train_toy` (``zodi models train-toy``); its docstring explains each."""

    out: str
    vae_steps: int = 700
    steps: int = 20000
    minutes: float | None = None
    batch_size: int = 16
    corpus_per_style: int = 300
    seed: int = 0
    ckpt_every: int = 100
    init_from: str | None = None
    offset_noise: float = OFFSET_NOISE
    decoder_steps: int = 0
    rare_class: float | None = None
    unet_from: str | None = None
    focus: str | None = None
    class_weight: float | None = None


def train_toy(cfg: ToyTrainConfig, log=print) -> dict:
    """Train (or continue training) the toy stack in ``cfg.out``; stops after ``cfg.minutes`` if given. Returns progress.

    ``init_from``: a folder with exported ``sd/`` and ``controlnet/`` to start stage 2 from, when
    ``out`` holds no state yet (the committed model has no optimiser state). ``offset_noise``: the
    std of the offset from now on; ``state["offset_noise"]`` lists ``[from_step, std]`` pairs.
    ``decoder_steps``: fine-tune the VAE's decoder alone this far (counted in ``state["decoder_step"]``)
    before the UNet stage continues. ``rare_class``: from now on draw half of each batch by rare-class
    sampling at this temperature (``state["rare_class"]`` lists ``[from_step, T]``; None keeps the last).
    ``unet_from``: exported folders whose UNet, ControlNet and text model (not VAE) start stage 2 when it
    has taken no step yet; their latent space is mapped onto this VAE's (``_start_from``). ``focus``
    ("night:bus,wall"): from now on draw a quarter of each batch from the corpus images of that style
    holding those classes, for classes a model loses in one style (``state["focus"]`` lists
    ``[from_step, spec]``; "" stops it, None keeps the last). ``class_weight``: from now on weigh each latent
    pixel's noise loss by its class's rarity to this power (``_class_weights``; 0 stops it, None keeps the last)."""
    from transformers.utils import logging as hf_logging

    from ..data.classsets import load
    from .tiny import make_tiny

    if cfg.focus:
        _parse_focus(cfg.focus)                                     # a bad spec fails before the corpus is built
    hf_logging.disable_progress_bar()
    torch.set_flush_denormal(True)         # softmax and SiLU tails otherwise hit slow denormal arithmetic (-15 % step time)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "text" / "sd").exists():
        make_tiny(out / "text", seed=cfg.seed)                      # the initial tiny CLIP and its tokenizer
    images, labels, captions = _corpus(out / "corpus", cfg.corpus_per_style, cfg.seed + 1000)
    tok, text, vae, unet, cn = _models(out / "text")
    state_path = out / "state.pt"
    if state_path.exists():
        state = load_state(state_path, "toy-model training state")
    elif cfg.init_from is not None:
        scale = _load_exported(Path(cfg.init_from), vae, unet, cn, text)
        steps_file, history = Path(cfg.init_from) / "STEPS", Path(cfg.init_from) / "TRAINING.json"
        state = {"stage": "unet", "step": int(steps_file.read_text()) if steps_file.exists() else 0,
                 "vae": vae.state_dict(), "unet": unet.state_dict(), "cn": cn.state_dict(), "text": text.state_dict(), "scale": scale,
                 "init_from": str(cfg.init_from), **(json.loads(history.read_text()) if history.exists() else {})}
        log(f"starting from {cfg.init_from} at UNet step {state['step']} (fresh optimiser)")
    else:
        state = {"stage": "vae", "step": 0}
    if "vae" in state:
        vae.load_state_dict(state["vae"])
    if "scale" in state:
        vae.register_to_config(scaling_factor=state["scale"])
    if "unet" in state:
        unet.load_state_dict(state["unet"])
        cn.load_state_dict(state["cn"])
    if "text" in state:
        text.load_state_dict(state["text"])
    deadline = time.time() + cfg.minutes * 60 if cfg.minutes else None
    palette = torch.tensor(load("cityscapes19").colors, dtype=torch.float32)
    lut = torch.zeros(256, 3)
    lut[:19] = palette / 255
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    c_all = lut[torch.from_numpy(labels).long()].permute(0, 3, 1, 2)
    tokens = tok(sorted(set(captions)) + [""], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    cap_index = {c: i for i, c in enumerate(sorted(set(captions)) + [""])}
    cap_ids = torch.tensor([cap_index[c] for c in captions])
    ema = dict(state.get("ema") or {})                          # UNet/ControlNet/text parameter name -> EMA tensor
    trained = {"unet": unet, "cn": cn, "text": text}

    def checkpoint():
        state.update(vae=vae.state_dict(), ema=ema, **{name: m.state_dict() for name, m in trained.items()})
        save_state(state_path, state)
        live = {name: m.state_dict() for name, m in trained.items()}
        for name, model in trained.items():                     # export the averaged weights, then restore
            model.load_state_dict({**live[name], **{k[len(name) + 1:]: v for k, v in ema.items() if k.startswith(name + ".")}})
        _save(out, tok, text, vae, unet, cn)
        for name, model in trained.items():
            model.load_state_dict(live[name])

    # Stage 1: the VAE ---------------------------------------------------------------------------
    if state["stage"] == "vae":
        _train_vae(vae, x_all, state, cfg.vae_steps, cfg.batch_size, cfg.seed, deadline, cfg.ckpt_every, checkpoint, log)

    # Stage 1b: the decoder alone, on whole images -----------------------------------------------
    if state["stage"] == "unet" and state.get("decoder_step", 0) < cfg.decoder_steps:
        _finetune_decoder(vae, x_all, state, cfg.decoder_steps, cfg.batch_size, cfg.seed, deadline, cfg.ckpt_every,
                          checkpoint, log)

    # Stage 2: UNet + ControlNet -----------------------------------------------------------------
    if state["stage"] == "unet" and state["step"] < cfg.steps and not (deadline and time.time() > deadline):
        from diffusers import DDPMScheduler

        from .tiny import SD15_SCHEDULER

        sched = DDPMScheduler(**{k: v for k, v in SD15_SCHEDULER.items() if k not in ("set_alpha_to_one", "steps_offset")})
        alphas = sched.alphas_cumprod
        state.setdefault("min_snr_from", state["step"])         # (states from before it used plain ε-MSE)
        state.setdefault("text_from", state.get("opt_from", state["step"]))   # (and before the text model trained)
        if "offset_noise_from" in state:                        # (states that knew only the default std)
            state["offset_noise"] = [[state.pop("offset_noise_from"), OFFSET_NOISE]]
        _from_now_on(state, "offset_noise", cfg.offset_noise)
        temperature = _from_now_on(state, "rare_class", cfg.rare_class, none=0)
        rcs = _rare_class_table(labels, temperature) if temperature else None
        spec = _from_now_on(state, "focus", cfg.focus, none="")
        focused = _focus_scenes(labels, captions, spec) if spec else None
        power = _from_now_on(state, "class_weight", cfg.class_weight, none=0)
        w_all = _class_weights(labels, power) if power else None
        if w_all is not None:   # each image's weights averaging 1, so its loss keeps its scale
            w_all = w_all / w_all.mean(dim=(2, 3), keepdim=True)
        vae.eval().requires_grad_(False)
        named = [(f"{name}.{k}", p) for name, m in trained.items() for k, p in m.named_parameters()]
        params = [p for _, p in named]
        ema.update({k: p.detach().clone() for k, p in named})
        ema.update(state.get("ema") or {})                      # (a state from before the text encoder trained lacks it)
        ema_list = [ema[k] for k, _ in named]
        opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-2)
        if "opt" in state and len(state["opt"]["param_groups"][0]["params"]) == len(params):
            opt.load_state_dict(state["opt"])
        else:                                                   # a fresh optimiser (or one from before the text model
            state["opt_from"] = state["step"]                   # trained) warms up again
        for m in trained.values():
            m.train()
        z_all = _latent_means(vae, x_all)
        if "scale" not in state:                                # (a state from before the VAE stage set it)
            state["scale"] = float(1 / z_all.std())
            vae.register_to_config(scaling_factor=state["scale"])
            log(f"latent scaling factor {state['scale']:.4f}")
        z_all = z_all * state["scale"]
        if cfg.unet_from is not None and state["step"] == 0 and "unet_from" not in state:
            _start_from(Path(cfg.unet_from), vae, x_all, z_all, unet, cn, text, log)
            state["unet_from"] = str(cfg.unet_from)
            for k, p in named:                                  # (in place: ema_list holds these tensors)
                ema[k].copy_(p.detach())
        while state["step"] < cfg.steps and not (deadline and time.time() > deadline):
            done = state["step"] - state.get("opt_from", 0) + 1  # steps of this optimiser, this one included
            for group in opt.param_groups:                      # linear warm-up over 200 steps
                group["lr"] = 5e-4 * min(1.0, done / 200)
            rng, gen = _step_rng(cfg.seed, "unet", state["step"])
            idx = rng.integers(0, len(z_all), cfg.batch_size)
            if rcs is not None:     # half the batch: scenes holding a class drawn by rarity (small classes, few trucks)
                for i in range(cfg.batch_size // 2):
                    scenes = rcs[1][rng.choice(len(rcs[0]), p=rcs[0])]
                    idx[i] = scenes[rng.integers(len(scenes))]
            if focused is not None:     # the next quarter: images of one style holding the classes it loses
                idx[cfg.batch_size // 2:cfg.batch_size // 2 + cfg.batch_size // 4] = rng.choice(focused, cfg.batch_size // 4)
            idx = torch.from_numpy(idx)
            z0, ctrl = z_all[idx], c_all[idx]
            ids = cap_ids[idx].clone()
            ids[torch.from_numpy(rng.random(cfg.batch_size) < 0.1)] = cap_index[""]
            emb = text(tokens.input_ids)[0][ids]                 # the six captions, with gradients
            # Offset noise (Guttenberg 2023): ε plus a per-image, per-channel constant. Plain ε leaves each
            # latent channel's mean (the image's brightness and tint) readable in z_t even at t = 999,
            # so the style was always known without the caption and the UNet learnt to ignore it.
            noise = torch.randn(z0.shape, generator=gen) + cfg.offset_noise * torch.randn(cfg.batch_size, z0.shape[1], 1, 1,
                                                                                             generator=gen)
            t = torch.randint(0, 1000, (cfg.batch_size,), generator=gen)
            zt = sched.add_noise(z0, noise, t)
            down, mid = cn(zt, t, encoder_hidden_states=emb, controlnet_cond=ctrl, return_dict=False)
            pred = unet(zt, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
            # Min-SNR-5 weighting (Hang et al. 2023): plain ε-MSE gives the high-noise steps, where
            # only the caption can tell night from clear, ~1 % of the weight of the low-noise ones.
            snr = alphas[t] / (1 - alphas[t])
            err = (pred - noise) ** 2
            if w_all is not None:   # rare classes' pixels weigh more
                err = err * w_all[idx]
            loss = err.mean(dim=(1, 2, 3)).mul(snr.clamp(max=5.0) / snr).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            state["step"] += 1
            with torch.no_grad():                               # EMA with the optimiser's warm-up, capped at 0.999
                torch._foreach_lerp_(ema_list, [p.detach() for p in params], 1 - min(0.999, (1 + done) / (10 + done)))
            state["loss"] = 0.98 * state.get("loss", loss.item()) + 0.02 * loss.item()
            if state["step"] % 50 == 0:
                log(f"unet step {state['step']}/{cfg.steps}: min-SNR noise loss (EMA) {state['loss']:.4f}")
            if state["step"] % cfg.ckpt_every == 0:
                state["opt"] = opt.state_dict()
                checkpoint()
        state["opt"] = opt.state_dict()
        checkpoint()
    return {"out": str(out), "stage": state["stage"], "step": state["step"], "loss": state.get("loss")}
