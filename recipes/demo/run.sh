#!/usr/bin/env bash
# make demo: ZoDi's chain end to end on the toy city, on the CPU. Usage:
#   recipes/demo/run.sh OUT "SEEDS"        (make demo [SEEDS="1 2 3"]; env ITERS, PL_ITERS, N_TRAIN, N_VAL, DOMAINS)
# toy city -> ZoDi translations of the clear train/val images to fog and night (the toy diffusion
# model, recipes/toy/model) -> per seed, six training recipes of the same small DeepLabv3+ ->
# evaluation on real toy fog/night val, and on the translated val images (ZoDi's target-free
# estimate) -> recipes/demo/report.py: OUT/metrics.json, OUT/table.md, OUT/contact_sheet.png.
# The translations are made once and shared by all seeds (the seeds vary the segmenters).
# Every zodi command resumes by itself; `step` also skips a command that already finished with the
# same arguments, so a second run only prints the table.
set -euo pipefail
OUT=${1:-runs/demo}
SEEDS=${2:-1}
ITERS=${ITERS:-250} PL_ITERS=${PL_ITERS:-$(( (ITERS + 1) / 2 ))} N_TRAIN=${N_TRAIN:-100} N_VAL=${N_VAL:-30} DOMAINS=${DOMAINS:-fog night}
mkdir -p "$OUT"
export ZODI_TOY_ROOT="$OUT/toy" HF_HUB_OFFLINE=1
[ -d recipes/toy/model/sd ] || { echo "demo: recipes/toy/model is missing (make toy-model)" >&2; exit 1; }
# Independent commands run two at a time (`pair`), each on half the cores: these small models gain
# little from a second thread (train-seg: 0.265 vs 0.268 s/iteration), two processes nearly twice.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) > 3 ? $(nproc) / 2 : 1 ))}

# The translations, and all trained on them, depend on the toy model's weights and recipes/toy/*.yaml's
# values (not their comments), which `step` cannot see: when those change, redo them (the toy city is kept).
stamp=$( { python -c 'import sys; from zodicli.settings import yaml_fingerprint
print(*map(yaml_fingerprint, sys.argv[1:]))' recipes/toy/*.yaml; cat $(find recipes/toy/model \( -name '*.safetensors' -o -name '*.json' \) -not -name TRAINING.json | sort); } | md5sum)
if [ -f "$OUT/model.stamp" ] && [ "$(cat "$OUT/model.stamp")" != "$stamp" ]; then
  echo "demo: the toy model or recipes/toy/*.yaml changed since $OUT was made: redoing translations and segmenters" >&2
  rm -rf "$OUT/synth" "$OUT"/seed*
fi
echo "$stamp" > "$OUT/model.stamp"

# step OUTPUT zodi ARGS...: run once; stdout goes to OUTPUT (written whole), progress to OUTPUT.log.
NAME=demo
source "$(dirname "$0")/../lib.sh"

translations() {   # DOMAIN: the clear train and val images in that domain's style
  for split in train val; do
    step "$OUT/synth/$1-$split.txt" zodi translate --config "recipes/toy/$1.yaml" --src "toy:clear:$split" \
      --out "$OUT/synth/$1-$split.h5" --preview 4
  done
}

train() { local run=$1; shift; step "$R/$run/train.txt" zodi train-seg "${TRAIN[@]}" --iters "${iters:-$ITERS}" "$@" --out "$R/$run"; }
shared() {         # RUN: the runs that see no target domain
  case $1 in
    source-only) train source-only ;;
    photometric) train photometric --photometric ;;
  esac
}
adapted() {        # DOMAIN: ZoDi, ZoDi + photometric, ZoDi + pseudo-labels and the oracle for it
  local d=$1
  train "zodi-$d" --synth "$OUT/synth/$d-train.h5"
  train "zodi-photometric-$d" --synth "$OUT/synth/$d-train.h5" --photometric
  step "$R/zodi-$d/pl-$d.txt" zodi pseudolabel --checkpoint "$R/zodi-$d/last.pt" --src "toy:$d:train" --size 64x128 \
    --batch-size 16 --out "$R/zodi-$d/pl-$d.h5"
  # Self-training fine-tunes the ZoDi model: half the iterations.
  iters=$PL_ITERS train "zodi-pl-$d" --synth "$OUT/synth/$d-train.h5" --target "toy:$d:train" \
    --target-pl "$R/zodi-$d/pl-$d.h5" --init-from "$R/zodi-$d/last.pt"
  local TRAIN=("${TRAIN[@]/toy:clear:/toy:$d:}")      # target labels in place of the clear ones
  train "oracle-$d"
}
evaluations() {    # DOMAIN: every run that concerns it on real val, and on the translated clear val (the estimate)
  local d=$1 run EVAL
  for run in "$R"/source-only "$R"/photometric "$R"/*-"$d"; do
    EVAL=(--checkpoint "$run/last.pt" --size 64x128 --batch-size 16 --json)
    step "$run/metrics-$d.json" zodi evaluate "${EVAL[@]}" --dataset "toy:$d:val" --out "$run/preds-$d.h5"
    step "$run/metrics-$d-estimate.json" zodi evaluate "${EVAL[@]}" --dataset "h5:$OUT/synth/$d-val.h5" \
      --out "$run/preds-$d-estimate.h5"
  done
}

step "$OUT/toy.txt" zodi datasets make-toy --out "$OUT/toy" --n-train "$N_TRAIN" --n-val "$N_VAL" --seed 0 \
  --conditions "clear,${DOMAINS// /,}"
pair translations $DOMAINS
for seed in $SEEDS; do
  R="$OUT/seed$seed"
  TRAIN=(--model deeplabv3plus_tiny --source toy:clear:train --batch-size 16
         --resize 64x128 --crop none --optimizer adamw --lr 0.01 --ckpt-every 250 --num-workers 1 --seed "$seed")
  pair shared source-only photometric
  pair adapted $DOMAINS
  pair evaluations $DOMAINS
done
python recipes/demo/report.py "$OUT" "$SEEDS" "$DOMAINS"
