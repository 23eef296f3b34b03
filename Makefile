# The two commands of the README, and a few more. Each target sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Playwright (the browser tests' driver) uses the system's Chromium; never its own download.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: demo test tools lint bench lock clean

# Every install takes the exact versions of requirements.lock (hashes checked), so a fresh
# clone gets what the suite last passed with; `make lock` refreshes the lock on purpose.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## demo: services, simulated wearables, alerts flowing; prints the console URL. Ctrl-C stops.
demo: $(STAMP)
	$(BIN)/anxin demo

## test: lint, types, then the whole suite against the real PostgreSQL and Mosquitto.
test: $(STAMP) tools
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# tools: promtool (Debian's prometheus package) for tests/deploy, and chromium (with a CJK
# font for the screenshots) for the browser tests of the screens in tests/web, which
# Playwright drives without downloading a browser of its own. Installed when missing and this
# is a Debian machine run as root; elsewhere install them yourself: the tests that need them
# skip without them, and fail without them in CI (CI=true).
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool not found: install Debian's prometheus package for tests/deploy"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei >/dev/null; \
	  else echo "chromium not found: install Debian's chromium package for tests/web"; fi; }

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/detectors.py
	$(BIN)/python bench/ingest.py

## lock: re-resolve every dependency to its newest allowed version and write requirements.lock.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra embedded --extra train --generate-hashes \
		--python-version 3.11 --universal --quiet -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
