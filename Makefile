# The two commands a newcomer runs: `make demo` and `make test`. Each creates its own
# virtual environment (.venv) and installs into it what it needs: the demo the package alone,
# the tests the package with its test tools and the gRPC and PostgreSQL extras.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# One stamp per install, so that `make demo` on a fresh machine does not pull the test tools.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
# pytest-xdist's workers: two per core. The suite mostly waits (loopback servers, daemon
# processes, Chromium), so on 2 cores 4 workers took 137 s where 2 took 225-241 s.
TEST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc 2>/dev/null || echo 1) )))

.PHONY: demo test screenshots bench docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The test install holds the demo's too.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,grpc,postgres]'
	touch $@ $(DEMO_STAMP)

install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/incident-detector demo

# In parallel (pytest-xdist); each browser module stays on one worker (--dist loadgroup).
# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE, set in
# many container images): the suite starts the daemon as a process dozens of times, and each
# would compile the whole package again; pytest likewise caches its rewritten test modules.
test: $(TEST_STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The README's pictures of the dashboard (docs/screenshots/*.png), taken by the browser tests in
# Debian's chromium; `make test` takes them too, but into a temporary folder.
screenshots: $(TEST_STAMP)
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser

bench: $(TEST_STAMP)
	$(BIN)/python -m bench

# The configuration reference, written from Settings; tests/test_config_reference.py fails while
# the committed docs/configuration.md differs from it.
docs: $(DEMO_STAMP)
	$(BIN)/python -m incident_detector.config_reference

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
