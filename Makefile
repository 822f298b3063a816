# The two commands of the README: `make quickstart` and `make test`. Both create .venv/ if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test venv bench docs screenshots clean

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

$(VENV)/.docs-installed: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,docs]' -c constraints.txt
	touch $@

# The manual (Sphinx + MyST-NB, notebooks executed at smoke size) -> docs/_build/html/index.html
docs: $(VENV)/.docs-installed
	$(BIN)/python -m sphinx -b html -W --keep-going docs docs/_build/html

# Screenshots of the built manual (Debian's chromium, headless) -> docs/screenshots/*.png
SHOTS := index:index.html paper_weighted_regularization:papers/weighted_regularization.html \
	results:_generated/results.html api_repair_jax_repair_methods:_autosummary/repair_jax.repair.methods.html \
	notebook_explain_spurious:_generated/notebooks/explain_spurious.html
screenshots:
	test -f docs/_build/html/index.html || $(MAKE) docs
	for s in $(SHOTS); do chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
	  --window-size=1280,1000 --screenshot=docs/screenshots/$${s%%:*}.png \
	  file://$(CURDIR)/docs/_build/html/$${s#*:}; done

bench: $(STAMP)
	$(BIN)/python -m benchmarks --out benchmarks/results

clean:
	rm -rf runs .pytest_cache docs/_build docs/_generated docs/_autosummary
