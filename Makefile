# Two commands on a fresh machine with Python >= 3.11 and pip:
#   make demo   create .venv, install knifejax with its test extra, run the main job
#   make test   create .venv, install knifejax with its test extra, run the whole test suite
#   make test-fast   the same, without the tests marked slow
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/installed
	$(PY) -m experiments.sweep_lr

test: $(VENV)/installed
	$(PY) -m pytest

test-fast: $(VENV)/installed
	$(PY) -m pytest -m "not slow"
