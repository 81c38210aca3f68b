# ZoDi table (REFERENCE §4): target mIoU of segmenters trained on Cityscapes + ZoDi translations,
# Cityscapes -> ACDC fog/night/rain/snow and Cityscapes -> GTA5 ("game"), DeepLabv3+ R50/R101 and
# RefineNet R50, seeds 1-3, beside the published numbers (make table-zodi; make -n table-zodi).
#
#   make -f recipes/zodi/table.mk                     # the paper's setting (cityscapes, acdc, gta5, sd15, controlnet-seg)
#   make -f recipes/zodi/table.mk -j4 translate       # translations only (or per domain under Slurm: recipes/slurm/array.sh)
#   make -f recipes/zodi/table.mk toy                 # the same recipe on the toy city with the toy model (a smoke test)
#
# Every step is a zodi command that resumes, so an interrupted `make` continues where it stopped.
#
# Protocol (docs/fidelity.md): poly LR stepped per epoch, as ZoDi's code (--poly-unit epoch); evaluation
# at 512x1024 (--size), as ZoDi evaluates; the LAST checkpoint is scored. ZoDi's log headlines the best
# epoch on target val (oracle selection); `--select-on target --target-val ...` reproduces that, labelled so.
ZODI      ?= zodi
OUT       ?= runs/zodi-table
SOURCE    ?= cs:train
SOURCE_VAL?= cs:val
TARGET    ?= acdc:%s:val
GAME      ?= gta5:val
DOMAINS   ?= fog night rain snow game
SEEDS     ?= 1 2 3
MODELS    ?= deeplabv3plus_r50 deeplabv3plus_r101 refinenet_lw_r50
SD        ?= sd15
CN        ?= controlnet-seg
TRANSLATE ?= --short-side 512
TRAIN     ?= --iters 74300 --batch-size 4 --crop 384x768 --resize 512x1024 --poly-unit epoch
PRETRAINED?=
EVAL      ?= --size 512x1024

target_of = $(if $(filter game,$(1)),$(GAME),$(subst %s,$(1),$(TARGET)))
SYN  := $(foreach d,$(DOMAINS),$(OUT)/syn-$(d).h5)
RUNS := $(foreach m,$(MODELS),$(foreach d,$(DOMAINS),$(foreach s,$(SEEDS),$(OUT)/$(m)/$(d)-seed$(s))))

.PHONY: all translate train evaluate table toy
.SECONDARY:          # keep intermediate results (translations, stage A, pseudo-labels): they are the resume points
all: table
translate: $(SYN)
train: $(RUNS:=/last.pt)
evaluate: $(RUNS:=/target.json)

$(OUT)/syn-%.h5:
	$(ZODI) translate --src $(SOURCE) --domain $* --model $(SD) --controlnet $(CN) $(TRANSLATE) --out $@

# $* = MODEL/DOMAIN-seedS
model_of  = $(firstword $(subst /, ,$(1)))
domain_of = $(firstword $(subst -seed, ,$(lastword $(subst /, ,$(1)))))
seed_of   = $(lastword $(subst -seed, ,$(1)))

$(OUT)/%/last.pt: | translate
	$(ZODI) train-seg --model $(call model_of,$*) --source $(SOURCE) --synth $(OUT)/syn-$(call domain_of,$*).h5 \
	  --val $(SOURCE_VAL) --seed $(call seed_of,$*) $(TRAIN) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) --out $(OUT)/$*

$(OUT)/%/target.json: $(OUT)/%/last.pt
	$(ZODI) evaluate --checkpoint $< --dataset $(call target_of,$(call domain_of,$*)) $(EVAL) \
	  --out $(OUT)/$*/preds-target.h5 --json > $@.tmp
	mv $@.tmp $@

table: $(RUNS:=/target.json)
	python recipes/collate.py zodi $(OUT) "$(MODELS)" "$(DOMAINS)" "$(SEEDS)"

# The whole recipe on the toy city with the toy diffusion model (minutes on a CPU); not the paper's numbers.
TOY_DOMAINS ?= fog night
TOY_SEEDS   ?= 1 2
TOY_SIZE    ?= 64
TOY_SD ?= recipes/toy/model/sd
TOY_CN ?= recipes/toy/model/controlnet
toy:
	$(ZODI) datasets make-toy --out $(OUT)-toy/data/toy --n-train 16 --n-val 8
	ZODI_TOY_ROOT=$(OUT)-toy/data/toy $(MAKE) -f recipes/zodi/table.mk OUT=$(OUT)-toy \
	  SOURCE=toy:clear:train SOURCE_VAL=toy:clear:val TARGET=toy:%s:val GAME=toy:snow:val \
	  DOMAINS="$(TOY_DOMAINS)" SEEDS="$(TOY_SEEDS)" MODELS=deeplabv3plus_tiny \
	  SD=$(TOY_SD) CN=$(TOY_CN) TRANSLATE="--short-side $(TOY_SIZE) --batch-size 4 --steps 10" \
	  TRAIN="--iters 10 --batch-size 4 --resize 64x128 --crop none --num-workers 0" EVAL="--size 64x128" table
