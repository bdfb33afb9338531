# Serverless Segmentation: developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
UV_VERSION  := 0.13.9
STAMP       := $(VENV)/.installed
TFLITE_VENV := .venv-tflite
TFLITE_STAMP := $(TFLITE_VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
PYTEST_ARGS ?=
# The suite runs in 2 pytest-xdist workers, a test file each at a time (--dist loadfile: a
# file stays in one worker, so its module fixtures are built once; session fixtures are built
# per worker that uses them). Much of it waits on emulators and subprocesses, so 2 workers on
# 2 cores take 9 minutes, not 15.
# PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

.PHONY: help setup test test-fast lint format lock model holdout demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) $(TFLITE_STAMP) $(CHECKOV_STAMP) ## Build .venv (Python 3.12, everything pinned); idempotent

# --compile-bytecode: the .pyc files are written once here, so no process has to compile
# TensorFlow's sources again where PYTHONDONTWRITEBYTECODE is set (our dev machines set it): `import
# tensorflow` takes 4 s instead of 12 on 2 cores, in each of the suite's many processes.
$(STAMP): requirements/dev.lock pyproject.toml
	@test -x $(PY) || "$$(scripts/find-python.sh 3.12)" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/uv.txt
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -r requirements/dev.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

# tflite-runtime (the function's fallback interpreter) only ships wheels up to Python 3.11.
$(TFLITE_STAMP): requirements/tflite-runtime.txt $(STAMP)
	@test -x $(TFLITE_VENV)/bin/python || "$$(scripts/find-python.sh 3.11)" -m venv $(TFLITE_VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(TFLITE_VENV)/bin/python -r requirements/tflite-runtime.txt
	@touch $@

# checkov lives in its own virtualenv: its bc-python-hcl2 shadows python-hcl2 (docs/architecture.md, decision 8).
$(CHECKOV_STAMP): requirements/checkov.txt $(STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || "$$(scripts/find-python.sh 3.12)" -m venv $(CHECKOV_VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(CHECKOV_VENV)/bin/python -r requirements/checkov.txt
	@touch $@

test: setup ## Run the whole test suite (unit, integration, e2e, slow)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup ## Run the suite without the slow tests
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The default model: trained from scratch on real photos in the Oxford-IIIT Pet layout (no
# ImageNet weights offline). Resumable: an interrupted `make model` continues from the last
# epoch's checkpoint in $(DEFAULT_MODEL_RUN); `rm -rf $(DEFAULT_MODEL_RUN)` starts over.
# Only model.tflite and manifest.json are copied: quality.png shows dataset photos.
# With no pretrained encoder the fine-tune phase is a warm restart: 120 more epochs on a fresh
# cosine cycle peaking at half the first one's rate (+1.1 mIoU on real photos, README "The model").
DEFAULT_MODEL_RUN := build/default-model
DEFAULT_MODEL_ARGS := --encoder-weights none --epochs 300 --fine-tune-epochs 120 \
  --fine-tune-learning-rate 5e-4 --batch-size 8 --validation-fraction 0 \
  --copy-paste 0.5 --weight-decay 0.05 --bn-recalibration-steps 38 --test-time-flip
NEED_DATA_DIR = @test -n "$(DATA_DIR)" || { echo "make $@ needs DATA_DIR=<folder with images/ and annotations/trimaps/ (Oxford-IIIT Pet layout)>" >&2; exit 2; }
model: setup ## Rebuild models/default/ from real photos: make model DATA_DIR=<Oxford-IIIT layout> (1.4-4.7 h on 2 cores)
	$(NEED_DATA_DIR)
	$(PY) -m model_build all --data-dir "$(DATA_DIR)" $(DEFAULT_MODEL_ARGS) --out $(DEFAULT_MODEL_RUN)
	$(PY) -m model_build score --model-dir $(DEFAULT_MODEL_RUN)/model --data-dir "$(DATA_DIR)" \
	  --json $(DEFAULT_MODEL_RUN)/serving-score.json --sheet $(DEFAULT_MODEL_RUN)/serving-quality.png
	mkdir -p models/default
	cp $(DEFAULT_MODEL_RUN)/model/model.tflite $(DEFAULT_MODEL_RUN)/model/manifest.json models/default/

# How the default recipe does on a breed it never saw: the same training with HOLDOUT_BREED's
# photos left out (the test split keeps them), then `score`, which reports each breed as seen or
# held out. Nothing is copied to models/default. Resumable like `make model`.
HOLDOUT_RUN = build/holdout-$(HOLDOUT_BREED)
holdout: setup ## The default recipe with one breed left out of training, scored per breed: make holdout DATA_DIR=... HOLDOUT_BREED=Bengal (one breed)
	$(NEED_DATA_DIR)
	@test -n "$(HOLDOUT_BREED)" || { echo "make holdout needs HOLDOUT_BREED=<a breed of DATA_DIR, as in its file names, e.g. Bengal>" >&2; exit 2; }
	$(PY) -m model_build all --data-dir "$(DATA_DIR)" $(DEFAULT_MODEL_ARGS) \
	  --holdout-breed "$(HOLDOUT_BREED)" --out "$(HOLDOUT_RUN)"
	$(PY) -m model_build score --model-dir "$(HOLDOUT_RUN)/model" --data-dir "$(DATA_DIR)" \
	  --json "$(HOLDOUT_RUN)/serving-score.json"

.PHONY: bench
bench: setup ## Benchmarks vs full TensorFlow and the machine: table + bench/results.json (BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH_ARGS)

DEMO_OUT := out/demo
demo: setup ## Run the local stack on samples/ (masks, error record, contact sheet in out/demo)
	$(VENV)/bin/segment local run $(filter-out %.py %.md,$(wildcard samples/*)) --out $(DEMO_OUT)
	@echo "contact sheet: $(DEMO_OUT)/contact-sheet.png  (README image: cp it to docs/img/contact-sheet.png)"

lock: ## Re-resolve the locks (dev, checkov, uv; hashed, within dev.lock: functions/ and the GPU VM)
	$(UV) pip compile requirements/dev.in --python-version 3.12 \
	  --python-platform x86_64-manylinux_2_28 -o requirements/dev.lock
	$(UV) pip compile requirements/checkov.in --python-version 3.12 \
	  --python-platform x86_64-manylinux_2_28 -o requirements/checkov.txt
	cd requirements && ../$(UV) pip compile uv.in --python-version 3.12 --generate-hashes \
	  --custom-compile-command "make lock" -o uv.txt
	cd requirements && ../$(UV) pip compile functions.in -c dev.lock --python-version 3.12 \
	  --python-platform x86_64-manylinux_2_28 --annotation-style line --generate-hashes \
	  --custom-compile-command "make lock" -o ../functions/requirements.txt
	cd requirements && ../$(UV) pip compile gpu.in -c dev.lock --python-version 3.12 \
	  --python-platform x86_64-manylinux_2_28 --annotation-style line --generate-hashes \
	  --custom-compile-command "make lock" -o ../model_build/requirements-gpu.txt

clean: ## Remove virtualenvs and caches
	rm -rf $(VENV) $(TFLITE_VENV) $(CHECKOV_VENV) .pytest_cache .ruff_cache
