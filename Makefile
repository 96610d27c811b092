# `make test` is the one test command: it builds .venv from scratch when needed, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test install clean-venv

test: $(VENV)/.installed
	@echo "==> pytest: ruff and mypy on the runtime first, then every test" >&2
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-dev.sh
	@echo "==> building $(VENV) (scripts/install-dev.sh; the first time takes several minutes)" >&2
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install-dev.sh
	touch $@

clean-venv:
	rm -rf $(VENV)
