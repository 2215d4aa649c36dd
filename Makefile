# RoadSeg Studio. Quick start: `make demo` (sets up and runs the sample scene), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export QT_QPA_PLATFORM ?= offscreen

.PHONY: install sysdeps demo test test-fast test-unprivileged gui bench quality lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e '.[gui,test]'
	touch $(STAMP)

# System tools some tests use (QGIS opens our outputs, shellcheck, Xvfb for screenshots); best
# effort: as root with apt, missing ones are installed, otherwise those tests skip with a reason.
SYSPKGS := python3-qgis gdal-bin xvfb shellcheck cmake g++
sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null 2>&1 \
	      || echo "note: could not install $$missing; the tests that need them will skip"; fi; fi

test: install sysdeps
	$(VENV)/bin/lint-imports --config setup.cfg
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory test-unprivileged

# The CLI tests once more as an unprivileged user: root ignores file permissions, so a run as
# root alone misses every "Permission denied" (as root: setpriv to nobody; the interpreter's
# parent folders get o+x where nobody could not reach it; see the script)
UNPRIVILEGED_TESTS := tests/test_cli_extract.py tests/test_lean_inference.py
test-unprivileged: install
	$(PY) scripts/run_unprivileged.py $(UNPRIVILEGED_TESTS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

lint: install
	$(VENV)/bin/lint-imports --config setup.cfg

demo: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m app.demo

gui: install
	$(VENV)/bin/roadseg-gui $(ARGS)

bench: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) bench/run_all.py --out docs/benchmarks.md

# docs/quality.md: the bundled model's scores on held-out data (needs ../shared/data)
quality: install
	$(PY) -m app.service.demo_data chips --overwrite
	$(PY) -m app.service.demo_data evaluate

clean:
	rm -rf $(VENV) build *.egg-info demo_output .pytest_cache
