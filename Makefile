# Two commands on a fresh machine with only Python:
#   make demo   # venv + install + simulate the notebook scene + run + report
#   make test   # venv + install + lint + the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint bench clean system

# System packages the tests need, from Debian's packages (as root, or with
# sudo): Chromium renders the report in the browser test. Skipped when
# installed.
CHROMIUM = /usr/bin/chromium
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# compat: a .pth puts the clone on sys.path, so the regular package wins
	# over the clone's own folder seen as a namespace package when Python
	# runs from the clone's parent (setuptools' default editable finder is
	# asked only after that path scan).
	$(BIN)/python -m pip install --quiet -e ".[test]" --config-settings editable_mode=compat
	# numba compiles the kernels once: here, not in the first run.
	$(BIN)/python -m tilesky.kernels._cache
	touch $(STAMP)

system: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends chromium

demo: $(STAMP)
	$(BIN)/tilesky demo --dir .

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint system
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ring.py
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf demo.zarr demo_input.zarr demo_report .pytest_cache
