# zodi: `make demo` and `make test` work on a fresh clone; both build .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
# Where pip takes torch from: empty = pip's configured indexes (PyPI's Linux wheels are CUDA builds;
# this project's machines add a local folder with the CPU build); a PyTorch index picks the build,
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu or .../whl/cu126 on a CUDA cluster.
TORCH_INDEX ?=
STAMP   := $(VENV)/.installed
DEMO    ?= runs/demo
SEEDS   ?= 1
JOBS    ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
export HF_HUB_OFFLINE := 1

.PHONY: install test wheel-smoke smoke-full demo methods bench clean toy-model toy-check table-zodi table-madm table-diff

install: $(STAMP)

# torch first, pinned, from TORCH_INDEX when given; then zodi, whose torch range that build satisfies.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=5 -n $(JOBS) --dist worksteal

# The installed-wheel path, outside the checkout (CI runs it after the suite).
wheel-smoke:
	PY=$(PY) TORCH=$(TORCH) TORCH_INDEX=$(TORCH_INDEX) bash .ci/wheel-smoke

demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash recipes/demo/run.sh $(DEMO) "$(SEEDS)"

# Methods beside the baselines that isolate them, on the toy city (recipes/methods/run.sh; SEEDS="1 2 3").
methods: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash recipes/methods/run.sh runs/methods "$(SEEDS)"

# The toy diffusion model behind the demo: retrain (hours on 2 CPU cores, over sittings; resumable), or check it.
toy-model: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash recipes/toy/train.sh out/toy-diffusion

toy-check: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH python recipes/toy/check.py runs/toy-check

# The papers' tables (need the real datasets and models; `make -n table-zodi` prints every command).
# Each runs, as a smoke test, on the toy city: make -f recipes/zodi/table.mk toy (see tests/test_recipes.py).
table-zodi table-madm table-diff: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(MAKE) -f recipes/$(@:table-%=%)/table.mk table

# Every command on the real architectures at full size (random weights; minutes on a CPU). DEVICE=cuda on a GPU.
DEVICE ?= cpu
smoke-full: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python recipes/smoke/full_size.py --out runs/smoke-full --device $(DEVICE)

bench: $(STAMP)
	$(BIN)/python recipes/bench/report.py

clean:
	rm -rf $(VENV) out runs
