# ZoDi table (REFERENCE §4): ACDC val mIoU of DeepLabv3+ trained on Cityscapes + ZoDi translations.
#
#   make -f recipes/zodi/table.mk                     # the paper's setting (needs cityscapes, acdc, sd15, controlnet-seg)
#   make -f recipes/zodi/table.mk -j4 translate       # translations only (shard further with SHARD=auto under Slurm)
#   make -f recipes/zodi/table.mk toy                 # the same recipe on the toy city with the tiny stack (a smoke test)
#
# Every step is a zodi command that resumes, so an interrupted `make` continues where it stopped.
ZODI      ?= zodi
OUT       ?= runs/zodi-table
SOURCE    ?= cs:train
SOURCE_VAL?= cs:val
TARGET    ?= acdc:%s:val
DOMAINS   ?= fog night rain snow
SEEDS     ?= 1 2 3
MODEL     ?= deeplabv3plus_r50
SD        ?= sd15
CN        ?= controlnet-seg
TRANSLATE ?= --short-side 512
TRAIN     ?= --iters 74300 --batch-size 4 --crop 384x768 --resize 512x1024 --poly-unit epoch
PRETRAINED?=
EVAL      ?= --size 512x1024

target_of = $(subst %s,$(1),$(TARGET))
SYN  := $(foreach d,$(DOMAINS),$(OUT)/syn-$(d).h5)
RUNS := $(foreach d,$(DOMAINS),$(foreach s,$(SEEDS),$(OUT)/$(d)-seed$(s)/last.pt))
EVALS:= $(foreach d,$(DOMAINS),$(foreach s,$(SEEDS),$(OUT)/$(d)-seed$(s)/target.json))

.PHONY: all translate train evaluate table toy
all: table
translate: $(SYN)
train: $(RUNS)
evaluate: $(EVALS)

$(OUT)/syn-%.h5:
	$(ZODI) translate --src $(SOURCE) --domain $* --model $(SD) --controlnet $(CN) $(TRANSLATE) --out $@

$(OUT)/%/last.pt: | translate
	$(eval d := $(firstword $(subst -seed, ,$*)))
	$(eval s := $(lastword $(subst -seed, ,$*)))
	$(ZODI) train-seg --model $(MODEL) --source $(SOURCE) --synth $(OUT)/syn-$(d).h5 --val $(SOURCE_VAL) \
	  --seed $(s) $(TRAIN) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) --out $(OUT)/$*

$(OUT)/%/target.json: $(OUT)/%/last.pt
	$(eval d := $(firstword $(subst -seed, ,$*)))
	$(ZODI) evaluate --checkpoint $< --dataset $(call target_of,$(d)) $(EVAL) --out $(OUT)/$*/preds-target.h5 --json > $@.tmp
	mv $@.tmp $@

table: $(EVALS)
	python recipes/zodi/collate.py $(OUT) "$(DOMAINS)" "$(SEEDS)" $(MODEL)

# A smoke test of the whole recipe on the toy city (minutes on a CPU); not the paper's numbers.
TOY_DOMAINS ?= fog night
TOY_SEEDS   ?= 1 2
toy:
	$(ZODI) datasets make-toy --out $(OUT)-toy/data/toy --n-train 16 --n-val 8
	[ -d $(OUT)-toy/models/tiny/sd ] || $(ZODI) models make-tiny --out $(OUT)-toy/models/tiny
	ZODI_TOY_ROOT=$(OUT)-toy/data/toy ZODI_MODELS=$(OUT)-toy/models $(MAKE) -f recipes/zodi/table.mk OUT=$(OUT)-toy \
	  SOURCE=toy:clear:train SOURCE_VAL=toy:clear:val TARGET=toy:%s:val DOMAINS="$(TOY_DOMAINS)" SEEDS="$(TOY_SEEDS)" \
	  MODEL=deeplabv3plus_r18 SD=tiny CN=tiny-controlnet TRANSLATE="--short-side 32 --batch-size 4" \
	  TRAIN="--iters 10 --batch-size 4 --crop 64x128 --resize none --num-workers 0" EVAL="" table
