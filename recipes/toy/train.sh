#!/usr/bin/env bash
# Train the toy diffusion stack on the CPU; once finished, export it to recipes/toy/model and check it
# (make toy-model). Resumable: re-run the same command to continue from RUN/state.pt; on a fresh machine
# it continues from the newest committed checkpoint, CKPT (recipes/toy/checkpoint). Usage:
#   recipes/toy/train.sh [RUN] [MINUTES] [CKPT]      (MINUTES caps one sitting)
set -euo pipefail
RUN=${1:-out/toy-diffusion}
MINUTES=${2:-120}
# v7: a new VAE whose latents carry the toy city's per-pixel grain (3,000 steps, about 2 h on 2 cores),
# then the UNet stage started from v6's networks, turned onto the new latents (--unet-from), to V7: the
# noise loss (EMA) fell from 0.209 to 0.047 by step 800 and sat at 0.042-0.044 from step 1,400 to 1,832.
# v8: from V7 to FINAL (1,500 steps, 35 min), each pixel's noise loss weighted by its class's rarity
# (--class-weight 0.5) and a quarter of each batch drawn from night images holding the classes v7 lost
# at night (--focus): night buses went from 13 to 76 % of their real-image IoU on the check's city.
# v6 is recipes/toy/model at commit $V6, made by recipes/toy/train.sh of that commit.
V6=558cc8e
export UNET_FROM="v6 (recipes/toy/model at commit $V6)"   # how the model card names --unet-from
V7=1832
FINAL=3332
CKPT=${3:-recipes/toy/checkpoint}
START=$SECONDS
unet_step() { sed -n 's/.*stage unet, step \([0-9]*\);.*/\1/p' <<<"$1"; }
mkdir -p "$RUN"
if [ ! -d "$RUN/v6" ]; then
  rm -rf "$RUN/v6.tmp" && mkdir "$RUN/v6.tmp"
  git archive "$V6" recipes/toy/model | tar -x -C "$RUN/v6.tmp"
  mv "$RUN/v6.tmp/recipes/toy/model" "$RUN/v6" && rm -rf "$RUN/v6.tmp"
fi
from=()
if [ ! -f "$RUN/state.pt" ] && [ -f "$CKPT/STEPS" ]; then from=(--init-from "$CKPT"); fi
log=$(zodi models train-toy --out "$RUN" "${from[@]}" --vae-steps 3000 --steps $V7 --unet-from "$RUN/v6" \
  --offset-noise 0.3 --rare-class 0.01 --minutes "$MINUTES" --log "$RUN/train.log")
echo "$log"
step=$(unet_step "$log")
left=$(( MINUTES - (SECONDS - START) / 60 ))
if [ "${step:-0}" -ge $V7 ] && [ "$left" -gt 0 ]; then
  # (--init-from again: a checkpoint past V7 leaves the first call nothing to do and RUN without a state)
  log=$(zodi models train-toy --out "$RUN" "${from[@]}" --steps $FINAL --offset-noise 0.3 --class-weight 0.5 \
    --focus "night:bus,traffic light,fence" --minutes "$left" --log "$RUN/train.log")
  echo "$log"
  step=$(unet_step "$log")
fi
# A sitting that stops midway replaces the checkpoint (commit it to carry it to another machine) and
# leaves the model alone; a finished run replaces the model and drops the checkpoint.
if [ "${step:-0}" -lt $FINAL ]; then
  bash recipes/toy/export.sh "$RUN" "$CKPT"
  echo "train.sh: stopped at UNet step ${step:-0} of $FINAL after $(( (SECONDS - START) / 60 )) min; $CKPT holds" \
    "this sitting's weights and recipes/toy/model is unchanged. Run it again to continue." >&2
  exit 0
fi
bash recipes/toy/export.sh "$RUN" recipes/toy/model "$CKPT/MODEL_CARD.md"   # the newest History, when a sitting left one
rm -rf "$CKPT"
python recipes/toy/check.py runs/toy-check --card || echo "toy-check: a gate is missed (see above and the model card)" >&2
