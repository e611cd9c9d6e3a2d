# Two entry points (see README): `make book` and `make test`.
# Both create or reuse .venv at the repository root and install the package in it.

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test check execute render benchmark mutants clean

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

clean:
	rm -rf _build
