# audiogen_lab: `make demo` trains and uses a small codec on the example data; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchaudio==2.11.0
EXAMPLE_DIR ?= dataset/example
export DORA_PACKAGE := audiogen_lab

.PHONY: install system-deps example-data demo test test-fast lint bench clean

install: $(STAMP) system-deps

# Re-runs only when setup.py or requirements.txt change.
$(STAMP): setup.py requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# FluidSynth, a General MIDI SoundFont and espeak-ng for the example data (Debian/Ubuntu, via apt-get).
system-deps:
	@bash scripts/install_system_deps.sh

example-data: install
	$(PY) scripts/build_example_dataset.py --out $(EXAMPLE_DIR)

demo: example-data
	$(PY) scripts/demo.py --dataset $(EXAMPLE_DIR)

test: install
	$(PY) -m pytest tests -q

# Everything but the tests marked slow (training runs, several processes): a quick check while editing.
test-fast: install
	$(PY) -m pytest tests -q -m "not slow"

lint: install
	$(PY) -m ruff check --select E,F,W,B --ignore B905 --line-length 120 audiogen_lab grids scripts tests

bench: install
	$(PY) scripts/bench_compression.py

clean:
	rm -rf $(VENV) *.egg-info
