"""zodi train-seg: train a segmentation model (source-only, ZoDi, self-training, adversarial)."""
from __future__ import annotations

import click

from ..seg.models.catalog import SEGMENTERS
from ._options import (allow_partial_option, config_option, data_root_option, emit_json, json_option, overwrite_option,
                       sectioned)
from ._types import SIZE, float_list


SECTIONS = {
    "Inputs": ("source", "synth", "target", "target_pl", "val", "target_val", "data_root", "allow_partial", "config"),
    "Model": ("model", "pretrained", "output_stride", "init_from", "backbone", "sd_model", "val_features", "fusion_widths"),
    "Method": ("sim_weight", "pl_weight", "pl_threshold", "online_pl", "ema_decay", "dplg_t0", "dplg_total", "adv_weight",
               "lplr_weight", "lplr_target_weight", "rcs_temperature", "photometric"),
    "Schedule": ("iters", "batch_size", "crop", "resize", "optimizer", "lr", "momentum", "weight_decay", "poly_power",
                 "poly_unit", "lr_schedule", "lr_milestones", "lr_gamma", "warmup_iters", "warmup_start", "grad_clip", "seed"),
    "Performance": ("device", "amp", "deterministic", "channels_last", "num_workers", "cache_mb"),
    "Output": ("out", "ckpt_every", "eval_every", "eval_limit", "log_every", "select_on", "overwrite", "json_output"),
}


@click.command("train-seg", cls=sectioned(SECTIONS))
@click.option("--model", default="deeplabv3plus_r50", show_default=True,
              help=f"Segmenter: {', '.join(n for n in SEGMENTERS if n not in ('diff_fusion', 'diff_online', 'sd_unet'))} "
                   "('zodi models list' shows which pretrained weights each takes).")
@click.option("--source", required=True, help="Labelled source dataset, e.g. cs:train, gta, toy:clear:train.")
@click.option("--synth", multiple=True, help="Translated artifact(s) paired with the source by key (ZoDi); repeatable.")
@click.option("--target", default=None, help="Unlabelled target images (adversarial alignment, pseudo-labels).")
@click.option("--target-pl", default=None, help="Pseudo-label artifact of the target ('zodi pseudolabel').")
@click.option("--val", default=None, help="Source validation split for checkpoint selection, e.g. cs:val.")
@click.option("--target-val", default=None, help="Target validation split, reported (selection on it is an oracle).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: last.pt, best.pt, metrics.jsonl.")
@click.option("--iters", default=74300, show_default=True, type=click.IntRange(min=1), help="Training iterations.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=2), help="Per process.")
@click.option("--crop", default="384x768", show_default=True, type=SIZE, help="Random crop HxW ('none' to skip).")
@click.option("--resize", default="512x1024", show_default=True, type=SIZE, help="Resize HxW before cropping ('none' to keep).")
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adamw"]),
              help="sgd (ZoDi's) or adamw (DIFF's, MADM's).")
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Peak learning rate.")
@click.option("--momentum", default=0.9, show_default=True, type=float, help="SGD momentum.")
@click.option("--weight-decay", default=1e-4, show_default=True, type=float, help="Weight decay.")
@click.option("--poly-power", default=0.9, show_default=True, type=float, help="Exponent of the poly schedule.")
@click.option("--poly-unit", default="iter", show_default=True, type=click.Choice(["iter", "epoch"]),
              help="Step the poly schedule per iteration or per epoch (ZoDi).")
@click.option("--lr-schedule", default="poly", show_default=True, type=click.Choice(["poly", "multistep"]),
              help="multistep: x --lr-gamma at each of --lr-milestones (MADM's schedule).")
@click.option("--lr-milestones", default="0.8889,0.963", show_default=True,
              callback=float_list,
              help="With multistep: shares of --iters where the LR drops.")
@click.option("--lr-gamma", default=0.1, show_default=True, type=float,
              help="Factor at each --lr-milestones step of the multistep schedule.")
@click.option("--warmup-iters", default=0, show_default=True, type=click.IntRange(min=0), help="Linear warm-up iterations.")
@click.option("--warmup-start", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="LR factor the linear warm-up starts from (MADM: 0.067).")
@click.option("--sim-weight", default=None, type=float, help="ZoDi feature similarity weight [default: 0.1 with --synth].")
@click.option("--pl-weight", default=1.0, show_default=True, type=float, help="Weight of the pseudo-label loss.")
@click.option("--pl-threshold", default=0.968, show_default=True, type=float, help="Confidence counted by the DACS weight.")
@click.option("--online-pl", is_flag=True,
              help="Self-train on --target every step, as DACS and MADM do: an EMA teacher labels the target batch and "
                   "ClassMix pastes source classes onto it (in place of an offline --target-pl).")
@click.option("--ema-decay", default=0.999, show_default=True, type=float, help="The --online-pl teacher's EMA decay.")
@click.option("--dplg-t0", default=None, type=int,
              help="With --online-pl on --backbone sd-unet: MADM's DPLG, the teacher labels noised latents at "
                   "t = t0(1 - i/E) (depth 60; infrared, event 50).")
