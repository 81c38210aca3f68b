"""train-seg: one training loop for source-only, ZoDi adaptation, self-training and adversarial
alignment; on one device or under torchrun (DDP), with exact resume.

Per step (batches go through the network separately, so BatchNorm sees them as separate batches):
    loss = CE(src) [+ CE(syn) − w_sim·cos(gap f4(src), gap f4(syn))] [+ w_pl·CE_conf(tgt, PL)]
           [+ CE(mix) + w_adv·BCE(D(GRL f4), domain)]
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConflictError, InputError, ZodiError
from ..runtime import key_seed
from ..settings import diff_settings, settings_hash
from ..stopping import deferred_stop
from ..store.files import check_not_link, open_append, write_text
from ..store.lock import WriterLock
from .checkpoint import load_checkpoint, numpy_rng_state, save_checkpoint, set_numpy_rng_state
from .data import Augment, PositionSampler, TrainSet
from .losses import DomainDiscriminator, cross_entropy, feature_similarity

# Settings that change how the run executes, not what it computes: a resume may change them.
RUN_ONLY = {"out", "device", "num_workers", "cache_mb", "data_root", "ckpt_every", "eval_every", "log_every", "overwrite",
            "allow_partial", "eval_limit", "deterministic"}


@dataclass
class TrainConfig:
    model: str = "deeplabv3plus_r50"
    source: str = "cityscapes:train"
    out: str = "runs/seg"
    synth: list[str] = field(default_factory=list)
    target: str | None = None
    target_pl: str | None = None
    val: str | None = None
    target_val: str | None = None
    iters: int = 74300
    batch_size: int = 4
    crop: tuple[int, int] | None = (384, 768)
    resize: tuple[int, int] | None = (512, 1024)
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    poly_unit: str = "iter"                  # "epoch": ZoDi's per-epoch poly steps
    lr_schedule: str = "poly"                # "multistep": MADM's (x gamma at each milestone)
    lr_milestones: tuple[float, ...] = (0.8889, 0.963)   # shares of --iters (MADM's)
    lr_gamma: float = 0.1
    warmup_iters: int = 0
    warmup_start: float = 0.0                # the LR factor warm-up starts from (MADM: 0.067)
    sim_weight: float | None = None          # default 0.1 with --synth, else 0
    pl_weight: float = 1.0
    pl_threshold: float = 0.968
    online_pl: bool = False                  # DACS/MADM: EMA-teacher pseudo-labels and ClassMix every step, on --target
    ema_decay: float = 0.999
    dplg_t0: int | None = None               # with online_pl and a diffusion backbone: MADM's DPLG schedule
    dplg_total: int | None = None
    adv_weight: float = 0.0
    rcs_temperature: float | None = None
    photometric: bool = False                # strong photometric augmentation (a baseline, or on top of ZoDi)
    amp: str = "auto"                        # bf16 (or fp16) on CUDA, none on the CPU; recorded resolved
    deterministic: bool = False              # deterministic GPU kernels (slower); a GPU resume is bit-exact only then
    grad_clip: float | None = None
    ckpt_every: int = 1000
    eval_every: int = 0
    eval_limit: int | None = None
    log_every: int = 10
    select_on: str = "source"
    seed: int = 1
    device: str = "auto"
    channels_last: bool = True               # NHWC weights: 1.13-1.18x the CPU iterations/s of NCHW; dropout
                                             # masks are drawn in memory order, so NCHW results differ as another seed's
    num_workers: int = 2
    cache_mb: float = 512                    # decoded, resized images kept per data process
    pretrained: str | None = None
    init_from: str | None = None             # start from a train-seg checkpoint's weights (PTL stages)
    backbone: str | None = None              # "features:h5:FILE" (DIFF on cached features), "diff-online", "sd-unet"
    val_features: str | None = None          # cached features of --val (with --backbone features:...)
    fusion_widths: tuple[int, ...] | None = None
    sd_model: str | None = None              # --backbone sd-unet|diff-online: the Stable Diffusion model
    lplr_weight: float = 1.0                 # MADM's label-palette latent regression (sd-unet only), on the source
    lplr_target_weight: float = 0.0          # ... and on pseudo-labelled target images (MADM: 1 for depth and infrared)
    output_stride: int | None = None
    data_root: str | None = None
    allow_partial: bool = False
    overwrite: bool = False

    def check(self) -> None:
        if self.batch_size < 2:
            raise InputError("--batch-size must be at least 2 per process", "BatchNorm needs two samples per batch")
        if self.iters < 1:
            raise InputError("--iters must be positive", "e.g. --iters 1000")
        if self.select_on not in ("source", "target"):
            raise InputError(f"--select-on {self.select_on!r}", "use source or target")
        if self.select_on == "target" and not self.target_val:
            raise InputError("--select-on target needs --target-val", "name the labelled target split, e.g. acdc:fog:val")
        if self.target and not (self.target_pl or self.adv_weight or self.online_pl):
            raise InputError("--target has no effect without --target-pl, --online-pl or --adv-weight",
                             "add --online-pl (self-training), --adv-weight W (adversarial alignment), or drop --target")
        if self.online_pl and (not self.target or self.target_pl or self.adv_weight):
            raise InputError("--online-pl needs --target images, and replaces --target-pl and --adv-weight",
                             "e.g. --target acdc:fog:train --online-pl")
        if (self.dplg_t0 is None) != (self.dplg_total is None) or (self.dplg_t0 is not None and not self.online_pl):
            raise InputError("--dplg-t0 and --dplg-total go together, with --online-pl", "e.g. --online-pl --dplg-t0 50 --dplg-total 8000")
        if self.adv_weight and not (self.target or self.target_pl):
            raise InputError("--adv-weight needs --target images", "e.g. --target acdc:fog:train")
        if self.lplr_target_weight and not (self.backbone == "sd-unet" and (self.target_pl or self.online_pl)):
            raise InputError("--lplr-target-weight needs --backbone sd-unet and --target-pl or --online-pl",
                             "LPLR regresses a diffusion backbone's output onto the pseudo-labels' palette")
        if self.backbone in ("sd-unet", "diff-online"):
            if not self.sd_model:
                raise InputError(f"--backbone {self.backbone} needs --sd-model",
                                 "e.g. --sd-model sd14 (MADM), sd21-base (DIFF), or a diffusers folder or Hub id")
            self.model = self.backbone.replace("-", "_")
        elif self.backbone:
            if not self.backbone.startswith("features:"):
                raise InputError(f"--backbone {self.backbone!r}",
                                 "use sd-unet (MADM), diff-online (DIFF, UNet in the loop) or features:h5:FILE (cached DIFF features)")
            if self.synth or self.target or self.target_pl or self.adv_weight:
                raise InputError("--backbone features:... trains on cached source features only",
                                 "drop --synth/--target/--target-pl/--adv-weight")
            if self.val and not self.val_features:
                raise InputError("--val with a feature backbone needs --val-features h5:FILE", "extract features of the val split too")
            self.model = "diff_fusion"
        if self.poly_unit not in ("iter", "epoch"):
            raise InputError(f"--poly-unit {self.poly_unit!r}", "use iter or epoch")
        if self.lr_schedule not in ("poly", "multistep"):
            raise InputError(f"--lr-schedule {self.lr_schedule!r}", "use poly or multistep")
        if self.optimizer not in ("sgd", "adamw"):
            raise InputError(f"--optimizer {self.optimizer!r}", "use sgd or adamw")
        if self.crop and self.resize and (self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1]):
            raise InputError(f"--crop {self.crop} is larger than --resize {self.resize}", "crop within the resized image")


def identity(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY}


class Trainee(nn.Module):
    """The segmenter (and the discriminator): one forward call per step, so DDP sees one graph."""

    def __init__(self, model: nn.Module, disc: nn.Module | None):
        super().__init__()
        self.model, self.disc = model, disc

    def forward(self, batches: list[torch.Tensor]) -> list[dict]:
        return [self.model(b) for b in batches]


def lr_at(cfg: TrainConfig, it: int, epoch_iters: int) -> float:
    """Linear warm-up from ``warmup_start``·lr, then poly (per iteration or epoch) or multi-step."""
    if it < cfg.warmup_iters:
        return cfg.lr * (cfg.warmup_start + (1 - cfg.warmup_start) * (it + 1) / cfg.warmup_iters)
    if cfg.lr_schedule == "multistep":
        return cfg.lr * cfg.lr_gamma ** sum(it >= m * cfg.iters for m in cfg.lr_milestones)
    if cfg.poly_unit == "epoch":
        progress = (it // epoch_iters) / max(1, math.ceil(cfg.iters / epoch_iters))
    else:
        progress = (it - cfg.warmup_iters) / max(1, cfg.iters - cfg.warmup_iters)
    return cfg.lr * (1 - min(progress, 1.0)) ** cfg.poly_power


def class_mix(src, lbl, tgt, pl, rng: torch.Generator):
    """ClassMix/DACS: paste half of each source image's classes onto a target image.
    Returns mixed images, mixed labels (pseudo-labels or ignore elsewhere) and the target share."""
    masks = []
    for y in lbl:
        classes = torch.unique(y[y != 255])
        chosen = classes[torch.randperm(len(classes), generator=rng)[: (len(classes) + 1) // 2]]
        masks.append(torch.isin(y, chosen))
    m = torch.stack(masks)
    mixed = torch.where(m[:, None], src, tgt)
    other = pl if pl is not None else torch.full_like(lbl, 255)
    return mixed, torch.where(m, lbl, other), (~m).float()


def _ddp_env():
    from ..store.shards import env_int

    env = os.environ
    return env_int(env, "RANK", 0), env_int(env, "WORLD_SIZE", 1), env_int(env, "LOCAL_RANK", 0)


def train(cfg: TrainConfig, settings: dict | None = None, log=print) -> dict:
    """Train; resume from ``out/last.pt`` when it exists with the same settings. Returns a summary.
    One run per output folder: rank 0 holds ``OUT/train-seg.lock``."""
    cfg.check()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    with WriterLock(Path(cfg.out) / "train-seg", "zodi train-seg") if _ddp_env()[0] == 0 else nullcontext():
        return _train(cfg, settings, log)


@dataclass
class _Run:
    """What one run holds, built by :func:`_setup`: the loop steps it, logs it and checkpoints it."""

    cfg: TrainConfig
    settings: dict | None
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype | None
    trainset: torch.utils.data.Dataset
    target: object                            # the unlabelled target dataset, or None
    epoch_iters: int
    trainee: Trainee
    teacher: object                           # OnlineTeacher with --online-pl, else None
    params: list                              # what the optimiser updates (and --grad-clip clips)
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    model_extra: dict                         # model-specific settings, saved with the weights
    inputs: dict                              # input fingerprints
    start: int = 0
    best: dict = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def state(self, it_done: int) -> dict:
        """Everything a checkpoint holds: weights, optimiser, RNGs and the run's provenance."""
        cfg, ident = self.cfg, identity(self.cfg)
        return {
            "model": self.trainee.model.state_dict(), "trainee": self.trainee.state_dict(), "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(), "iteration": it_done, "best": dict(self.best), "settings": ident,
            "settings_hash": settings_hash(ident), "all_settings": self.settings or asdict(cfg), "inputs": self.inputs,
            "model_config": {"name": cfg.model, "num_classes": 19, "output_stride": cfg.output_stride, **self.model_extra},
            "classes": "cityscapes19", "versions": _versions(),
            "rng": {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(), "python": random.getstate()},
            **({"teacher": self.teacher.state_dict()} if self.teacher is not None else {}),
        }


