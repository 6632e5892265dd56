# dynbook: the two commands of the README's Quick start, and what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: book test setup browser

# Build the book: execute every chapter (fast profile unless PROFILE=full) and render OUT/html.
book: setup
	$(VENV)/bin/dynbook build --profile $(or $(PROFILE),fast) --device $(or $(DEVICE),auto)

# Run the tests: library unit tests, every chapter through the runner with its claims, determinism (nbval),
# the strict book build and a headless-browser check of the rendered pages.
test: setup browser
	$(PY) -m pytest

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	# nngeometry only to compare the Fisher and NTK with it (tests, benchmarks); --no-deps because it lists
	# torchvision, which it never imports and which has no wheel matching the CPU torch 2.13.0 here
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps nngeometry==0.4
	touch $@

# Debian's chromium, for the rendered-page test.
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
