"""The invert and translate steps: datasets or inversion artifacts in, artifacts out, per item.

Each item's randomness comes from a CPU generator seeded by (seed, key) and consumed in a fixed
order (VAE posterior sample, encoding noise, per-step noise), so outputs do not depend on batch
size, order, device placement of the noise, or sharding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.registry import open_dataset
from ..errors import InputError
from ..runtime import key_seed
from .loop import check_projected_size, run_per_item

NEGATIVE = "lower quality, worst quality"


def domain_presets() -> dict:
    from .. import presets

    return presets.domains()


@dataclass
class DiffusionSettings:
    """Settings shared by invert and translate (resolved: presets applied, defaults filled)."""

    src: str
    out: str
    model: str = "sd15"
    revision: str | None = None              # of a Hub --model: branch, tag or commit
    controlnet: str | None = "controlnet-seg"
    model_config: str | None = None
    domain: str | None = None
    prompt: str | None = None
    prompt_suffix: str = ", best quality"
    negative_prompt: str | None = None       # ZoDi's code: NEGATIVE; edit-friendly DDPM's and DDIM's: ""
    strength: float | None = None
    steps: int | None = None
    guidance_scale: float = 9.0
    eta: float = 1.0
    method: str = "zodi"
    exact_timestep: bool = False
    palette: str | None = None               # default: cityscapes-full where the source has label ids (ZoDi's code)
    control_scale: float = 1.0
    short_side: int = 512
    size: tuple[int, int] | None = None
    full_res: bool = False
    skip: int = 0
    noise_dtype: str = "fp32"
    label_guidance: str = "none"
    segmenter: str | None = None
    sgg_scale: float = 1.0
    guidance_interval: tuple[int, int] | None = None   # CFG only for lo <= t <= hi (translate)
    lora: str | None = None                  # a 'zodi finetune' adapter folder, applied to the UNet
    lora_scale: float = 1.0
    preview: int = 0
    seed: int = 0
    batch_size: int = 1
    compute_batch: int = 1
    device: str = "auto"
    dtype: str = "auto"                      # fp16 on CUDA, fp32 on the CPU
    deterministic: bool = False
    vae_tiling: bool = False
    data_root: str | None = None
    allow_partial: bool = False

    def resolve(self) -> "DiffusionSettings":
        """Apply the --domain preset to fields left unset, then the built-in defaults."""
        if self.domain:
            table = domain_presets()
            if self.domain not in table:
                raise InputError(f"unknown --domain {self.domain!r}", f"choose one of: {', '.join(table)}")
            for k, v in table[self.domain].items():
                if getattr(self, k) is None:
                    setattr(self, k, v)
        if not self.prompt:
            raise InputError("no prompt given", "pass --prompt TEXT or --domain fog|night|rain|snow|game")
        if self.negative_prompt is None:       # the unconditional branch of guidance, as each method's authors run it
            self.negative_prompt = NEGATIVE if self.method == "zodi" else ""
        self.strength = 0.6 if self.strength is None else self.strength
        self.steps = 20 if self.steps is None else self.steps
        if not 0 < self.strength <= 1:
            raise InputError(f"--strength {self.strength} must be in (0, 1]", "e.g. 0.6 (fog) or 0.9 (night)")
        if self.method not in ("zodi", "ddpm", "ddim"):
            raise InputError(f"unknown --method {self.method!r}", "use zodi, ddpm or ddim")
        if self.label_guidance == "sgg" and not self.segmenter:
            raise InputError("--label-guidance sgg needs --segmenter CKPT", "pass a checkpoint written by 'zodi train-seg'")
        return self


def _recorded(settings: dict, s: DiffusionSettings) -> dict:
    """The command's settings with the preset-filled values, as every artifact records them."""
    return {**settings, "prompt": s.prompt, "strength": s.strength, "steps": s.steps, "method": s.method,
            "negative_prompt": s.negative_prompt, "palette": s.palette, "dtype": s.dtype}


def _choose_palette(s: DiffusionSettings, has_label_ids: bool, source: str) -> None:
    """ZoDi's code feeds gtFine_color.png, every label id coloured: the default wherever the source
    stores label ids (Cityscapes, ACDC, GTA5); the 19 train-id colours elsewhere."""
    if s.palette is None:
        s.palette = "cityscapes-full" if has_label_ids else "cityscapes"
    elif s.palette == "cityscapes-full" and not has_label_ids:
        raise InputError(f"--palette cityscapes-full needs label ids, and {source} has none",
                         "use --palette cityscapes (train ids) or ade20k, or a source with labelIds files")


def _control_maps(s: DiffusionSettings, train_ids: list[np.ndarray], label_ids) -> list[np.ndarray]:
    """What the palette colours: label ids (cityscapes-full) or train ids, at processing size."""
    from ..diffusion.layout import BY_LABEL_ID, resize_label

    if s.palette not in BY_LABEL_ID:
        return train_ids
    return [resize_label(ids, lbl.shape) for ids, lbl in zip(label_ids(), train_ids)]


def _dtype(name: str):
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise InputError(f"unknown --dtype {name!r}", "use fp32, fp16 or bf16")
    return table[name]


def _stack(s: DiffusionSettings, need_control: bool):
    from ..diffusion.models import load_stack
    from ..runtime import choose_device, resolve_dtype, set_deterministic

    dev = choose_device(s.device)
    s.dtype = resolve_dtype(s.dtype, dev)              # recorded resolved: auto on a GPU and on a CPU differ
    if s.deterministic:
        set_deterministic()
    if s.dtype == "fp16" and dev.type == "cpu":
        raise InputError("--dtype fp16 on the CPU", "use fp32 or bf16 on the CPU")
    stack = load_stack(s.model, s.controlnet if need_control else None, dev, _dtype(s.dtype), s.model_config,
                       s.vae_tiling, s.compute_batch, s.control_scale, s.revision)
    if s.lora:
        from ..diffusion.lora import load_lora, read_card

        read_card(s.lora)                       # an unfinished adapter is one line before anything is hashed
        load_lora(stack.unet, s.lora, s.lora_scale, model_fingerprint(s.model, s.revision, config=s.model_config)[0])
        stack.unet.to(stack.device, stack.dtype)
    return stack


def model_fingerprint(spec: str, revision=None, pipeline: bool = True, config=None) -> tuple[str, str | None]:
    """``SPEC@HASH`` of a model's files as load_stack reads them (plus its config folder's, for a single
    file), and the Hub commit it came from, if any."""
    from ..diffusion.hub import commit_of
    from ..diffusion.models import resolve
    from ..store.fingerprint import tree_fingerprint

    path, preset_cfg = resolve(spec, revision, pipeline)
    cfg = Path(config) if config else preset_cfg
    extra = f"+{tree_fingerprint(cfg)}" if path.is_file() and cfg else ""
    return f"{spec}@{tree_fingerprint(path)}{extra}", commit_of(path)


def _model_inputs(s: DiffusionSettings, control: bool) -> dict:
    """The models as recorded inputs: each spec with a hash of its files (after _stack checked they
    exist), so retrained weights under the same path or preset never resume an old output."""
    from ..store.fingerprint import file_fingerprint

    out = {}

    def fp(name, spec, revision=None, pipeline=True, config=None):
        fingerprint, commit = model_fingerprint(spec, revision, pipeline, config)
        if commit:                              # a Hub snapshot: its commit is provenance too
            out[f"{name}_commit"] = commit
        return fingerprint

    out["model"] = fp("model", s.model, s.revision, config=s.model_config)
    if control:
        out["controlnet"] = fp("controlnet", s.controlnet, pipeline=False) if s.controlnet else ""
    if s.segmenter and s.label_guidance == "sgg":
        out["segmenter"] = f"{s.segmenter}@{file_fingerprint(s.segmenter)}"
    if s.lora:
        from ..diffusion.lora import WEIGHTS

        out["lora"] = f"{s.lora}@{file_fingerprint(Path(s.lora) / WEIGHTS)}"
    return out


def generators(seed: int, keys: list[str]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(key_seed(seed, k)) for k in keys]


def _size_for(s: DiffusionSettings, stack, hw) -> tuple[int, int]:
    from ..diffusion.layout import check_size, processing_size

    if s.size:
        check_size(s.size, stack.size_multiple)
        return tuple(s.size)
    return processing_size(hw[0], hw[1], s.short_side, stack.size_multiple)


def _groups(items: list[int], sizes: list[tuple]) -> list[list[int]]:
    """Indices grouped by processing size (only same-sized items share a forward pass)."""
    out: dict[tuple, list[int]] = {}
    for i in items:
        out.setdefault(tuple(sizes[i]), []).append(i)
    return list(out.values())


def _text(stack, s: DiffusionSettings, n: int):
    cond = stack.text([s.prompt + s.prompt_suffix]).expand(n, -1, -1)
    uncond = stack.text([s.negative_prompt]).expand(n, -1, -1)
    return cond, uncond


# ---------------------------------------------------------------------------------------------


def invert(s: DiffusionSettings, settings: dict, shard=None, overwrite=False) -> dict:
    """zodi invert: per item z0, the start latent, the timesteps, (ddpm) the noise maps, the
    labels at processing size and the source size, so translate needs nothing else."""
    from ..diffusion.ddim_inversion import ddim_invert
    from ..diffusion.ddpm_inversion import ddpm_invert
    from ..diffusion.layout import control_image, resize_image, resize_label
    from ..diffusion.schedule import kept_timesteps
    from ..diffusion.zodi_transfer import encode_timestep, zodi_encode

    s.resolve()
    ds = open_dataset(s.src, s.data_root, s.allow_partial)
    if not ds.has_labels:
        raise InputError(f"{s.src} has no labels", "ControlNet-seg needs label maps; use a labelled split")
    _choose_palette(s, ds.has_label_ids, s.src)
    stack = _stack(s, need_control=bool(s.controlnet))
    ts = kept_timesteps(s.steps, s.strength, stack.num_train_timesteps)
    noise_dtype = np.float16 if s.noise_dtype == "fp16" else np.float32

    @torch.inference_mode()
    def work(keys):
        images = [ds.image(k) for k in keys]
        labels = [ds.label(k) for k in keys]
        _check_aligned(keys, images, labels)
        sizes = [_size_for(s, stack, im.shape[:2]) for im in images]
        out = {"z0": [None] * len(keys), "start": [None] * len(keys), "timesteps": [], "labels": [None] * len(keys),
               "source_size": [np.array(im.shape[:2], np.int32) for im in images]}
        if s.method == "ddpm":
            out["noise"], out["path"] = [None] * len(keys), [None] * len(keys)
        for idx in _groups(list(range(len(keys))), sizes):
            gens = generators(s.seed, [keys[i] for i in idx])
            ims = [resize_image(images[i], sizes[idx[0]]) for i in idx]
            lbs = [resize_label(labels[i], sizes[idx[0]]) for i in idx]
            maps = _control_maps(s, lbs, lambda: [ds.label_ids(keys[i]) for i in idx])
            control = control_image(maps, s.palette).to(stack.device) if stack.controlnet else None
            cond, uncond = _text(stack, s, len(idx))
            z0 = stack.encode(ims, gens)
            if s.method == "zodi":
                start = zodi_encode(stack, z0, encode_timestep(s.strength, s.steps, s.exact_timestep), cond, control, gens)
            elif s.method == "ddpm":
                path, noise = ddpm_invert(stack, z0, ts, cond, uncond, s.guidance_scale, control, s.eta, gens)
                start = path[:, 0]
            else:
                start = ddim_invert(stack, z0, ts, cond, uncond, s.guidance_scale, control)
            for j, i in enumerate(idx):
                out["z0"][i] = z0[j].cpu().numpy()
                out["start"][i] = start[j].cpu().numpy()
                out["labels"][i] = lbs[j]
                if maps is not lbs:
                    out.setdefault("label_ids", [None] * len(keys))[i] = maps[j]
                if s.method == "ddpm":
                    out["noise"][i] = noise[j].cpu().numpy().astype(noise_dtype)
                    out["path"][i] = path[j].cpu().numpy().astype(noise_dtype)
        out["timesteps"] = [np.array(ts, np.int32)] * len(keys)
        return out

    inputs = {"src": ds.fingerprint(), **_model_inputs(s, control=True)}
    return run_per_item(s.out, "invert", _recorded(settings, s), inputs, ds.keys(), work, batch_size=s.batch_size,
                        shard=shard, overwrite=overwrite)


