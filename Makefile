# The commands a newcomer types. Each creates the .venv it needs, or refreshes it when
# pyproject.toml changed since it was made, so a fresh clone needs nothing typed first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo
DEMO_STORE ?= data/demo.zarr
TORCH_VERSION ?= 2.13.0

.PHONY: install preprocess test test-fast bench bench-read bench-scale bench-stats lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# torch first, pinned: 2.13.0 is the CPU build these machines keep; an open range would
	@# pull a CUDA build of several GB. The torch extra itself asks only for a minimum.
	$(BIN)/python -m pip install --quiet 'torch==$(TORCH_VERSION)'
	@# An environment made under the project's former name holds it too: it goes.
	$(BIN)/python -m pip uninstall --quiet --yes specpipe 2>/dev/null || true
	@# pip 25.1 is the first to read [dependency-groups] (--group dev: the test and lint tools).
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[torch,xarray,viz,s3,slurm]' --group dev
	@touch $@
	@echo "Installed melpipe into $(VENV)."

preprocess: $(STAMP)
	@test -d $(DEMO_DIR) || $(BIN)/melpipe demo $(DEMO_DIR)
	$(BIN)/melpipe preprocess $(DEMO_DIR) $(DEMO_STORE) --overwrite

test: $(STAMP)
	@# One test process per core; tests that share state across a module say so with
	@# xdist_group, which keeps them in one process.
	$(BIN)/python -m pytest -n auto --dist loadgroup

# The unit tests alone (tests/unit): the inner loop, under two minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadgroup tests/unit

# BENCH_*_ARGS pass options to a benchmark, e.g. BENCH_PREPROCESS_ARGS="--files 16000".
bench: $(STAMP) bench-read bench-scale
	$(BIN)/python -m bench.bench_preprocess $(BENCH_PREPROCESS_ARGS)
	$(BIN)/python -m bench.bench_long $(BENCH_LONG_ARGS)
	$(BIN)/python -m bench.bench_presets $(BENCH_PRESETS_ARGS)
	$(BIN)/python -m bench.bench_hashes $(BENCH_HASHES_ARGS)
	$(BIN)/python -m bench.bench_listing $(BENCH_LISTING_ARGS)

bench-read: $(STAMP)
	$(BIN)/python bench/bench_read.py $(BENCH_READ_ARGS)

bench-scale: $(STAMP)
	$(BIN)/python bench/bench_scale.py $(BENCH_SCALE_ARGS)

# The five statistics side by side on the demo data (docs/statistics.md).
bench-stats: $(STAMP)
	@test -d $(DEMO_DIR) || $(BIN)/melpipe demo $(DEMO_DIR)
	$(BIN)/python -m bench.compare_stats $(DEMO_DIR) $(BENCH_STATS_ARGS) -- --scheduler sync

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix pipeline tests bench
	$(BIN)/ruff format pipeline tests bench

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache .hypothesis
