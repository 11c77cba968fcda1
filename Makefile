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

# Installs with uv when it can be had: it downloads in parallel and compiles the bytecode on
# every core: with the virtual environment, the test install took 13 s on a fresh clone (uv's
# cache empty) where pip took 22 s. Where uv cannot be installed or fails, pip installs the
# same requirements.
define install
	if $(BIN)/python -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1; then \
	    $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode $(1) && exit 0; \
	    echo "make: uv could not install $(1); pip will" >&2; \
	fi; \
	$(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet $(1)
endef

DEMO_REQUIREMENTS := -e .
TEST_REQUIREMENTS := -e '.[test,grpc,postgres]'

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(call install,$(DEMO_REQUIREMENTS))
	touch $@

# The test install holds the demo's too.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(call install,$(TEST_REQUIREMENTS))
	touch $@ $(DEMO_STAMP)

install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/incident-detector demo

# In parallel (pytest-xdist); each browser module stays on one worker (--dist loadgroup).
# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE, set in
# many container images): the suite starts the daemon as a process dozens of times, and each
# would compile the whole package again; pytest likewise caches its rewritten test modules.
# On a fresh checkout there is none yet, and every worker would compile the package and
# rewrite every test module's asserts at the same moment: two processes first do it once,
# one half of the test files each (about 5 s; a clean clone's suite then took about 10 s less).
# Their failures are the suite's to report, so they are not checked here.
TEST_FILES := $(sort $(wildcard tests/test_*.py tests/*/test_*.py))
HALF := $(shell echo $$(( $(words $(TEST_FILES)) / 2 )))
test: $(TEST_STAMP)
	@echo "Compiling the package and the test modules once, then the suite on $(TEST_WORKERS) workers"
	@export PYTHONDONTWRITEBYTECODE=; \
	{ $(BIN)/python -m compileall -q incident_detector; \
	  $(BIN)/python -m pytest -q --collect-only $(wordlist 1,$(HALF),$(TEST_FILES)); \
	} >/dev/null 2>&1 & \
	$(BIN)/python -m pytest -q --collect-only \
	    $(wordlist $(shell echo $$(( $(HALF) + 1 ))),$(words $(TEST_FILES)),$(TEST_FILES)) \
	    >/dev/null 2>&1; \
	wait
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