def translate(s: DiffusionSettings, settings: dict, shard=None, overwrite=False) -> dict:
    """zodi translate: from a dataset (ZoDi transfer inline) or from an inversion artifact."""
    from ..diffusion.ddpm_inversion import ddpm_regenerate
    from ..diffusion.layout import control_image, resize_image, resize_label
    from ..diffusion.zodi_transfer import sample, transfer

    inv = _inversion_artifact(s.src, s.allow_partial)
    if inv is not None:
        s.method = inv.meta["settings"].get("method", "zodi")
        s.strength = inv.meta["settings"].get("strength")
        s.steps = inv.meta["settings"].get("steps")
        if s.skip and (s.method != "ddpm" or not inv.has("path")):
            raise InputError(f"--skip needs a --method ddpm inversion with its path latents; {s.src} is "
                             + ("an older one without them" if s.method == "ddpm" else f"a {s.method} inversion"),
                             "re-run 'zodi invert --method ddpm'")
        s.palette = s.palette or inv.meta["settings"].get("palette") or "cityscapes"
        _choose_palette(s, inv.has("label_ids"), s.src)
    elif s.skip:
        raise InputError("--skip applies to translating a --method ddpm inversion", "pass --src h5:INVERSION.h5")
    s.resolve()
    ds = None if inv is not None else open_dataset(s.src, s.data_root, s.allow_partial)   # cheap checks first
    if ds is not None and not ds.has_labels:
        raise InputError(f"{s.src} has no labels", "ControlNet-seg needs label maps; use a labelled split")
    if ds is not None:
        _choose_palette(s, ds.has_label_ids, s.src)
    stack = _stack(s, need_control=bool(s.controlnet))
    guide_factory = _label_guidance(s, stack) if s.label_guidance == "sgg" else None
    keys_all = inv.keys if inv is not None else ds.keys()
    previews: list = []

    # inference_mode skips autograd bookkeeping; SGG needs gradients, so it gets no_grad instead
    @(torch.no_grad() if guide_factory else torch.inference_mode())
    def work(keys):
        n = len(keys)
        out = {"images": [None] * n, "labels": [None] * n}
        if inv is not None:
            labels = [inv.get("labels", k) for k in keys]
            sizes = [lb.shape for lb in labels]
            src_sizes = [tuple(inv.get("source_size", k)) for k in keys]
        else:
            images = [ds.image(k) for k in keys]
            src_labels = [ds.label(k) for k in keys]
            _check_aligned(keys, images, src_labels)
            sizes = [_size_for(s, stack, im.shape[:2]) for im in images]
            src_sizes = [im.shape[:2] for im in images]
        for idx in _groups(list(range(n)), sizes):
            gens = generators(s.seed, [keys[i] for i in idx])
            size = tuple(sizes[idx[0]])
            lbs = [labels[i] for i in idx] if inv is not None else [resize_label(src_labels[i], size) for i in idx]
            maps = _control_maps(s, lbs, lambda: [inv.get("label_ids", keys[i]) for i in idx] if inv is not None
                                 else [ds.label_ids(keys[i]) for i in idx])
            control = control_image(maps, s.palette).to(stack.device) if stack.controlnet else None
            cond, uncond = _text(stack, s, len(idx))
            guide = guide_factory(lbs) if guide_factory else None
            if inv is None:
                ims = [resize_image(images[i], size) for i in idx]
                result, _ = transfer(stack, ims, control, cond, uncond, gens, s.strength, s.steps, s.guidance_scale,
                                     s.eta, s.exact_timestep, guide, s.guidance_interval)
            else:
                start = torch.stack([torch.from_numpy(inv.get("start", keys[i])) for i in idx]).to(stack.device)
                ts = [int(t) for t in inv.get("timesteps", keys[idx[0]])]
                if s.method == "ddpm":
                    def field(name):
                        return torch.stack([torch.from_numpy(inv.get(name, keys[i]).astype(np.float32)) for i in idx]).to(stack.device)

                    path = field("path") if inv.has("path") else start[:, None]
                    z = ddpm_regenerate(stack, path, field("noise"), ts, cond, uncond, s.guidance_scale, control, s.eta, s.skip)
                else:
                    eta = s.eta if s.method == "zodi" else 0.0
                    z = sample(stack, start, ts, cond, uncond, s.guidance_scale, control, eta, gens, guide=guide,
                               guidance_interval=s.guidance_interval)
                result = stack.decode(z)
                ims = stack.decode(torch.stack([torch.from_numpy(inv.get("z0", keys[i])) for i in idx]).to(stack.device)) \
                    if s.preview else [None] * len(idx)
            for j, i in enumerate(idx):
                img, lbl = result[j], lbs[j]
                if s.full_res and tuple(src_sizes[i]) != img.shape[:2]:
                    img, lbl = resize_image(img, src_sizes[i]), resize_label(lbl, src_sizes[i])
                out["images"][i], out["labels"][i] = img, lbl
                if len(previews) < s.preview:
                    previews.append((keys[i], ims[j], lbs[j], result[j]))
        return out

    inputs = {"src": inv.meta["fingerprint"] if inv is not None else ds.fingerprint(), **_model_inputs(s, control=True)}
    summary = run_per_item(s.out, "translate", _recorded(settings, s), inputs, keys_all, work, batch_size=s.batch_size,
                           shard=shard, overwrite=overwrite)
    if s.preview and previews:
        from ..metrics.figures import contact_sheet

        path = Path(summary["out"]).with_suffix(".preview.png")
        contact_sheet(path, previews, "cityscapes" if s.palette == "cityscapes-full" else s.palette)   # train ids
        summary["preview"] = str(path)
    return summary