def _train(cfg: TrainConfig, settings: dict | None, log) -> dict:
    run = _setup(cfg, settings)
    _resume(run, log)
    out, rank, world = run.out, run.rank, run.world
    if rank == 0:
        _truncate_log(out / "metrics.jsonl", run.start)
    if run.start >= cfg.iters:
        if world > 1:
            torch.distributed.destroy_process_group()
        return {"out": str(out), "iteration": run.start, "best": run.best, "resumed": True, "done": 0, "world_size": world}
    net = run.trainee
    if world > 1:
        net = nn.parallel.DistributedDataParallel(run.trainee, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    loader = torch.utils.data.DataLoader(
        run.trainset, batch_size=cfg.batch_size, num_workers=cfg.num_workers, drop_last=True,
        sampler=PositionSampler(run.start * cfg.batch_size * world, (cfg.iters - run.start) * cfg.batch_size, rank, world),
        generator=torch.Generator().manual_seed(cfg.seed),   # keeps the global RNG untouched
        pin_memory=run.device.type == "cuda", persistent_workers=False)

    # last.pt is written one step late: only once the next step's loss is finite is a state known to
    # be healthy (a huge but finite update shows only then), so a diverging run never leaves a
    # checkpoint that fails at once on resume.
    last = out / "last.pt"
    pending, saved_at = None, run.start

    def commit(state: dict) -> None:
        nonlocal saved_at
        save_checkpoint(last, state)
        saved_at = state["iteration"]

    log_ = _MetricsLog(out / "metrics.jsonl", cfg) if rank == 0 else None
    bar = _bar(cfg.iters, run.start) if rank == 0 else None
    it, in_step = run.start, False
    with deferred_stop() as stop:
        try:
            for batch in loader:
                in_step = True
                if log_ is not None:
                    log_.data_ready()
                lr = _set_lr(run, it)
                loss, parts = _losses(cfg, net, run.trainee, {k: _to(v, run.device) for k, v in batch.items()},
                                      run.target, it, run.dtype, run.device, run.teacher)
                if not _all_finite(loss, world):
                    raise _diverged(cfg, loss, it, last, saved_at)
                if pending is not None and rank == 0:
                    commit(pending)
                pending = None
                _update(run, loss, it)
                it += 1
                if rank == 0:
                    bar.update(1)
                    log_.step_done(it, lr, loss, parts)
                if cfg.eval_every and (it % cfg.eval_every == 0 or it == cfg.iters):
                    _evaluate_and_select(run, it, log_)
                if rank == 0 and it == cfg.iters:
                    if not _finite_weights(run.trainee):
                        raise _diverged(cfg, None, it, last, saved_at)
                    commit(run.state(it))
                elif rank == 0 and it % cfg.ckpt_every == 0:
                    pending = _detached(run.state(it))
                if world > 1:
                    torch.distributed.barrier()
                in_step = False
                if stop.requested:
                    raise stop.exception()
        except BaseException as e:
            # Stopped between steps (Ctrl-C, SIGTERM, a loader worker killed): keep the progress made.
            stopped = isinstance(e, KeyboardInterrupt) or (stop.requested and isinstance(e, RuntimeError))
            if rank == 0 and stopped and not in_step and it > saved_at and _finite_weights(run.trainee):
                commit(run.state(it))
                log(f"stopped at iteration {it}; saved {last}")
            if stop.requested and not isinstance(e, KeyboardInterrupt):
                raise stop.exception() from e
            raise
        finally:
            if bar is not None:
                bar.close()
            if log_ is not None:
                log_.close()
            if world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    return {"out": str(out), "iteration": it, "best": run.best, "resumed": run.start > 0, "done": it - run.start,
            "world_size": world}


def _setup(cfg: TrainConfig, settings: dict | None) -> _Run:
    """The device (and DDP process group), the data, the model, its optimiser and the inputs' fingerprints."""
    from ..runtime import amp_dtype, choose_device, resolve_amp, set_deterministic

    rank, world, local = _ddp_env()
    device = choose_device(cfg.device)
    cfg.amp = resolve_amp(cfg.amp, device)
    if cfg.deterministic:
        set_deterministic()
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    data = _data(cfg)
    epoch_iters = math.ceil(len(data["source"]) / (cfg.batch_size * world))

    torch.manual_seed(cfg.seed)
    trainee, teacher = _model(cfg, data["model_extra"], device)
    params = [p for p in trainee.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
           if cfg.optimizer == "sgd" else torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    dtype = amp_dtype(cfg.amp)
    return _Run(cfg=cfg, settings=settings, rank=rank, world=world, device=device, dtype=dtype, trainset=data["trainset"],
                target=data["target"], epoch_iters=epoch_iters, trainee=trainee, teacher=teacher, params=params, opt=opt,
                scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
                model_extra=data["model_extra"], inputs=_inputs(cfg, data),
                best={"score": -1.0, "iteration": None,
                      "selection": "oracle (target val)" if cfg.select_on == "target" else "source val"})


def _data(cfg: TrainConfig) -> dict:
    """The datasets a run reads and the training set built from them; a feature backbone's channels."""
    from ..data.registry import open_dataset
    from ..store import Artifact

    source = open_dataset(cfg.source, cfg.data_root, cfg.allow_partial)
    synth = [open_dataset(s if s.startswith("h5:") else f"h5:{s}", cfg.data_root, cfg.allow_partial) for s in cfg.synth]
    pseudo, target, features, extra = None, None, None, {}
    if cfg.target_pl:
        pseudo = Artifact(cfg.target_pl.removeprefix("h5:"), allow_partial=cfg.allow_partial)
        if not (pseudo.has("preds") and pseudo.has("confidence")):
            raise InputError(f"{pseudo.path} lacks 'preds' and 'confidence'", "pass an artifact from 'zodi pseudolabel'")
        target = open_dataset(cfg.target or pseudo.meta["settings"].get("src", ""), cfg.data_root, cfg.allow_partial)
    elif cfg.target:
        target = open_dataset(cfg.target, cfg.data_root, cfg.allow_partial)
    if cfg.backbone == "sd-unet":
        extra = {"sd_model": cfg.sd_model}
    elif cfg.backbone == "diff-online":
        extra = {"sd_model": cfg.sd_model, "widths": list(cfg.fusion_widths) if cfg.fusion_widths else None}
    if cfg.backbone and cfg.backbone.startswith("features:"):
        from .data import FeatureSet

        features = Artifact(cfg.backbone.removeprefix("features:").removeprefix("h5:"), allow_partial=cfg.allow_partial)
        trainset = FeatureSet(source, features, cfg.seed)
        extra = {"in_channels": {f.split("/")[1]: int(features.file[f].shape[1]) for f in trainset.fields},
                 "widths": list(cfg.fusion_widths) if cfg.fusion_widths else None}
    else:
        aug = Augment(resize=cfg.resize, crop=cfg.crop, photometric=cfg.photometric)
        trainset = TrainSet(source, aug, cfg.seed, synth, target, pseudo, cfg.pl_threshold, cfg.rcs_temperature, Path(cfg.out),
                            cfg.cache_mb)
    return {"source": source, "synth": synth, "target": target, "pseudo": pseudo, "features": features,
            "trainset": trainset, "model_extra": extra}


def _model(cfg: TrainConfig, extra: dict, device: torch.device) -> tuple[Trainee, object]:
    """The segmenter (from --init-from's weights when given), the adversarial discriminator, and the
    online teacher; convolutions follow the weights' layout (NHWC or NCHW), which loaded states keep."""
    from .models import build_model

    model = build_model(cfg.model, num_classes=19, output_stride=cfg.output_stride, pretrained=cfg.pretrained, **extra)
    if cfg.init_from:
        init = load_checkpoint(cfg.init_from)
        if init["model_config"]["name"] != cfg.model or init["model_config"].get("output_stride") != cfg.output_stride:
            raise InputError(f"{cfg.init_from} holds a {init['model_config']['name']} (output stride "
                             f"{init['model_config'].get('output_stride')}), not {cfg.model}", "pass --model to match it")
        model.load_state_dict(init["model"])
    disc = DomainDiscriminator(_feature_channels(model)) if cfg.adv_weight else None
    layout = torch.channels_last if cfg.channels_last else torch.preserve_format
    trainee = Trainee(model, disc).to(device, memory_format=layout)
    teacher = None
    if cfg.online_pl:
        from .self_training import OnlineTeacher

        dplg = (cfg.dplg_t0, cfg.dplg_total) if cfg.dplg_t0 is not None else None
        teacher = OnlineTeacher(trainee.model, cfg.ema_decay, cfg.pl_threshold, dplg)
    return trainee, teacher


def _inputs(cfg: TrainConfig, data: dict) -> dict:
    """Fingerprints of everything the run reads; the diffusion weights are an input like the data."""
    inputs = {"source": data["source"].fingerprint(), **{f"synth{i}": s.fingerprint() for i, s in enumerate(data["synth"])}}
    if data["target"] is not None:
        inputs["target"] = data["target"].fingerprint()
    if data["pseudo"] is not None:
        inputs["target_pl"] = data["pseudo"].meta["fingerprint"]
    if data["features"] is not None:
        inputs["features"] = data["features"].meta["fingerprint"]
    if cfg.sd_model:
        from ..diffusion.models import resolve
        from ..store.fingerprint import tree_fingerprint

        inputs["sd_model"] = f"{cfg.sd_model}@{tree_fingerprint(resolve(cfg.sd_model)[0])}"
    return inputs


def _resume(run: _Run, log) -> None:
    """Load OUT/last.pt when it holds this run (same settings and inputs), else start over (--overwrite)."""
    cfg, last = run.cfg, run.out / "last.pt"
    if cfg.overwrite:
        for p in (last, run.out / "best.pt", run.out / "metrics.jsonl"):
            p.unlink(missing_ok=True)
        return
    if not last.exists():
        return
    state = load_checkpoint(last)
    diff = diff_settings(state["settings"], identity(cfg))
    old_inputs = state.get("inputs") or {}
    changed = sorted(k for k in set(old_inputs) | set(run.inputs) if old_inputs.get(k) != run.inputs.get(k))
    if diff or changed:
        raise ConflictError(f"{last} comes from a run with other settings or data: "
                            + "; ".join(diff + ([f"inputs changed: {', '.join(changed)}"] if changed else [])),
                            "pass --overwrite to start over, or choose another --out")
    run.trainee.load_state_dict(state["trainee"])
    if run.teacher is not None:
        run.teacher.load_state_dict(state["teacher"])
    run.opt.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    set_numpy_rng_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    run.start, run.best = state["iteration"], state["best"]
    log(f"resuming {run.out} at iteration {run.start}/{cfg.iters}")


def _set_lr(run: _Run, it: int) -> float:
    lr = lr_at(run.cfg, it, run.epoch_iters)
    for g in run.opt.param_groups:
        g["lr"] = lr
    return lr


def _update(run: _Run, loss: torch.Tensor, it: int) -> None:
    """Backward, optional clipping, the optimiser step, then the EMA teacher."""
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.grad_clip:
        run.scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_(run.params, run.cfg.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    if run.teacher is not None:
        run.teacher.update(run.trainee.model, it)


def _evaluate_and_select(run: _Run, it: int, log_) -> None:
    """Score --val (and --target-val); keep OUT/best.pt on the selection split's best mIoU."""
    scores = _evaluate(run.cfg, run.trainee.model, run.device, run.dtype, run.rank, run.world)
    if run.rank != 0:
        return
    log_.write({"iter": it, "eval": scores})
    key = "target_val" if run.cfg.select_on == "target" else "val"
    if key in scores and scores[key]["miou"] > run.best["score"]:
        run.best.update(score=scores[key]["miou"], iteration=it)
        save_checkpoint(run.out / "best.pt", run.state(it))


class _MetricsLog:
    """OUT/metrics.jsonl: a record every --log-every steps, with the step time and the share of it
    spent waiting for data."""

    def __init__(self, path: Path, cfg: TrainConfig):
        self.file, self.every, self.iters = open_append(path), cfg.log_every, cfg.iters
        self.wait = self.busy = 0.0
        self.mark = self.ready = time.perf_counter()

    def data_ready(self) -> None:
        self.ready = time.perf_counter()
        self.wait += self.ready - self.mark

    def step_done(self, it: int, lr: float, loss, parts: dict) -> None:
        self.mark = time.perf_counter()
        self.busy += self.mark - self.ready
        if it % self.every == 0 or it == self.iters:
            total = self.wait + self.busy
            self.write({"iter": it, "lr": lr, "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                        "sec_per_iter": total / self.every, "data_wait_share": self.wait / max(total, 1e-9)})
            self.wait = self.busy = 0.0

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _class_mix_at(cfg, b, it, pl):
    """ClassMix of step `it`, seeded by the step so a resumed run mixes the same classes."""
    mix_rng = torch.Generator().manual_seed(key_seed(cfg.seed, "classmix", it))
    return class_mix(b["src"], b["lbl"], b["tgt"], pl, mix_rng)


def _losses(cfg, net, trainee, b, target, it, dtype, device, teacher=None):
    """One step's forward pass: (total loss, its named parts)."""
    sim_w = (0.1 if cfg.synth else 0.0) if cfg.sim_weight is None else cfg.sim_weight
    inputs_ = [b["src"]] + ([b["syn"]] if "syn" in b else [])
    mixed = None
    if teacher is not None:                     # online self-training: the student sees the mixed image only
        pl, pl_w = teacher.pseudo_labels(b["tgt"], it)
        mixed = _class_mix_at(cfg, b, it, pl)
        inputs_.append(mixed[0])
    elif target is not None:
        inputs_.append(b["tgt"])
        if cfg.adv_weight:
            mixed = _class_mix_at(cfg, b, it, b.get("pl"))
            inputs_.append(mixed[0])
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        outs = net(inputs_)
        parts = {"ce_src": cross_entropy(outs[0]["logits"], b["lbl"])}
        loss = parts["ce_src"]
        if "palette_latent" in outs[0] and cfg.lplr_weight:
            parts["lplr"] = trainee.model.lplr_loss(outs[0]["palette_latent"], b["lbl"])
            loss = loss + cfg.lplr_weight * parts["lplr"]
        k = 1
        if "syn" in b:
            parts["ce_syn"] = cross_entropy(outs[1]["logits"], b["lbl"])
            parts["sim"] = feature_similarity(outs[0]["features"], outs[1]["features"])
            loss = loss + parts["ce_syn"] - sim_w * parts["sim"]
            k = 2
        if teacher is not None:
            pixel_w = torch.where(mixed[2] > 0, pl_w, torch.ones_like(mixed[2]))   # pasted source pixels: 1
            parts["ce_mix"] = cross_entropy(outs[k]["logits"], mixed[1], weight=pixel_w)
            parts["pl_w"] = pl_w
            loss = loss + cfg.pl_weight * parts["ce_mix"]
            if "palette_latent" in outs[k] and cfg.lplr_target_weight:
                parts["lplr_tgt"] = trainee.model.lplr_loss(outs[k]["palette_latent"], mixed[1]) * pl_w
                loss = loss + cfg.lplr_target_weight * parts["lplr_tgt"]
        elif target is not None:
            if "pl" in b:
                parts["ce_pl"] = cross_entropy(outs[k]["logits"], b["pl"], weight=b["pl_w"])
                loss = loss + cfg.pl_weight * parts["ce_pl"]
                if "palette_latent" in outs[k] and cfg.lplr_target_weight:
                    parts["lplr_tgt"] = trainee.model.lplr_loss(outs[k]["palette_latent"], b["pl"])
                    loss = loss + cfg.lplr_target_weight * parts["lplr_tgt"]
            if mixed is not None:
                if (mixed[1] != 255).any():
                    parts["ce_mix"] = cross_entropy(outs[k + 1]["logits"], mixed[1])
                    loss = loss + parts["ce_mix"]
                domains = [torch.zeros_like(mixed[2]), torch.ones_like(mixed[2]), mixed[2]]
                feats = [outs[0]["features"], outs[k]["features"], outs[k + 1]["features"]]
                parts["adv"] = sum(trainee.disc(f, d) for f, d in zip(feats, domains)) / 3
                loss = loss + cfg.adv_weight * parts["adv"]
    return loss, parts


def _diverged(cfg, loss, it, last: Path, saved_at: int) -> ZodiError:
    what = f"the loss became {loss.item()}" if loss is not None else "the weights became non-finite"
    where = (f"the last healthy checkpoint is {last} (iteration {saved_at})" if last.exists()
             else "no checkpoint was written yet")
    return ZodiError(f"{what} at iteration {it}; {where}",
                     f"to go on from it with other settings, start a new run from its weights: add '--init-from {last} "
                     f"--out NEW_FOLDER' and lower --lr (now {cfg.lr:g}) or set --grad-clip" if last.exists()
                     else f"lower --lr (now {cfg.lr:g}) or set --grad-clip, then re-run")


def _finite_weights(trainee) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in trainee.parameters())


def _detached(obj):
    """A copy of a (nested) state dict on the CPU, unaffected by later steps."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detached(v) for v in obj)
    return obj


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop the records a stopped run wrote past its last checkpoint (all of them when none was kept),
    so the log of a resumed or restarted run has no duplicates."""
    if not path.is_file():
        return
    check_not_link(path)
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(line).get("iter", 0) <= iteration:
                keep.append(line if line.endswith("\n") else line + "\n")
        except ValueError:          # a line cut short by a kill
            pass
    write_text(path, "".join(keep))


def _feature_channels(model) -> int:
    """Channels of the model's last-stage features, probed in eval mode (BatchNorm statistics untouched)."""
    model.eval()
    with torch.no_grad():
        c = model(torch.zeros(1, 3, 64, 64))["features"].shape[1]
    model.train()
    return c


def _to(v, device):
    """Tensors, or dicts of them (cached feature pyramids), onto the device."""
    return {k: _to(x, device) for k, x in v.items()} if isinstance(v, dict) else v.to(device, non_blocking=True)


def _all_finite(loss, world) -> bool:
    ok = torch.isfinite(loss.detach()).float()
    if world > 1:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item())


def _evaluate(cfg, model, device, dtype, rank, world) -> dict:
    """mIoU on --val (and --target-val) at the training resolution; on rank 0 only."""
    if rank != 0:
        return {}
    from ..data.registry import open_dataset
    from ..metrics.confusion import ConfusionMatrix
    from .infer import Predictor

    was_training = model.training
    model.eval()
    pred = Predictor(model, device, size=cfg.resize, amp=dtype)
    feats = None
    if cfg.backbone and cfg.backbone.startswith("features:"):
        from ..store import Artifact
        from .infer import FeaturePredictor

        feats = FeaturePredictor(model, device, Artifact(cfg.val_features.removeprefix("h5:")))
    scores = {}
    for name, spec in (("val", cfg.val), ("target_val", cfg.target_val)):
        if not spec or (feats is not None and name != "val"):
            continue
        ds = open_dataset(spec, cfg.data_root)
        cm = ConfusionMatrix(19)
        for k in ds.keys()[: cfg.eval_limit or None]:
            lbl = ds.label(k)
            p = feats.predict([k], lbl.shape)[0] if feats is not None else pred.predict([ds.image(k)])[0]
            cm.update(p[0], lbl, key=k)
        s = cm.scores(ds.classes.names)
        scores[name] = {"dataset": spec, "miou": s["miou"], "pixel_acc": s["pixel_acc"], "iou": s["iou"]}
    model.train(was_training)
    return scores


def _bar(total, start):
    from ..progress import progress

    return progress(total, "train-seg", unit="it", initial=start)


def _versions():
    from ..store.artifact import library_versions

    return library_versions()
