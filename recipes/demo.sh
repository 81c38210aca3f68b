#!/usr/bin/env bash
# make demo: ZoDi's chain end to end on the toy city, on the CPU, in a few minutes:
#   toy city -> pixel baseline -> source-only DeepLabv3+ -> ZoDi translation (clear -> fog)
#   -> ZoDi adaptation (source + translated, feature similarity) -> evaluate on every condition.
# The diffusion stack is the toy model trained on a toy corpus of its own (recipes/toy/model, see
# its MODEL_CARD.md) when it is there, else the tiny RANDOM one, whose translations are noise. Every
# step resumes: a second `make demo` only prints the table.
set -euo pipefail
OUT=${1:-out/demo}
ITERS=${ITERS:-150}
mkdir -p "$OUT"
export ZODI_TOY_ROOT="$OUT/toy" ZODI_MODELS="$OUT/models" HF_HUB_OFFLINE=1
CONDS="clear fog night rain snow"

zodi datasets make-toy --out "$OUT/toy" --n-train 100 --n-val 30 --seed 0
if [ -d recipes/toy/model/sd ]; then
  SD=recipes/toy/model/sd CN=recipes/toy/model/controlnet SHORT=64 STRENGTH=0.8 GUIDE=5
  DIFFUSION="toy diffusion model ($(cat recipes/toy/model/STEPS) steps)"
else
  [ -d "$OUT/models/tiny/sd" ] || zodi models make-tiny --out "$OUT/models/tiny" >/dev/null
  SD=tiny CN=tiny-controlnet SHORT=32 STRENGTH=0.6 GUIDE=9 DIFFUSION="tiny RANDOM diffusion model"
fi

echo "== pixel-colour baseline" >&2
zodi baseline fit --train toy:clear:train --out "$OUT/baseline.npz" >/dev/null
for c in $CONDS; do
  zodi baseline predict --model "$OUT/baseline.npz" --src "toy:$c:val" --out "$OUT/baseline/preds-$c.h5" >/dev/null
  zodi evaluate --pred "$OUT/baseline/preds-$c.h5" --dataset "toy:$c:val" --json > "$OUT/baseline/metrics-$c.json"
done

TRAIN=(--model deeplabv3plus_r18 --source toy:clear:train --val toy:clear:val --iters "$ITERS" --batch-size 8
       --crop 128x128 --resize none --lr 0.01 --ckpt-every 50 --num-workers 2)
echo "== source-only DeepLabv3+ R18 ($ITERS iterations)" >&2
zodi train-seg "${TRAIN[@]}" --out "$OUT/source-only" >/dev/null

echo "== ZoDi translation clear -> fog ($DIFFUSION)" >&2
zodi translate --src toy:clear:train --domain fog --model "$SD" --controlnet "$CN" --short-side "$SHORT" \
  --strength "$STRENGTH" --guidance-scale "$GUIDE" --steps 20 --batch-size 4 --out "$OUT/fog-synth.h5" --preview 4 >/dev/null
echo "== ZoDi adaptation: source + translated, feature similarity 0.1 ($ITERS iterations)" >&2
zodi train-seg "${TRAIN[@]}" --synth "$OUT/fog-synth.h5" --out "$OUT/zodi-fog" >/dev/null

for run in source-only zodi-fog; do
  for c in $CONDS; do
    zodi evaluate --checkpoint "$OUT/$run/last.pt" --dataset "toy:$c:val" --out "$OUT/$run/preds-$c.h5" \
      --batch-size 4 --json > "$OUT/$run/metrics-$c.json"
  done
done

python - "$OUT" "$DIFFUSION" $CONDS <<'PY'
import json, sys
out, diffusion, conds = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [("pixel-colour baseline (a floor)", "baseline"), ("DeepLabv3+ R18, source only", "source-only"),
        (f"ZoDi (fog), {diffusion}", "zodi-fog")]
print("\nzodi demo: toy city, trained on clear scenes only; mIoU (%) on 30 val images per condition\n")
print(f"{'method':<52}" + "".join(f"{c:>8}" for c in conds))
for name, folder in rows:
    vals = [json.load(open(f"{out}/{folder}/metrics-{c}.json"))["miou"] for c in conds]
    print(f"{name:<52}" + "".join(f"{v:8.1f}" for v in vals))
if "RANDOM" in diffusion:
    print("\nThe ZoDi row uses an untrained diffusion model (its translations are noise; see "
          f"{out}/fog-synth.preview.png): it shows the chain running, not the method's gain.")
else:
    print(f"\nTranslations: {out}/fog-synth.preview.png (source | labels | translation). One seed, short runs: "
          "compare over several seeds before reading much into a few points.")
print(f"Reports: {out}/<method>/preds-<condition>.eval/ (metrics.json, confusion matrix CSV/NPY/PNG).")
PY
