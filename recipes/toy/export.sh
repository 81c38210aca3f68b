#!/usr/bin/env bash
# Copy a trained toy diffusion stack (zodi models train-toy --out RUN) into DST (recipes/toy/model) as
# fp16 safetensors (the loaders cast to the --dtype asked for), with STEPS, TRAINING.json
# (the loss recipe's history, read back by --init-from) and its model card, whose History comes from CARD
# (when it exists; else DST's card, else recipes/toy/model's). UNET_FROM, when set, names the --unet-from weights in it.
# Usage: recipes/toy/export.sh RUN [DST] [CARD]  (recipes/toy/check.py --card adds the quality figures)
set -euo pipefail
RUN=$1
DST=${2:-recipes/toy/model}
CARD=${3:-}
rm -rf "$DST.tmp" && mkdir -p "$DST.tmp"
cp -r "$RUN/sd" "$RUN/controlnet" "$DST.tmp/"
python - "$RUN" "$DST.tmp" "$CARD" <<'PY'
import json, os, re, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from zodicli.diffusion.toy_train import HISTORY
run, dst = Path(sys.argv[1]), Path(sys.argv[2])
for f in dst.rglob("*.safetensors"):
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(f).items()}, f, metadata={"format": "pt"})
s = torch.load(run / "state.pt", weights_only=True)
n = {k: sum(v.numel() for v in s[k].values()) / 1e6 for k in ("vae", "unet", "cn")}
log = (run / "train.log").read_text().splitlines() if (run / "train.log").exists() else []
when = lambda line: time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
stamps = [when(l) for l in log if re.match(r"\S+ \S+ ", l)]
card = next((c for c in (*[Path(a) for a in sys.argv[3:] if a], dst.with_suffix("") / "MODEL_CARD.md", Path("recipes/toy/model/MODEL_CARD.md")) if c.is_file()), None)
old_card = card.read_text() if card else ""
vae_last = next((l.partition(" vae ")[2] for l in reversed(log) if " vae step " in l), "")
vae_last = vae_last or next(iter(re.findall(r"Last logged: (.*)", old_card)), "?")   # a run --init-from keeps its VAE
unet_t = [(when(l), int(l.split(" unet step ")[1].split("/")[0])) for l in log if " unet step " in l]
per_step = sorted((t1 - t0) / (s1 - s0) for (t0, s0), (t1, s1) in zip(unet_t, unet_t[1:]) if s1 > s0)
per_step = f"{per_step[len(per_step) // 2]:.1f} s" if per_step else next(iter(re.findall(r"\(median (\S+ s) per step\)", old_card)), "?")
loss = f"{s['loss']:.4f}" if "loss" in s else next(iter(re.findall(r"end: ([0-9.]+)", old_card)), "?")   # a decoder-only run has none
for key in ("offset_noise", "rare_class", "focus", "class_weight"):   # entries from the last step on never took effect
    if key in s:
        s[key] = [e for e in s[key] if e[0] < s["step"]]
history = old_card.partition("## History")[2].partition("## Quality")[0]
history = "## History" + history if history else ""
(dst / "STEPS").write_text(f"{s['step']}\n")
(dst / "TRAINING.json").write_text(json.dumps({k: s[k] for k in HISTORY if k in s}) + "\n")   # for --init-from
dec_last = next((l.partition(" decoder ")[2] for l in reversed(log) if " decoder step " in l), "")
dec_last = dec_last or next(iter(re.findall(r"Then the decoder alone.*?Last logged: (.*)", old_card)), "?")
means = s.get("decoder_on_mean_from")
means = (f", decoding the encoder's posterior means (samples before step {means})" if means else
         ", decoding the encoder's posterior means") if means is not None else ""
decoder = (f"\n  Then the decoder alone (encoder frozen, so the latents stay) on whole 64x128 images, {s['decoder_step']} steps at"
           f" batch 16{means}, L1, AdamW cosine 3e-4 -> 3e-5. Last logged: {dec_last}") if s.get("decoder_step") else ""
