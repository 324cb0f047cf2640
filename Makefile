# The two set-up commands: `make quickstart` and `make test` (each creates .venv on first use).
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/quickstart

.PHONY: install quickstart test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	@touch $@

quickstart: install
	$(VENV)/bin/paretoforge search examples/quickstart.yaml --run-dir $(RUN_DIR)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check paretoforge tests benchmarks

clean:
	rm -rf runs .pytest_cache
