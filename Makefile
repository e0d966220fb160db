# Two commands on a fresh machine with only Python:
#   make demo   # venv + install + simulate the notebook scene + run + report
#   make test   # venv + install + lint + the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint bench clean

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

demo: $(STAMP)
	$(BIN)/tilesky demo --dir .

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ring.py
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf demo.zarr demo_input.zarr demo_report .pytest_cache
