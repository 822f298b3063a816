# The two commands of the README: `make quickstart` and `make test`. Both create .venv/ if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test venv bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

# --force: a re-run replaces the quickstart's own output directory
quickstart: $(STAMP)
	$(BIN)/python -m repair_jax quickstart --out runs/quickstart --force

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks --out benchmarks/results

clean:
	rm -rf runs .pytest_cache
