# Two entry points for a fresh machine (see README): `make run` and `make test`.
# Each builds the virtual environment it needs; torch's CPU wheel goes in first so that
# no resolver pulls the CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: run test lint venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# PyAudio (the [mic] extra) builds against PortAudio's headers: it is added when they are
# present (.ci/run installs portaudio19-dev), so that a machine without them still gets a venv.
comma := ,
EXTRAS := dev,train$(if $(wildcard /usr/include/portaudio.h),$(comma)mic)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/avemo-edge run --source sample --output text

lint: venv
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