@click.option("--dplg-total", default=None, type=int, help="E of --dplg-t0 (depth 5000; infrared, event 8000).")
@click.option("--adv-weight", default=0.0, show_default=True, type=float, help="Adversarial alignment (needs --target).")
@click.option("--rcs-temperature", default=None, type=float, help="Rare-class sampling temperature (e.g. 0.01).")
@click.option("--photometric", is_flag=True, help="Strong photometric augmentation: brightness, gamma, blur, noise.")
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "none", "bf16", "fp16"]),
              help="Mixed precision; auto: bf16 on CUDA (fp16 where bf16 is not supported), none on the CPU.")
@click.option("--deterministic", is_flag=True,
              help="Deterministic GPU kernels only (slower); a resumed GPU run is bit-identical only with it.")
@click.option("--grad-clip", default=None, type=float, help="Clip the gradient norm to this (0: off).")
@click.option("--ckpt-every", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Write OUT/last.pt every N iterations.")
@click.option("--eval-every", default=0, show_default=True, type=click.IntRange(min=0), help="0: only at the end if --val.")
@click.option("--eval-limit", default=None, type=click.IntRange(min=1), help="Images per periodic evaluation.")
@click.option("--log-every", default=10, show_default=True, type=click.IntRange(min=1),
              help="Append a record to OUT/metrics.jsonl every N iterations.")
@click.option("--select-on", default="source", show_default=True, type=click.Choice(["source", "target"]),
              help="Best-checkpoint criterion; 'target' is oracle selection and is labelled so.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of weights, data order and augmentation.")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present), cpu, cuda or cuda:N (under torchrun: the local rank's GPU).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="NHWC memory layout for the network: faster convolutions (NCHW draws other dropout masks).")
@click.option("--num-workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="DataLoader worker processes (results do not depend on it).")
@click.option("--cache-mb", default=512, show_default=True, type=click.FloatRange(min=0),
              help="Decoded, resized training images kept in memory per data process (results unchanged).")
@click.option("--pretrained", default=None, help="Local torchvision ResNet weights (or a SegFormer folder).")
@click.option("--backbone", default=None, help="sd-unet: fine-tune a diffusion UNet (MADM, implies --model sd_unet); "
              "diff-online: DIFF as its authors train it, the frozen UNet in the loop on augmented crops with fresh "
              "noise (implies --model diff_online); features:h5:FILE: DIFF's fusion head on cached features "
              "(implies --model diff_fusion).")
@click.option("--sd-model", default=None,
              help="With --backbone sd-unet or diff-online: Stable Diffusion preset, folder or Hub id (MADM: sd14; DIFF: sd21-base).")
@click.option("--lplr-weight", default=1.0, show_default=True, type=float,
              help="Label-palette latent regression weight on the source (sd-unet; MADM: 1, event 20).")
@click.option("--lplr-target-weight", default=0.0, show_default=True, type=float,
              help="... on pseudo-labelled target images (with --target-pl or --online-pl; MADM: 1 for depth and infrared, 0 for event).")
@click.option("--val-features", default=None, help="Cached features of --val, with --backbone features:...")
@click.option("--fusion-widths", default=None, help="Bottleneck widths, coarse to fine [default: 2048,1024,512].")
@click.option("--init-from", default=None, type=click.Path(dir_okay=False), help="Start from a train-seg checkpoint's weights.")
@click.option("--output-stride", default=None, type=click.Choice(["8", "16", "32"]), help="ResNet models [default: 32].")
@data_root_option
@allow_partial_option
@overwrite_option
@json_option
@config_option
def command(json_output, config, **opts):
    """Train a segmenter; re-running the same command resumes from OUT/last.pt exactly. Runs on one
    device, or under torchrun with DDP (one process per GPU, or gloo on CPU)."""
    from ..seg.train import TrainConfig, train

    ctx = click.get_current_context()
    opts["synth"] = list(opts["synth"])
    if opts["fusion_widths"]:
        opts["fusion_widths"] = tuple(int(v) for v in opts["fusion_widths"].split(","))
    opts["output_stride"] = int(opts["output_stride"]) if opts["output_stride"] else None
    if opts["eval_every"] == 0 and (opts["val"] or opts["target_val"]):
        opts["eval_every"] = opts["iters"]
    settings = {k: v for k, v in ctx.params.items() if k != "config"}
    summary = train(TrainConfig(**opts), settings=settings, log=lambda m: click.echo(m, err=True))
    if int(__import__("os").environ.get("RANK", "0")) != 0:
        return
    if json_output:
        emit_json(summary)
    else:
        best = summary["best"]
        sel = f"best {best['score']:.2f} mIoU at {best['iteration']} ({best['selection']})" if best["iteration"] else "no validation"
        click.echo(f"{summary['out']}: iteration {summary['iteration']} ({summary['done']} this run), {sel}")
