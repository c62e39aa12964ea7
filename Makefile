# From a fresh clone (Python >= 3.11): `make run` installs gradflow and runs the quick start,
# `make test` installs it and runs the test suite (what CI runs).
#
# torch: `pip install torch` from PyPI gives the CUDA build on Linux (it also runs on a CPU, but
# pulls in the NVIDIA CUDA libraries). CPU-only machines can take the smaller CPU build instead:
#     make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
# CUDA users keep the default, or name the index of their CUDA version (.../whl/cu126).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin

.PHONY: install run test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev,cluster]"
	@# the probes' fused CPU kernels compiled into numba's cache now (~3 s), rather than by the first long run
	$(BIN)/python -c "from gradflow.probes.core import load_fused; load_fused(required=False)"
	touch $@

run: install
	$(BIN)/gradflow run

test: install
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder
