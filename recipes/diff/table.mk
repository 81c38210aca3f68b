# DIFF (REFERENCE §6): domain generalisation GTA5 -> Cityscapes from frozen Stable Diffusion 2.1
# features (cached once per image), a fusion head trained on GTA5 only, evaluated on Cityscapes val
# (make table-diff; make -n table-diff prints every command).
#   make -f recipes/diff/table.mk          (needs gta5, cityscapes and the sd21-base preset)
#
# Protocol (docs/fidelity.md): poly LR per iteration after warm-up; features at the size they were
# cached at (short side 512); the last checkpoint is scored. DIFF re-extracts features online on
# augmented crops; this recipe trains on cached features: a documented departure.
#   make -f recipes/diff/table.mk toy      (the recipe on the toy city with the toy model; a smoke test)
ZODI     ?= zodi
OUT      ?= runs/diff-table
SOURCE   ?= gta5
TARGETS  ?= cs:val
SEEDS    ?= 1 2 3
SD       ?= sd21-base
FEATURES ?= --blocks diff --short-side 512 --batch-size 2
TRAIN    ?= --iters 40000 --batch-size 2 --optimizer adamw --lr 6e-5 --weight-decay 0.01 --warmup-iters 1500
EVAL     ?=

tag = $(subst :,_,$(1))
RUNS := $(foreach s,$(SEEDS),$(OUT)/seed$(s))

.PHONY: all table toy
.SECONDARY:          # keep intermediate results (translations, stage A, pseudo-labels): they are the resume points
all: table

$(OUT)/features-source.h5:
	$(ZODI) extract-features --src $(SOURCE) --model $(SD) $(FEATURES) --out $@

$(OUT)/features-%.h5:
	$(ZODI) extract-features --src $(subst _,:,$*) --model $(SD) $(FEATURES) --out $@

$(OUT)/seed%/last.pt: $(OUT)/features-source.h5
	$(ZODI) train-seg --backbone features:h5:$< --source $(SOURCE) --seed $* $(TRAIN) --out $(OUT)/seed$*

# One result per seed and target: seedS/TARGET.json
define target_rule
$(OUT)/seed%/$(call tag,$(1)).json: $(OUT)/seed%/last.pt $(OUT)/features-$(call tag,$(1)).h5
	$(ZODI) evaluate --checkpoint $$< --dataset $(1) --features h5:$(OUT)/features-$(call tag,$(1)).h5 $(EVAL) \
	  --out $(OUT)/seed$$*/preds-$(call tag,$(1)).h5 --json > $$@.tmp
	mv $$@.tmp $$@
endef
$(foreach t,$(TARGETS),$(eval $(call target_rule,$(t))))

table: $(foreach r,$(RUNS),$(foreach t,$(TARGETS),$(r)/$(call tag,$(t)).json))
	python recipes/collate.py diff $(OUT) "$(call tag,$(TARGETS))" "$(SEEDS)"

# The recipe on the toy city: clear toy scenes stand in for GTA5, fog and night for unseen domains.
TOY_SD ?= recipes/toy/model/sd
toy:
	$(ZODI) datasets make-toy --out $(OUT)-toy/data/toy --n-train 8 --n-val 4
	ZODI_TOY_ROOT=$(OUT)-toy/data/toy $(MAKE) -f recipes/diff/table.mk OUT=$(OUT)-toy SOURCE=toy:clear:train \
	  TARGETS="toy:fog:val toy:night:val" SEEDS=1 SD=$(TOY_SD) \
	  FEATURES="--blocks madm --timesteps 52,3 --short-side 32 --batch-size 4" \
	  TRAIN="--iters 4 --batch-size 2 --fusion-widths 64,32 --num-workers 0" table
