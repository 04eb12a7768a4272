# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TFLITE_STAMP := $(VENV)/.installed-tflite

.PHONY: demo test lint env clean

# torch==2.13.0 is pinned in pyproject.toml and installed in the same resolve as everything else, so
# pip takes the CPU build on this disk instead of a CUDA wheel.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The tests also cover TFLite, TFLite Micro, ExecuTorch and ncnn export and the search: the optional [tflite] (several
# hundred MB), [tflm], [executorch] (about 1.6 GB), [ncnn] and [search] extras, installed in one resolve with the pinned
# torch so pip never swaps it for a CUDA build.
$(TFLITE_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev,tflite,tflm,executorch,ncnn,search]"
	touch $(TFLITE_STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeshrink compress --task digits-cnn --recipe deep-compression --out runs/demo

# One pytest-xdist worker per CPU (at most 4), each test module on one worker so its trained fixtures are
# built once; tests/conftest.py gives each worker one torch thread.
test: $(TFLITE_STAMP)
	$(BIN)/python -m pytest -n logical --maxprocesses 4 --dist loadscope

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache .hypothesis
