# The README's commands. Each one makes .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is named by what it installed: editing requirements.txt or pyproject.toml renames it, so the next make
# installs again; a second make with neither changed does nothing.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
DEMO_OUT ?= runs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test test-all lint clean

# The pinned requirements, then this package editable (`pip install -e .`: the `distill` command, imports from any
# folder, edits take effect at once). --no-deps: the requirements are its dependencies, just installed. It builds
# with the venv's own setuptools where that can (no download); else pip fetches one (build isolation).
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . 2>/dev/null \
		|| $(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m distill run recipes/digits.yaml --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

lint: $(STAMP)
	$(BIN)/ruff check distill tests tools experiments
	$(BIN)/ruff format --check distill tests tools experiments

clean:
	rm -rf runs .pytest_cache
