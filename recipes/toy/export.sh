#!/usr/bin/env bash
# Copy a trained toy diffusion stack (zodi models train-toy --out RUN) into recipes/toy/model with
# its model card, for the demo. Usage: recipes/toy/export.sh RUN [TRAIN_MINUTES]
set -euo pipefail
RUN=$1; MINUTES=${2:-?}
DST=recipes/toy/model
rm -rf "$DST" && mkdir -p "$DST"
cp -r "$RUN/sd" "$RUN/controlnet" "$DST/"
python - "$RUN" "$DST" "$MINUTES" <<'PY'
import sys, torch
run, dst, minutes = sys.argv[1:]
s = torch.load(f"{run}/state.pt", weights_only=False)
unet = sum(v.numel() for v in s["unet"].values()); cn = sum(v.numel() for v in s["cn"].values())
vae = sum(v.numel() for v in s["vae"].values())
open(f"{dst}/STEPS", "w").write(f"{s['step']}\n")
open(f"{dst}/MODEL_CARD.md", "w").write(f"""# Toy diffusion stack (zodi models train-toy)

Trained on the CPU (2 cores) of a zodi development machine, about {minutes} minutes in all.
- Data: a toy city of its own (seed 1000, 200 train scenes per style: clear, fog, night, rain, snow),
  at 128x64, never the demo's scenes. Captions: "driving on a clear day / in fog / at night / under
  rain / in snow, best quality"; 10 % dropped to "" for classifier-free guidance.
- VAE: AutoencoderKL, factor 4, channels (32, 64, 128), {vae / 1e6:.2f} M parameters; 600 steps, batch 32,
  32x32 crops, L1 + 1e-6 KL; about 22 dB PSNR on training crops (thin poles and lane dashes blur).
- UNet (32, 64, 64), {unet / 1e6:.2f} M parameters, + ControlNet (from the UNet), {cn / 1e6:.2f} M parameters,
  trained jointly on epsilon prediction for {s['step']} steps at batch 32, AdamW 5e-4, SD 1.5's schedule;
  noise loss (EMA) {s.get('loss', float('nan')):.4f} at the end. Text: the frozen random 2-layer CLIP of
  `zodi models make-tiny` (captions still map to distinct embeddings).
- Use: `--model recipes/toy/model/sd --controlnet recipes/toy/model/controlnet --short-side 64`.
- Continue training: `zodi models train-toy --out RUN` resumes from RUN/state.pt (not committed: it
  holds optimiser states); from scratch the same command reproduces this run's first steps.
- Weak by construction: a small model trained for minutes. Translations carry the style's colours and
  much of the layout; small objects suffer. It exists so the demo measures something real.
""")
PY
du -sh "$DST"
