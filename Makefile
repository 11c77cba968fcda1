# The two commands a newcomer runs: `make demo` and `make test`. Each creates its own
# virtual environment (.venv) and installs everything into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test screenshots bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,grpc]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/incident-detector demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The README's pictures of the dashboard (docs/screenshots/*.png), taken by the browser tests in
# Debian's chromium; `make test` takes them too, but into a temporary folder.
screenshots: $(STAMP)
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
