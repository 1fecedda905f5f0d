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
# present (`make test` installs portaudio19-dev where it can), so that a machine without them
# still gets a venv. The stamp names the extras: once the headers appear, the next make adds [mic].
comma := ,
EXTRAS := dev,train$(if $(wildcard /usr/include/portaudio.h),$(comma)mic)
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)

run: venv
	$(BIN)/avemo-edge run --source sample --output text

lint: venv
	$(BIN)/ruff check .

# First the Debian packages the tests use (tests/system-deps.sh: installed as root with apt-get,
# otherwise it says which tests will skip and the command that enables them; never fails), then
# the venv in a fresh make, so that it sees PortAudio's headers if they were just installed.
test:
	@sh tests/system-deps.sh
	@$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
