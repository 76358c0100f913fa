# edgekit: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.edgekit-installed
APT_STAMP := $(VENV)/.edgekit-apt
PYTEST_ARGS ?=
# two test workers (tests/conftest.py keeps firmware and device-link tests together on one)
PYTEST_WORKERS ?= 2

export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

# TFLM source trees for the emulated Cortex-M4 (--board qemu-m4, --emulate): a folder of trees next
# to the checkout (CI provides one as test fixtures; a user's own come from --tflm-src or arduino-cli).
# Tests that need a tree skip loudly without one. Firmware objects are cached in EDGEKIT_CACHE.
TFLM_TREES_DIR ?= ../shared/tflm
TFLM_TREES := $(wildcard $(abspath $(TFLM_TREES_DIR))/tflite-micro $(abspath $(TFLM_TREES_DIR))/Chirale_TensorFlowLite)
ifneq ($(TFLM_TREES),)
ifeq ($(origin EDGEKIT_TFLM_SRC),undefined)
export EDGEKIT_TFLM_SRC := $(subst $(eval) ,:,$(strip $(TFLM_TREES)))
endif
endif

# labgrid (board farms, docs/farm.md) lives in a virtualenv of its own: it depends on pyserial-labgrid, a
# fork that installs the same `serial` module as pyserial and would replace it in .venv. edgekit drives
# its labgrid-client program; the tests also run its coordinator and exporter from there.
LG_VENV  ?= .venv-labgrid
LABGRID  ?= labgrid==26.0.1
LG_STAMP := $(LG_VENV)/.edgekit-installed
export EDGEKIT_LABGRID_CLIENT ?= $(abspath $(LG_VENV))/bin/labgrid-client

.PHONY: setup system-packages labgrid demo test test-fast bench clean

setup: $(STAMP) $(APT_STAMP) $(LG_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[tf,report,examples,dev,ray]'
	touch $@

# Debian packages (cross compiler, QEMU, sshd, ...) come from tools/apt-packages.txt.
$(APT_STAMP): tools/apt-packages.txt $(VENV)/bin/python
	bash tools/install-system-packages.sh tools/apt-packages.txt
	touch $@

system-packages: $(APT_STAMP)

$(LG_STAMP):
	$(PYTHON) -m venv $(LG_VENV)
	$(LG_VENV)/bin/pip install --quiet '$(LABGRID)'
	touch $@

labgrid: $(LG_STAMP)

demo: setup
	$(PY) examples/digits/run.py --out build/digits

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow and not qemu" $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build dist .pytest_cache
