# zodi: `make demo` and `make test` work on a fresh clone; both build .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed
DEMO    := out/demo
export HF_HUB_OFFLINE := 1

.PHONY: install test demo bench clean

install: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=5

demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash recipes/demo.sh $(DEMO)

bench: $(STAMP)
	$(BIN)/python recipes/bench/bench_evaluate.py
	$(BIN)/python recipes/bench/bench_train.py
	$(BIN)/python recipes/bench/bench_translate.py

clean:
	rm -rf $(VENV) out