def _check_aligned(keys, images, labels) -> None:
    for k, im, lb in zip(keys, images, labels):
        if lb.shape != im.shape[:2]:
            raise InputError(f"label map of {k!r} is {lb.shape[1]}x{lb.shape[0]} but its image is {im.shape[1]}x{im.shape[0]}",
                             "labels must be aligned with their images (same size)")


def _inversion_artifact(src: str, allow_partial: bool):
    if not src.startswith("h5:"):
        return None
    from ..store import Artifact

    art = Artifact(src[3:], allow_partial=allow_partial)
    return art if art.meta["command"] == "invert" else None


def _label_guidance(s: DiffusionSettings, stack):
    from ..diffusion.sgg import LabelGuidance
    from ..seg.checkpoint import model_from_checkpoint

    seg, _ = model_from_checkpoint(s.segmenter, stack.device)
    return lambda labels: LabelGuidance(stack, seg, labels, s.sgg_scale)


def extract_features(s: DiffusionSettings, settings: dict, blocks: str = "diff", inversion=None, features=None,
                     shard=None, overwrite=False, max_size: int | None = 100 * 2**30) -> dict:
    """zodi extract-features: DIFF's UNet features per item, ``features/s<stride>`` float16, with the
    labels (if any) for training on the cache."""
    from ..diffusion.features import (FEATURE_TIMESTEPS, INVERSION_TIMESTEPS, check_timesteps, extract, feature_bytes,
                                      feature_layout, select_blocks)
    from ..diffusion.layout import resize_image, resize_label
    from ..store.shards import shard_keys

    inversion = tuple(inversion or INVERSION_TIMESTEPS)
    features = tuple(features or FEATURE_TIMESTEPS)
    check_timesteps(inversion, features)
    ds = open_dataset(s.src, s.data_root, s.allow_partial)
    stack = _stack(s, need_control=False)
    names = select_blocks(stack.unet, blocks)
    layout = feature_layout(stack, names, features)
    h, w = _size_for(s, stack, ds.image(ds.keys()[0]).shape[:2])      # the first item's processing size
    per_item = feature_bytes(layout, h, w)
    check_projected_size("extract-features", len(shard_keys(ds.keys(), shard)), per_item, max_size,
                         "extract fewer --blocks or --timesteps, a smaller --short-side, or train online without a cache "
                         "(train-seg --backbone diff-online)")

    @torch.inference_mode()
    def work(keys):
        images = [ds.image(k) for k in keys]
        labels = [ds.label(k) for k in keys] if ds.has_labels else None
        sizes = [_size_for(s, stack, im.shape[:2]) for im in images]
        out: dict = {"labels": [None] * len(keys)} if labels else {}
        for idx in _groups(list(range(len(keys))), sizes):
            gens = generators(s.seed, [keys[i] for i in idx])
            size = tuple(sizes[idx[0]])
            z0 = stack.encode([resize_image(images[i], size) for i in idx], gens)
            cond = stack.text([s.prompt or ""]).expand(len(idx), -1, -1)
            feats = extract(stack, z0, cond, names, inversion, features, s.eta, gens)
            for stride, f in feats.items():
                out.setdefault(f"features/s{stride}", [None] * len(keys))
                for j, i in enumerate(idx):
                    out[f"features/s{stride}"][i] = f[j].cpu().numpy().astype(np.float16)
            if labels:
                for i in idx:
                    out["labels"][i] = resize_label(labels[i], size)
        return out

    inputs = {"src": ds.fingerprint(), **_model_inputs(s, control=False)}
    return run_per_item(s.out, "extract-features", {**settings, "dtype": s.dtype}, inputs, ds.keys(), work, batch_size=s.batch_size,
                        shard=shard, overwrite=overwrite, field_attrs=layout)
