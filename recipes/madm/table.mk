# MADM (REFERENCE §5): Cityscapes -> FMB infrared (9 classes) and -> DSEC event (11 classes) with a
# fine-tuned SD 1.4 UNet backbone, LPLR and diffusion-based pseudo-labels (DPLG), beside the
# published numbers (make table-madm; make -n table-madm prints every command).
#
# MODE=online (the default) runs the authors' scheme: one run in which an EMA teacher labels each target
# batch at DPLG's timestep t(i) = t0(1 - i/E) and ClassMix mixes it with the source, every iteration
# (train-seg --online-pl). MODE=offline runs two stages: A trains on the source (CE + LPLR) for WARM
# iterations; `pseudolabel --dplg` labels the target once at that iteration; B continues from A's
# weights with those labels to ITERS in all.
#   make -f recipes/madm/table.mk          (needs cityscapes, the targets below and the sd14 preset)
#
# Protocol (docs/fidelity.md): the authors' multi-step LR with warm-up and gradient clipping (SCHEDULE);
# evaluation at 512x1024 (EVAL); the last checkpoint is scored (no selection on target labels).
#   make -f recipes/madm/table.mk toy      (the recipe on the toy city with the toy model; a smoke test)
ZODI     ?= zodi
OUT      ?= runs/madm-table
SOURCE   ?= cs:train
TARGETS  ?= infrared event
SEEDS    ?= 1 2 3
SD       ?= sd14
# LPLR as the authors' configs: on source and target ('st', weights 1/1) for depth and infrared, on the
# source only with weight 20 for event.
# Target images (unlabelled train) and labelled val per modality, as zodi dataset specs (folder:IMAGES:LABELS:trainid
# holds any converted set); class sets madm9 (FMB) / madm11 (DSEC) remap Cityscapes' 19 classes.
infrared_TRAIN ?= folder:data/fmb/train/Infrared
infrared_VAL   ?= folder:data/fmb/test/Infrared:data/fmb/test/Label_cs:trainid
infrared_CLASSES ?= madm9
infrared_DPLG  ?= --dplg-t0 50 --dplg-total 8000
infrared_LPLR  ?= --lplr-weight 1
infrared_LPLR_TARGET ?= --lplr-target-weight 1
event_TRAIN    ?= folder:data/dsec/train/events
event_VAL      ?= folder:data/dsec/val/events:data/dsec/val/labels_cs:trainid
event_CLASSES  ?= madm11
event_DPLG     ?= --dplg-t0 50 --dplg-total 8000
event_LPLR     ?= --lplr-weight 20
event_LPLR_TARGET ?= --lplr-target-weight 0
MODE     ?= online
ITERS    ?= 10000
WARM     ?= 2500
# The authors' schedule (fvcore): linear warm-up from 0.067 over 500/184375 of the run, x0.1 at 88.89 % and
# 96.3 %; gradients clipped to norm 0.01.
SCHEDULE ?= --lr-schedule multistep --lr-milestones 0.8889,0.963 --warmup-iters $(shell echo $$(($(ITERS) * 500 / 184375))) \
            --warmup-start 0.067 --grad-clip 0.01
TRAIN    ?= --batch-size 2 --crop 512x512 --resize none --optimizer adamw --lr 5e-6 --weight-decay 0.05 --amp bf16 --rcs-temperature 0.01
PL       ?= --size 512x1024 --batch-size 4
EVAL     ?= --size 512x1024

RUNS := $(foreach t,$(TARGETS),$(foreach s,$(SEEDS),$(OUT)/$(t)-seed$(s)))
target_of = $(firstword $(subst -seed, ,$(1)))
seed_of   = $(lastword $(subst -seed, ,$(1)))
COMMON = --backbone sd-unet --sd-model $(SD) --source $(SOURCE) --seed $(call seed_of,$*) $(TRAIN) $(SCHEDULE)

.PHONY: all table toy
.SECONDARY:          # keep intermediate results (translations, stage A, pseudo-labels): they are the resume points
all: table

ifeq ($(MODE),online)
$(OUT)/%/final/last.pt:
	$(ZODI) train-seg $(COMMON) $($(call target_of,$*)_LPLR) $($(call target_of,$*)_LPLR_TARGET) --target $($(call target_of,$*)_TRAIN) \
	  --online-pl $($(call target_of,$*)_DPLG) --iters $(ITERS) --out $(OUT)/$*/final
else
$(OUT)/%/final/last.pt: $(OUT)/%/B/last.pt
	mkdir -p $(@D) && ln -sf ../B/last.pt $@
endif

$(OUT)/%/A/last.pt:
	$(ZODI) train-seg $(COMMON) $($(call target_of,$*)_LPLR) --iters $(WARM) --out $(OUT)/$*/A

$(OUT)/%/pl.h5: $(OUT)/%/A/last.pt
	$(ZODI) pseudolabel --checkpoint $< --src $($(call target_of,$*)_TRAIN) --dplg --dplg-iter $(WARM) \
	  $($(call target_of,$*)_DPLG) $(PL) --out $@

$(OUT)/%/B/last.pt: $(OUT)/%/pl.h5
	$(ZODI) train-seg $(COMMON) $($(call target_of,$*)_LPLR) $($(call target_of,$*)_LPLR_TARGET) --target $($(call target_of,$*)_TRAIN) --target-pl $< \
	  --init-from $(OUT)/$*/A/last.pt --iters $(shell echo $$(($(ITERS) - $(WARM)))) --out $(OUT)/$*/B

$(OUT)/%/target.json: $(OUT)/%/final/last.pt
	$(ZODI) evaluate --checkpoint $< --dataset $($(call target_of,$*)_VAL) --classes $($(call target_of,$*)_CLASSES) $(EVAL) \
	  --out $(OUT)/$*/preds-target.h5 --json > $@.tmp
	mv $@.tmp $@

table: $(RUNS:=/target.json)
	python recipes/collate.py madm $(OUT) "$(TARGETS)" "$(SEEDS)"

# The recipe on the toy city: night and fog stand in for infrared and event; not the paper's numbers.
TOY_SD ?= recipes/toy/model/sd
toy:
	$(ZODI) datasets make-toy --out $(OUT)-toy/data/toy --n-train 8 --n-val 4
	ZODI_TOY_ROOT=$(OUT)-toy/data/toy $(MAKE) -f recipes/madm/table.mk OUT=$(OUT)-toy SOURCE=toy:clear:train \
	  SEEDS=1 SD=$(TOY_SD) ITERS=4 WARM=2 \
	  infrared_TRAIN=toy:night:train infrared_VAL=toy:night:val infrared_CLASSES=madm9 \
	  event_TRAIN=toy:fog:train event_VAL=toy:fog:val event_CLASSES=madm11 \
	  TRAIN="--batch-size 2 --resize 32x64 --crop none --optimizer adamw --lr 1e-4 --num-workers 0" \
	  PL="--size 32x64 --batch-size 4" EVAL="--size 32x64" table
