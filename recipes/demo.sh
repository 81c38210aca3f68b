#!/usr/bin/env bash
# make demo: the toy city end to end. Until translate / train-seg land, the segmenter is the
# pixel-colour baseline (a floor, fitted on clear scenes), and the table shows how far each
# weather style pushes it down; that gap is what the diffusion methods have to close.
set -euo pipefail
OUT=${1:-out/demo}
mkdir -p "$OUT"
export ZODI_TOY_ROOT="$OUT/toy"

zodi datasets make-toy --out "$OUT/toy" --n-train 100 --n-val 30 --seed 0
zodi baseline fit --train toy:clear:train --out "$OUT/baseline.npz"
for cond in clear fog night rain snow; do
  zodi baseline predict --model "$OUT/baseline.npz" --src "toy:$cond:val" --out "$OUT/preds-$cond.h5" --batch-size 8 >/dev/null
  zodi evaluate --pred "$OUT/preds-$cond.h5" --dataset "toy:$cond:val" --json > "$OUT/metrics-$cond.json"
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [(c, json.load(open(f"{out}/metrics-{c}.json"))) for c in ("clear", "fog", "night", "rain", "snow")]
print("\nzodi demo: pixel-colour BASELINE (not a paper's method) fitted on toy clear train,")
print("evaluated on toy val of each condition (30 images each, 256x128)\n")
print(f"{'condition':<10} {'mIoU':>6} {'pixel acc':>10} {'mean acc':>9}")
for c, m in rows:
    print(f"{c:<10} {m['miou']:6.1f} {m['pixel_acc']:10.1f} {m['mean_acc']:9.1f}")
print(f"\nreports (metrics.json, confusion.csv/.npy/.png): {out}/preds-<condition>.eval/")
PY
