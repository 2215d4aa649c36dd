# RoadSeg Studio. Quick start: `make demo` (sets up and runs the sample scene), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export QT_QPA_PLATFORM ?= offscreen

.PHONY: install demo test test-fast gui bench lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e '.[gui,test]'
	touch $(STAMP)

test: install
	$(VENV)/bin/lint-imports --config setup.cfg
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

lint: install
	$(VENV)/bin/lint-imports --config setup.cfg

demo: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m app.demo

gui: install
	$(VENV)/bin/roadseg-gui $(ARGS)

bench: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output .pytest_cache
