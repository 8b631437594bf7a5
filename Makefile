# The README's two commands: `make run` (main job on the simulated rig) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?= 60

.PHONY: run test lint soak bench bench-tests selftest train clean broker-check dashboard-deps test-tflite fleet-deps

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## Main job: the whole rig on the simulators, live per-stream figures.
run: $(STAMP)
	$(BIN)/mmme-edge run --sim --duration $(DURATION)

selftest: $(STAMP)
	$(BIN)/mmme-edge selftest --sim

## The test suite (what CI runs). Needs a mosquitto binary; installs it when root.
test: $(STAMP) broker-check dashboard-deps fleet-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	$(MAKE) test-tflite

broker-check:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else \
	    echo "The tests start their own Mosquitto broker: install it first (sudo apt-get install mosquitto)."; exit 1; \
	  fi; }

## The fleet's tests start their own PostgreSQL (initdb) and sshd, and rsync over it.
fleet-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing="$$missing openssh-server"; \
	command -v ssh >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	command -v rsync >/dev/null 2>&1 || missing="$$missing rsync"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "The fleet tests need:$$missing (sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

## The shipped model in the last tflite-runtime (2.14: Python <= 3.11, numpy < 2),
## beside LiteRT with numpy 2 in the main venv.
TFL_VENV ?= .venv-tflite
test-tflite:
	@if $(PY) -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then \
	  [ -x $(TFL_VENV)/bin/python ] || $(PY) -m venv $(TFL_VENV); \
	  $(TFL_VENV)/bin/pip install --quiet 'numpy<2' tflite-runtime==2.14.0 pytest==9.2.0 \
	    pytest-timeout==2.4.0; \
	  PYTHONPATH=. $(TFL_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	    tests/test_fusion_runtime.py; \
	else echo "tflite-runtime 2.14 needs Python <= 3.11: skipped (LiteRT is tested)"; fi

## Headless Chromium + chromedriver (Debian) and Selenium for the dashboard's browser tests.
dashboard-deps: $(STAMP)
	bash dashboard/install-test-deps.sh $(BIN)/python

lint: $(STAMP)
	$(BIN)/ruff check .

## Retrain the shipped fusion model from scratch (seed 0): cohort, LOSO evaluation, int8
## export, model card. TensorFlow lives in its own venv so the rig's stays light.
TRAIN_VENV ?= .venv-train
$(TRAIN_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install --quiet --upgrade pip
	$(TRAIN_VENV)/bin/pip install --quiet -e '.[train]'
	touch $@

train: $(TRAIN_VENV)/.installed
	$(TRAIN_VENV)/bin/python -m models.train --seed 0 --folds 0 --out models/

## Opt-in long runs.
soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -p no:cacheprovider -o addopts=""

bench: $(STAMP) broker-check fleet-deps
	$(BIN)/mmme-hil bench all

bench-tests: $(STAMP)
	$(BIN)/python -m pytest -m bench -s -o addopts=""

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
