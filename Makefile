# Front door: `make demo` runs the system on embedded defaults, `make test` runs lint, types and tests.
# Both create/refresh .venv from pyproject.toml; they need Python >= 3.11 and redis-server on PATH.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv lint typecheck test demo bench bench-api bench-consumers bench-ab bench-drift bench-memory bench-performance bench-model bench-guardian bench-replication clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

demo: venv
	$(BIN)/bnpl demo

# Benchmarks print ratios measured side by side in one run (the machine is shared: absolute numbers drift).
bench-api: venv
	$(BIN)/python -m bench.api_bench

bench-consumers: venv
	$(BIN)/python -m bench.consumers_bench

bench-replication: venv
	$(BIN)/python -m bench.replication_bench

bench-ab: venv
	$(BIN)/python -m bench.ab_simulation

bench-drift: venv
	$(BIN)/python -m bench.drift_bench

bench-memory: venv
	$(BIN)/python -m bench.memory_bench

bench-performance: venv
	$(BIN)/python -m bench.performance_bench

bench-model: venv
	$(BIN)/python -m bench.model_bench

bench-guardian: venv
	$(BIN)/python -m bench.guardian_bench

bench: bench-api bench-consumers bench-ab bench-drift bench-memory bench-performance bench-model bench-guardian bench-replication

clean:
	rm -rf $(VENV) .bnpl .pytest_cache .mypy_cache .ruff_cache
