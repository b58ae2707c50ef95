# Two commands do everything on a fresh machine:
#   make demo    venv + install, synthetic Kaggle-layout data, the pipeline on it, a scored submission
#   make test    venv + install, ruff, the test suite (CPU, tiny models, tiny data)
#   make lint    ruff alone (pyflakes, import order, complexity; configured in pyproject.toml)
# `make demo DATA=/path/to/kaggle` runs the demo on the real competition data instead.

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
DATA       ?=
DEMO_DIR   ?= runs/demo
export NO_ALBUMENTATIONS_UPDATE := 1
SHELL      := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: all venv lint test test-slow demo bench clean-demo

all: test

# The venv is (re)installed only when requirements.txt differs from the copy saved inside it.
venv:
	@if [ -x $(PY) ] && cmp -s requirements.txt $(VENV)/.requirements.txt; then \
	  echo "venv: $(VENV) is up to date with requirements.txt"; \
	else \
	  echo "venv: installing requirements.txt into $(VENV) (a few minutes the first time)"; \
	  $(PYTHON_SYS) -m venv $(VENV) && \
	  { $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
	    | { grep -v "is ignored: it is neither a file nor a directory" || true; }; } && \
	  $(PY) -c "import tgs.compat, torch, timm, albumentations, cv2" && \
	  cp requirements.txt $(VENV)/.requirements.txt; \
	fi

lint: venv
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q -m "not slow"

test-slow: venv
	$(PY) -m pytest -q -m slow

demo: venv
	PY=$(PY) DATA="$(DATA)" DEMO_DIR="$(DEMO_DIR)" bash scripts/demo.sh

bench: venv
	$(PY) -m bench.bench_foundation
	$(PY) -m bench.bench_lovasz
	$(PY) -m bench.bench_models --batch-size 4 --iters 1
	$(PY) -m bench.bench_train --images 256 --workers 2 -- --basenet unet --encoder-width 8 --decoder-channels 16 --center-channels 32 --resize --input-size 64
	$(PY) -m bench.bench_test --images 2000 --models 3

clean-demo:
	rm -rf $(DEMO_DIR)
