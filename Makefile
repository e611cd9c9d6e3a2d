# Two entry points (see README): `make book` and `make test`.
# Both create or reuse .venv at the repository root and install the package in it.

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test check execute render benchmark mutants peers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Execute every chapter notebook with papermill (in place), then render the book.
book: execute render

execute: $(STAMP)
	$(BIN)/python -m eclip_core.book execute

render: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going

## The whole test suite: lint and type checks of eclip_core, pytest over tests/ (the browser
## test included) and nbval over every notebook, in TEST_WORKERS processes (pytest-xdist; a
## notebook's cells, like a test file's tests, stay in one process, in order).
## The longest files are scheduled first (conftest.py). PYTEST_ARGS: extra pytest options.
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
test: $(STAMP)
	$(BIN)/ruff check eclip_core
	$(BIN)/mypy
	$(BIN)/python -m pytest notebooks tests --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/nbval-sanitize.cfg -p no:cacheprovider \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

## The fast loop (under 3 minutes on two cores): lint, types and every pytest test not marked
## slow (no chapter, no book build, no subprocess); `make test` before a commit lands.
check: $(STAMP)
	$(BIN)/ruff check eclip_core
	$(BIN)/mypy
	$(BIN)/python -m pytest tests -m "not slow" -p no:cacheprovider -q \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

## Mutation check (not part of `make test`): single-line mutants of eclip_core, each of
## which the targeted pytest tests must kill; exits non-zero if any survives.
mutants: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python tools/mutants.py

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_explain.py

## The peers that cannot be installed beside eclip -- the published Grad-ECLIP code, LeGrad with
## the open_clip it pins, TextSpan -- run in an environment of their own on one random-init
## ViT-B/16, then set beside eclip (benchmarks/peers; about 20 minutes on two cores; not part of
## `make test`). GRAD_ECLIP, TEXTSPAN: checkouts of Cyang-Zhao/Grad-Eclip and
## yossigandelsman/clip_text_span. Writes the table the README and chapter 7 state
## (eclip_core/data/peers.json).
PEERS_VENV := build/peers-venv
PEERS_PACKAGES := torch==2.14.1 torchvision==0.29.1 open_clip_torch==2.23.0 legrad_torch==1.1 \
	openai-clip==1.0.1 'setuptools<70' scikit-image safetensors einops
peers: $(STAMP)
	@test -n "$(GRAD_ECLIP)" -a -n "$(TEXTSPAN)" || { echo "usage: make peers GRAD_ECLIP=<checkout> TEXTSPAN=<checkout>"; exit 2; }
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet $(PEERS_PACKAGES)
	for dtype in float64 float32; do \
		$(PEERS_VENV)/bin/python benchmarks/peers/run_peers.py --grad-eclip $(GRAD_ECLIP) --textspan $(TEXTSPAN) \
			--dtype $$dtype --out build/peers/peers_$$dtype.safetensors && \
		$(BIN)/python benchmarks/peers/compare.py build/peers/peers_$$dtype.safetensors \
			--json eclip_core/data/peers.json || exit 1; \
	done
	$(PEERS_VENV)/bin/python benchmarks/peers/legrad_side_effects.py

clean:
	rm -rf _build
