# The commands a newcomer types. Everything runs from the .venv that `make install` creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= data/demo
DEMO_STORE ?= data/demo.zarr

.PHONY: install preprocess test bench lint format clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@echo "Installed specpipe into $(VENV); try: make preprocess"

preprocess:
	@test -d $(DEMO_DIR) || $(BIN)/specpipe demo $(DEMO_DIR)
	$(BIN)/specpipe preprocess $(DEMO_DIR) $(DEMO_STORE) --overwrite

test:
	$(BIN)/python -m pytest

bench:
	$(BIN)/python bench/bench_preprocess.py

lint:
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy

format:
	$(BIN)/ruff check --fix pipeline tests bench
	$(BIN)/ruff format pipeline tests bench

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache .hypothesis
