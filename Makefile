# Two commands on a fresh machine with Python 3.11 and make:
#   make demo   - the example DAGs against a local Attentive emulator and a SQLite warehouse
#   make test   - the whole test suite (installs what it needs, PostgreSQL included)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[emulator]" --group dev
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	bash scripts/ensure-packages.sh postgres browser compose redis
	$(BIN)/ruff check .
	$(BIN)/mypy
	ATTENTIVE_REQUIRE_POSTGRES=1 ATTENTIVE_REQUIRE_BROWSER=1 ATTENTIVE_REQUIRE_REDIS=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# As modules from the repository root, so that benchmarks import the tests' helpers (tests.helpers.*).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.hook_throughput
	$(BIN)/python -m benchmarks.emulator_throughput
	$(BIN)/python -m benchmarks.unchanged_rerun --rows 1000000
	$(BIN)/python -m benchmarks.unchanged_rerun --rows 200000 --changed 0.5
	$(BIN)/python -m benchmarks.parallel_syncs
	$(BIN)/python -m benchmarks.bulk_attributes --rows 1000000
	$(BIN)/python -m benchmarks.segments_mirror --members 1000000

clean:
	rm -rf $(VENV) .demo test-artifacts
