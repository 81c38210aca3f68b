# DIFF (REFERENCE §6): domain generalisation GTA5 -> Cityscapes from frozen Stable Diffusion 2.1
# features (cached once per image), a fusion head trained on GTA5 only, evaluated on Cityscapes val
# (make table-diff; make -n table-diff prints every command).
#   make -f recipes/diff/table.mk          (needs gta5, cityscapes and the sd21-base preset)
#
# Protocol (docs/fidelity.md): poly LR per iteration after warm-up; the last checkpoint is scored.
# MODE=online (the default) trains as DIFF does: the frozen UNet in the loop re-extracts features on
# every augmented crop with fresh noise, and evaluation extracts them per image; nothing is cached
# (SD 2.1 features at 512x1024 take 481 MiB per image: 11.5 TiB for GTA5). MODE=cached extracts
# once per image (extract-features) and trains the head on the cache: fast where the cache fits.
#   make -f recipes/diff/table.mk toy      (the recipe on the toy city with the toy model; a smoke test)
ZODI     ?= zodi
OUT      ?= runs/diff-table
SOURCE   ?= gta5
TARGETS  ?= cs:val
SEEDS    ?= 1 2 3
SD       ?= sd21-base
MODE     ?= online
AUG      ?= --resize 720x1280 --crop 512x512    # online mode: DAFormer's GTA5 pipeline, as DIFF's config
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

ifeq ($(MODE),online)
$(OUT)/seed%/last.pt:
	$(ZODI) train-seg --backbone diff-online --sd-model $(SD) --source $(SOURCE) --seed $* $(TRAIN) $(AUG) --out $(OUT)/seed$*
FEATURES_OF =
else
$(OUT)/seed%/last.pt: $(OUT)/features-source.h5
	$(ZODI) train-seg --backbone features:h5:$< --source $(SOURCE) --seed $* $(TRAIN) --out $(OUT)/seed$*
FEATURES_OF = $(OUT)/features-$(call tag,$(1)).h5
endif

# One result per seed and target: seedS/TARGET.json
define target_rule
$(OUT)/seed%/$(call tag,$(1)).json: $(OUT)/seed%/last.pt $(call FEATURES_OF,$(1))
	$(ZODI) evaluate --checkpoint $$< --dataset $(1) $(if $(call FEATURES_OF,$(1)),--features h5:$(call FEATURES_OF,$(1))) $(EVAL) \
	  --out $(OUT)/seed$$*/preds-$(call tag,$(1)).h5 --json > $$@.tmp
	mv $$@.tmp $$@
endef
$(foreach t,$(TARGETS),$(eval $(call target_rule,$(t))))

table: $(foreach r,$(RUNS),$(foreach t,$(TARGETS),$(r)/$(call tag,$(t)).json))
	python recipes/collate.py diff $(OUT) "$(call tag,$(TARGETS))" "$(SEEDS)"

# The recipe on the toy city: clear toy scenes stand in for GTA5, fog and night for unseen domains
# (MODE=cached: minutes on a CPU; the online path is tested in tests/test_features_pl.py).
TOY_SD ?= recipes/toy/model/sd
toy:
	$(ZODI) datasets make-toy --out $(OUT)-toy/data/toy --n-train 8 --n-val 4
	ZODI_TOY_ROOT=$(OUT)-toy/data/toy $(MAKE) -f recipes/diff/table.mk OUT=$(OUT)-toy SOURCE=toy:clear:train MODE=cached \
	  TARGETS="toy:fog:val toy:night:val" SEEDS=1 SD=$(TOY_SD) \
	  FEATURES="--blocks madm --timesteps 52,3 --short-side 32 --batch-size 4" \
	  TRAIN="--iters 4 --batch-size 2 --fusion-widths 64,32 --num-workers 0" table
