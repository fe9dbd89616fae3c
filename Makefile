# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint venv clean

venv: $(STAMP)

# torch/torchvision are pinned in pyproject.toml; pip takes them from local disk where it can.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-cache-dir --upgrade pip
	$(BIN)/pip install -q --no-cache-dir -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/geoscreen demo

test: $(STAMP)
	$(BIN)/ruff check geoscreen tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/pip install -q --no-cache-dir -e '.[bench]'
	$(BIN)/python benchmarks/tiling.py

lint: $(STAMP)
	$(BIN)/ruff check geoscreen tests benchmarks
	$(BIN)/ruff format --check geoscreen tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
