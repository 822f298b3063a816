# The two commands of the README: `make quickstart` and `make test`. Both create .venv/ if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-real-data venv bench gpu gpu-rehearse docs screenshots clean reproduction-status

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

# --force: a re-run replaces the quickstart's own output directory
quickstart: $(STAMP)
	$(BIN)/python -m repair_jax quickstart --out runs/quickstart --force

# the suite on min(4, CPUs) worker processes (pytest-xdist; JOBS=1 runs it in this process)
JOBS ?= $(shell $(PY) -c "import os; print(min(4, len(os.sched_getaffinity(0))))")
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal

# An extra step, not part of `make test`: the checks of the real Fashion-MNIST installed on the machine
# (Debian's dataset-fashion-mnist, or IDX files under $$REPAIR_JAX_DATA); fails when they are missing
test-real-data: $(STAMP)
	REPAIR_JAX_REAL_DATA=1 $(BIN)/python -m pytest -p no:xdist

# docs/reproduction.md and every committed study's preconditions.json, from the committed result files (no rerun)
reproduction-status: $(STAMP)
	$(BIN)/python -m repair_jax.studies.status

$(VENV)/.docs-installed: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,docs]' -c constraints.txt
	touch $@

# The manual (Sphinx + MyST-NB, notebooks executed at smoke size) -> docs/_build/html/index.html
docs: $(VENV)/.docs-installed
	$(BIN)/python -m sphinx -b html -W --keep-going docs docs/_build/html

# Screenshots of the manual (Debian's chromium headless; formulas by Debian's libjs-mathjax, offline),
# built without executing the notebooks into docs/_build/shots -> docs/screenshots/*.png
MATHJAX ?= /usr/share/javascript/mathjax/MathJax.js
SHOTS := index:index.html paper_weighted_regularization:papers/weighted_regularization.html \
	results:_generated/results.html api_repair_jax_repair_methods:_autosummary/repair_jax.repair.methods.html \
	notebook_explain_spurious:_generated/notebooks/explain_spurious.html
screenshots: $(VENV)/.docs-installed
	REPAIR_JAX_DOCS_MATHJAX=$(MATHJAX) $(BIN)/python -m sphinx -q -b html -D nb_execution_mode=off docs docs/_build/shots
	for s in $(SHOTS); do chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
	  --allow-file-access-from-files --virtual-time-budget=10000 --window-size=1280,1000 \
	  --screenshot=docs/screenshots/$${s%%:*}.png file://$(CURDIR)/docs/_build/shots/$${s#*:}; done
	chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files \
	  --virtual-time-budget=15000 --window-size=1280,2600 --screenshot=docs/_build/influence_tall.png \
	  file://$(CURDIR)/docs/_build/shots/papers/influence.html
	$(BIN)/python -c "from PIL import Image; Image.open('docs/_build/influence_tall.png').crop((0, 1320, 1280, 2320)).save('docs/screenshots/paper_influence_formulas.png')"

bench: $(STAMP)
	$(BIN)/python -m benchmarks --out benchmarks/results

# The accelerator suite (benchmarks/gpu.py, docs/gpu.md) -> benchmarks/results/*_gpu.json; exit 2 without a
# GPU/TPU. It installs nothing (the GPU machine has no network): the Python is .venv's if there is one, else
# $(PY); GPU_ARGS passes e.g. --data-dir DIR, --budget S, --only a,b. `make gpu-rehearse`: the same at small
# sizes on any backend, into a temporary directory.
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))
gpu:
	$(GPU_PY) -m benchmarks --gpu $(GPU_ARGS)

gpu-rehearse: $(STAMP)
	$(BIN)/python -m benchmarks --gpu --rehearse $(GPU_ARGS)

clean:
	rm -rf runs .pytest_cache docs/_build docs/_generated docs/_autosummary
