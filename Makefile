# RoadSeg Studio. Quick start: `make demo` (sets up and runs the sample scene), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests and screenshots render offscreen; `make gui` unsets this (it needs a real display).
export QT_QPA_PLATFORM ?= offscreen

.PHONY: install sysdeps demo test test-fast test-unprivileged gui bench quality lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e '.[gui,test]'
	touch $(STAMP)

# System tools some tests use (QGIS opens our outputs, shellcheck, Xvfb + xdotool for the tests on
# a shown window) and the X11 libraries Qt's xcb platform plugin loads (without them `make gui`
# cannot open a window on a fresh Debian); best effort: as root with apt, missing ones are
# installed, otherwise those tests skip with a reason.
XCBPKGS := libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
  libxcb-randr0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 \
  libgl1 libfontconfig1 libdbus-1-3
SYSPKGS := python3-qgis gdal-bin xvfb xdotool x11-apps shellcheck cmake g++ $(XCBPKGS)
sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null 2>&1 \
	      || echo "note: could not install $$missing; the tests that need them will skip"; fi; fi

test: lint sysdeps
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory test-unprivileged

# The CLI tests once more as an unprivileged user: root ignores file permissions, so a run as
# root alone misses every "Permission denied" (as root: setpriv to nobody; the interpreter's
# parent folders get o+x where nobody could not reach it; see the script)
UNPRIVILEGED_TESTS := tests/test_cli_extract.py tests/test_lean_inference.py
test-unprivileged: install
	$(PY) scripts/run_unprivileged.py $(UNPRIVILEGED_TESTS)

# everything but the tests marked slow (training, full-size exports, real-data runs): a few
# minutes on a 2-core machine
test-fast: lint
	$(PY) -m pytest -q -m "not slow" tests

# ruff (rules in ruff.toml) and the import contracts (setup.cfg); `make test` runs it first
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --config setup.cfg

demo: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m app.demo

# a real window: the offscreen platform exported above is for tests only
gui: install
	env $(if $(filter environment command line,$(origin QT_QPA_PLATFORM)),,-u QT_QPA_PLATFORM) \
	  $(VENV)/bin/roadseg-gui $(ARGS)

bench: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) bench/run_all.py --out docs/benchmarks.md

# docs/quality.md: the bundled model's scores on held-out data (needs ../shared/data)
quality: install
	gsd=$$($(PY) -c "import json; print(json.load(open('resources/models/road_demo.json')).get('gsd_m') or 1.0)"); \
	$(VENV)/bin/roadseg dataset assemble resources/datasets/roads_corpus.yaml --gsd $$gsd \
	    --out $$($(PY) -c "from app.service.demo_data import default_corpus_dir as d; print(d($$gsd))") --overwrite
	$(PY) -m app.service.demo_data evaluate

clean:
	rm -rf $(VENV) build *.egg-info demo_output .pytest_cache .ruff_cache
