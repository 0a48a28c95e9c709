# The README's commands. Each one makes .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
DEMO_OUT ?= runs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: demo test test-all lint clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/python -m distill run recipes/digits.yaml --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

lint: $(STAMP)
	$(BIN)/ruff check distill tests tools
	$(BIN)/ruff format --check distill tests tools

clean:
	rm -rf runs .pytest_cache
