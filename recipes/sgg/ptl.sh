#!/usr/bin/env bash
# Progressive translation learning (PTL, Peng et al. ICCV 2023) with zodi's commands:
# translate the source with semantic gradient guidance at growing noise depths K_1 < ... < K_N,
# fine-tuning the segmenter on each stage's output before the next stage guides with it.
#
#   recipes/sgg/ptl.sh SOURCE TARGET_PROMPT OUT [MODEL] [CONTROLNET]
#   e.g. recipes/sgg/ptl.sh gta "driving at night" runs/ptl-night
set -euo pipefail
SRC=$1; PROMPT=$2; OUT=$3; MODEL=${4:-sd15}; CN=${5:-controlnet-seg}
STRENGTHS=${STRENGTHS:-"0.3 0.5 0.7 0.9"}     # K_i = strength_i x T
ITERS=${ITERS:-5000}
mkdir -p "$OUT"

# stage 0: a segmenter trained on the source alone
zodi train-seg --source "$SRC" --out "$OUT/seg-0" --iters "$ITERS"
seg="$OUT/seg-0/last.pt"
i=0
for s in $STRENGTHS; do
  i=$((i + 1))
  zodi translate --src "$SRC" --prompt "$PROMPT" --strength "$s" --model "$MODEL" --controlnet "$CN" \
    --label-guidance sgg --segmenter "$seg" --out "$OUT/stage-$i.h5"
  # fine-tune on this stage's images (labels are the source's), starting from the previous segmenter
  zodi train-seg --source "h5:$OUT/stage-$i.h5" --out "$OUT/seg-$i" --iters "$ITERS" \
    --init-from "$seg"
  seg="$OUT/seg-$i/last.pt"
done
echo "final segmenter: $seg"
