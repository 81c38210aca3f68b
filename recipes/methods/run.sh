#!/usr/bin/env bash
# make methods: each method beside the baseline that isolates its contribution, on the toy city with the
# committed toy diffusion model. Usage: recipes/methods/run.sh OUT "SEEDS"
#
# Personalisation on thermal, a sensor the toy diffusion model never saw (neither images nor the word):
#   source-only   clear labels only
#   zodi-prompt   ZoDi translations to "driving in thermal", zero-shot (recipes/toy/thermal.yaml)
#   zodi-lora-K   the same translations by the model adapted to K unlabelled thermal train images (zodi finetune),
#                 K = 1 and 10, the first K keys, which are not evaluation images
#   oracle        thermal labels
# Every row is scored on real toy thermal val. Steps are cached as in the demo (recipes/lib.sh).
set -euo pipefail
OUT=${1:-runs/methods}
SEEDS=${2:-1}
ITERS=${ITERS:-250} N_TRAIN=${N_TRAIN:-100} N_VAL=${N_VAL:-30} KS=${KS:-1 10}
FT_STEPS=${FT_STEPS:-400} FT_LR=${FT_LR:-1e-3} FT_TARGETS=${FT_TARGETS:-attention}
CITY_SEED=${CITY_SEED:-0}          # 1: the tuning city
mkdir -p "$OUT"
export ZODI_TOY_ROOT="$OUT/toy" HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) > 3 ? $(nproc) / 2 : 1 ))}
NAME=methods
source "$(dirname "$0")/../lib.sh"
ROWS=(zodi-prompt $(for k in $KS; do echo "zodi-lora-$k"; done))

adapter() {        # K: zodi finetune on the first K thermal train images, bound to the translation's prompt
  step "$OUT/lora-$1/finetune.txt" zodi finetune --target toy:thermal:train --num-images "$1" \
    --prompt "driving in thermal" --model recipes/toy/model/sd --size 64x128 --steps "$FT_STEPS" --lr "$FT_LR" --targets "$FT_TARGETS" \
    --out "$OUT/lora-$1"
}
translations() {   # ROW: the clear train and val images, translated to thermal
  local lora=()
  case $1 in zodi-lora-*) lora=(--lora "$OUT/lora-${1#zodi-lora-}") ;; esac
  for split in train val; do
    step "$OUT/synth/$1-$split.txt" zodi translate --config recipes/toy/thermal.yaml --src "toy:clear:$split" \
      ${lora[@]+"${lora[@]}"} --out "$OUT/synth/$1-$split.h5" --preview 4
  done
}
train() { local run=$1; shift; step "$R/$run/train.txt" zodi train-seg "${TRAIN[@]}" --iters "$ITERS" "$@" --out "$R/$run"; }
row() {            # RUN: train it, then score it on thermal val
  case $1 in
    source-only) train source-only ;;
    oracle) local TRAIN=("${TRAIN[@]/toy:clear:/toy:thermal:}"); train oracle ;;
    *) train "$1" --synth "$OUT/synth/$1-train.h5" ;;
  esac
  step "$R/$1/metrics-thermal.json" zodi evaluate --checkpoint "$R/$1/last.pt" --size 64x128 --batch-size 16 --json \
    --dataset toy:thermal:val --out "$R/$1/preds-thermal.h5"
}

step "$OUT/toy.txt" zodi datasets make-toy --out "$OUT/toy" --n-train "$N_TRAIN" --n-val "$N_VAL" --seed "$CITY_SEED" \
  --conditions clear,thermal
pair adapter $KS
pair translations "${ROWS[@]}"
for seed in $SEEDS; do
  R="$OUT/seed$seed"
  TRAIN=(--model deeplabv3plus_tiny --source toy:clear:train --batch-size 16
         --resize 64x128 --crop none --optimizer adamw --lr 0.01 --ckpt-every 250 --num-workers 1 --seed "$seed")
  pair row source-only oracle
  pair row "${ROWS[@]}"
done
step "$OUT/style.json" python recipes/methods/style.py "$OUT" "${ROWS[@]}"
python recipes/methods/report.py "$OUT" "$SEEDS" source-only "${ROWS[@]}" oracle
