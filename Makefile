# Every target creates .venv and installs what it needs: `make demo` and `make test`
# work on a fresh machine that has only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench wasm clean venv setup

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples
	$(PY) -m mypy

# System tools the tests use beyond Python (jq; MCP peers from npm): idempotent, fast when present.
setup:
	bash .ci/setup

test: setup lint
	$(PY) -m pytest

# Rebuild the committed WASM guests (needs clang, lld, wasi-libc, libclang-rt-14-dev-wasm32).
WASM_CC ?= clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wl,--strip-all -Wall -Wextra -I sdk/c
WASM_GUESTS := tests/transports/wasm_guests
wasm:
	$(WASM_CC) -o $(WASM_GUESTS)/testskill.wasm $(WASM_GUESTS)/testskill.c
	$(WASM_CC) -o $(WASM_GUESTS)/echo.wasm $(WASM_GUESTS)/echo.c
	$(WASM_CC) -o $(WASM_GUESTS)/conf.wasm $(WASM_GUESTS)/conf.c
	$(WASM_CC) -o examples/skills/tally/tally.wasm examples/skills/tally/tally.c

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
