#!/usr/bin/env bash
# Train the toy diffusion stack on the CPU and, once finished, export it to recipes/toy/model (make toy-model).
# Resumable: re-run the same command to continue from RUN/state.pt. Usage:
#   recipes/toy/train.sh [RUN] [MINUTES]      (MINUTES caps one sitting; the whole recipe took about 5.5 h on 2 cores)
set -euo pipefail
RUN=${1:-out/toy-diffusion}
MINUTES=${2:-120}
# The committed weights came in stages (see the model card and TRAINING.json); this is their recipe in
# two runs: to step 10,058 on uniformly drawn scenes, then with half of each batch by rare-class sampling.
# The decoder stage (1,750 steps, about 85 min) decodes posterior means throughout; the committed
# decoder's first 250 steps decoded samples. It leaves the latents, so the UNet, as they are.
START=$SECONDS
FINAL=12107
unet_step() { sed -n 's/.*stage unet, step \([0-9]*\);.*/\1/p' <<<"$1"; }
where() { sed -n 's/.*: \(stage [a-z]*, step [0-9]*\);.*/\1/p' <<<"$1"; }
log=$(zodi models train-toy --out "$RUN" --vae-steps 700 --decoder-steps 1750 --steps 10058 --offset-noise 0.3 \
  --minutes "$MINUTES" --log "$RUN/train.log")
echo "$log"
step=$(unet_step "$log")
left=$(( MINUTES - (SECONDS - START) / 60 ))
if [ "${step:-0}" -ge 10058 ] && [ "$left" -gt 0 ]; then
  log=$(zodi models train-toy --out "$RUN" --steps $FINAL --offset-noise 0.3 --rare-class 0.01 --minutes "$left" \
    --log "$RUN/train.log")
  echo "$log"
  step=$(unet_step "$log")
fi
# Only a finished run replaces the committed weights: a sitting that stops midway leaves them alone.
if [ "${step:-0}" -lt $FINAL ]; then
  echo "train.sh: this sitting stopped before UNet step $FINAL (at $(where "$log")); run it again to continue." \
    "recipes/toy/model is unchanged." >&2
  exit 0
fi
bash recipes/toy/export.sh "$RUN"
python recipes/toy/check.py runs/toy-check --card || echo "toy-check: a gate is missed (see above and the model card)" >&2