offsets = ", ".join(f"{std} from step {step}" for step, std in s.get("offset_noise", []) if std)
rare = ", ".join(f"at T = {t} from step {step}" for step, t in s.get("rare_class", []))
rare = f"; half of each batch drawn by rare-class sampling {rare}" if rare else ""
for step, spec in s.get("focus", []):   # a quarter of each batch: images of one style holding given classes
    style, _, names = spec.partition(":")
    rare += f"; from step {step}, a quarter of each batch drawn from {style} images holding {names.replace(',', ' or ')}" if spec else f"; from step {step}, no focus"
for step, power in s.get("class_weight", []):   # each latent pixel's noise loss weighted by its class's rarity
    rare += f"; from step {step}, each pixel's noise loss weighted by its class's rarity to the power {power}" if power else f"; from step {step}, unweighted"
start = (f"started from the UNet, ControlNet and text model of {os.environ.get('UNET_FROM') or s['unet_from']}, their input and output convolutions"
         " turned onto this VAE's latents by an orthogonal map, then ") if s.get("unet_from") else ""
(dst / "MODEL_CARD.md").write_text(f"""# Toy diffusion stack (zodi models train-toy)

A Stable-Diffusion-structured stack (AutoencoderKL, CLIP text model + tokenizer, UNet, ControlNet for
Cityscapes-palette label layouts) that loads like SD 1.5 + ControlNet-seg. Trained from scratch on the
CPU (2 cores, no GPU) of zodi development machines, over one or more sittings (see History); the last
run's log spans {(stamps[-1] - stamps[0]) / 60 if stamps else float('nan'):.0f} minutes of wall time.

- Data: a toy city of its own (seed 1000; 300 train scenes per style: clear, fog, night, rain, snow), at
  128x64, never the demo's or the check's scenes. Captions: "driving on a clear day / in fog / at night /
  under rain / in snow, best quality"; 10 % dropped to "" for classifier-free guidance.
- VAE: factor 2, channels (64, 128), 8 latent channels (log-variance started at -6), {n['vae']:.2f} M parameters; L1 + MSE of
  the decoded posterior sample, + 1e-6 mean(mu^2), no KL on the variance, on 32x64 crops on the latent grid, batch 16,
  AdamW cosine 1e-3 -> 1e-4. Last logged: {vae_last}{decoder}
- UNet (32, 64, 128; cross-attention at the two coarser levels), {n['unet']:.2f} M parameters, + ControlNet
  (from the UNet, zero convolutions started at N(0, 0.01) since nothing is pretrained), {n['cn']:.2f} M
  parameters; {start}trained jointly on epsilon prediction for {s['step']} steps at batch 16 (median {per_step} per step), AdamW 5e-4 with
  200 warm-up steps, SD 1.5's noise schedule{', offset noise ' + offsets if offsets else ''}{rare}, EMA 0.999 (exported). Noise loss (EMA of the loss) at the
  end: {loss}{' (min-SNR-5 weighted from step ' + str(s['min_snr_from']) + ')' if 'min_snr_from' in s else ''}. Text: the 2-layer CLIP of `zodi models make-tiny`, trained with the UNet
  {'from step ' + str(s['text_from']) if 'text_from' in s else ''} ({sum(v.numel() for v in s['text'].values()) if 'text' in s else 0} parameters; frozen before).
- Weights: fp16 safetensors (the loaders cast to the --dtype asked for).
- Use: `zodi translate --config recipes/toy/fog.yaml ...` (or night.yaml): 64x128; strength, guidance
  and control scale per domain, chosen on a tuning city (see the yamls and History).
- Retrain: `recipes/toy/train.sh` (`make toy-model`); it resumes from RUN/state.pt. To continue from
  these weights on a fresh machine: `zodi models train-toy --out RUN --init-from recipes/toy/model`.

{history}## Quality
Run `make toy-check` (recipes/toy/check.py --card) to measure and fill this in.
""")
PY
rm -rf "$DST" && mv "$DST.tmp" "$DST"
du -sh "$DST"
