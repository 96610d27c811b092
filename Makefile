# `make test` is the one test command: it builds .venv from scratch when needed, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test install clean-venv

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-dev.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install-dev.sh
	touch $@

clean-venv:
	rm -rf $(VENV)
