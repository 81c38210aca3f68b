#!/usr/bin/env bash
# Train the toy diffusion stack on the CPU and export it to recipes/toy/model (make toy-model).
# Resumable: re-run the same command to continue from RUN/state.pt. Usage:
#   recipes/toy/train.sh [RUN] [MINUTES]      (about 2 hours on 2 cores; MINUTES caps one sitting)
set -euo pipefail
RUN=${1:-out/toy-diffusion}
MINUTES=${2:-120}
# The committed weights came in stages (see the model card and TRAINING.json); this is their recipe in one run.
zodi models train-toy --out "$RUN" --vae-steps 700 --decoder-steps 250 --steps 20000 --offset-noise 0.3 \
  --minutes "$MINUTES" --log "$RUN/train.log"
bash recipes/toy/export.sh "$RUN"
python recipes/toy/check.py runs/toy-check --card || echo "toy-check: a gate is missed (see above and the model card)" >&2
