"""A Docker build context per exported model: a CPU image and a GPU image that serve its OpenAI API.

Written into the export folder::

    model/                         the merged model (safetensors, tokenizer, chat template)
    gguf/<name>.<QUANT>.gguf       with a quant: the GGUF file the CPU image serves
    Dockerfile.cpu                 llama.cpp's server on the GGUF file (with a quant), else ``transformers serve``
    Dockerfile.gpu                 vLLM's OpenAI server on ``model/`` (CUDA)
    Dockerfile.cpu.dockerignore    per-Dockerfile ignore files (BuildKit): each image copies only its weights
    Dockerfile.gpu.dockerignore
    README.md                      the ``docker build`` and ``docker run`` lines

Images are not built by the export: a build pulls base images from a registry, which the machines this studio is
made on cannot reach, and needs a running container engine (:func:`container_engine` says whether one is there).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CPU_PORT_LLAMACPP = 8080
CPU_PORT_TRANSFORMERS = 8000
GPU_PORT = 8000
LLAMACPP_IMAGE = "ghcr.io/ggml-org/llama.cpp:server"
PYTHON_IMAGE = "python:3.11-slim"
VLLM_IMAGE = "vllm/vllm-openai:v0.33.0"
TORCH_VERSION = "2.13.0"
TRANSFORMERS_VERSION = "5.19.0"


def container_engine() -> tuple[str | None, str]:
    """(the container CLI found, or None; a sentence saying whether it can build here)."""
    for cli in ("docker", "podman"):
        path = shutil.which(cli)
        if path is None:
            continue
        try:
            probe = subprocess.run([path, "info"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return cli, f"{cli} is installed but `{cli} info` did not answer ({exc}): images were not built"
        if probe.returncode != 0:
            why = " ".join((probe.stderr or probe.stdout).split())[:200]
            return cli, f"{cli} is installed but cannot run here ({why}): images were not built"
        return cli, f"{cli} can run here; build the images with the lines in README.md (base images are pulled)"
    return None, "no container engine (docker, podman) on this machine: images were not built"


def image_tag(name: str, variant: str) -> str:
    """``whetstone/<name>:<variant>`` (Docker wants lower-case repository names)."""
    return f"whetstone/{name.lower()}:{variant}"


def dockerfile_cpu(name: str, gguf_file: Path | None) -> str:
    """The CPU image: llama.cpp's server on the GGUF file, or ``transformers serve`` on the merged model."""
    if gguf_file is not None:
        return (
            f"# {name} on CPU: llama.cpp's OpenAI-compatible server (llama-server) on the GGUF export\n"
            f"FROM {LLAMACPP_IMAGE}\n"
            f"COPY gguf/{gguf_file.name} /models/{gguf_file.name}\n"
            f"EXPOSE {CPU_PORT_LLAMACPP}\n"
            f'CMD ["-m", "/models/{gguf_file.name}", "--alias", "{name}", "--host", "0.0.0.0", '
            f'"--port", "{CPU_PORT_LLAMACPP}", "--jinja"]\n'
        )
    return (
        f"# {name} on CPU: transformers' OpenAI-compatible server on the merged model\n"
        f"FROM {PYTHON_IMAGE}\n"
        "ENV OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1\n"
        f"RUN pip install --no-cache-dir torch=={TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu \\\n"
        f' && pip install --no-cache-dir torch=={TORCH_VERSION} "transformers[serving]=={TRANSFORMERS_VERSION}"\n'
        "COPY model /model\n"
        f"EXPOSE {CPU_PORT_TRANSFORMERS}\n"
        f'CMD ["transformers", "serve", "/model", "--host", "0.0.0.0", "--port", "{CPU_PORT_TRANSFORMERS}"]\n'
    )


def dockerfile_gpu(name: str) -> str:
    """The GPU image: vLLM's OpenAI server on the merged model (needs the NVIDIA container toolkit)."""
    return (
        f"# {name} on an NVIDIA GPU: vLLM's OpenAI-compatible server on the merged model\n"
        f"FROM {VLLM_IMAGE}\n"
        "COPY model /model\n"
        f"EXPOSE {GPU_PORT}\n"
        'ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]\n'
        f'CMD ["--model", "/model", "--served-model-name", "{name}", "--host", "0.0.0.0", "--port", "{GPU_PORT}"]\n'
    )


def run_lines(name: str, gguf_file: Path | None) -> dict[str, str]:
    """``docker build`` + ``docker run`` per variant (run in the export folder)."""
    cpu_port = CPU_PORT_LLAMACPP if gguf_file is not None else CPU_PORT_TRANSFORMERS
    return {
        "cpu": f"docker build -f Dockerfile.cpu -t {image_tag(name, 'cpu')} . && "
        f"docker run --rm -p {cpu_port}:{cpu_port} {image_tag(name, 'cpu')}",
        "gpu": f"docker build -f Dockerfile.gpu -t {image_tag(name, 'gpu')} . && "
        f"docker run --rm --gpus all -p {GPU_PORT}:{GPU_PORT} {image_tag(name, 'gpu')}",
    }


def write_docker_context(folder: Path, name: str, model_dir: Path, gguf_file: Path | None) -> list[str]:
    """Write the Dockerfiles, ignore files and README into ``folder`` (which already holds ``model/`` and, with a
    quant, ``gguf/``). Returns notes for the job's log and result (whether images could be built here)."""
    del model_dir  # the Dockerfiles copy it by its place in the context
    (folder / "Dockerfile.cpu").write_text(dockerfile_cpu(name, gguf_file), encoding="utf-8")
    (folder / "Dockerfile.gpu").write_text(dockerfile_gpu(name), encoding="utf-8")
    cpu_ignore = "model/\nmanifest.json\n" if gguf_file is not None else "gguf/\nmanifest.json\n"
    (folder / "Dockerfile.cpu.dockerignore").write_text(cpu_ignore, encoding="utf-8")
    (folder / "Dockerfile.gpu.dockerignore").write_text("gguf/\nmanifest.json\n", encoding="utf-8")
    lines = run_lines(name, gguf_file)
    _, engine_note = container_engine()
    cpu_engine = "llama.cpp (llama-server) on the GGUF file" if gguf_file is not None else "transformers serve"
    port = CPU_PORT_LLAMACPP if gguf_file is not None else CPU_PORT_TRANSFORMERS
    readme = f"""# {name}: Docker images serving its OpenAI API

Made by Whetstone Studio (`studio export docker`). Run these in this folder:

CPU ({cpu_engine}, port {port}):

```sh
{lines["cpu"]}
```

GPU (vLLM, port {GPU_PORT}; needs the NVIDIA container toolkit):

```sh
{lines["gpu"]}
```

Then `curl http://localhost:PORT/v1/models`, or use it from the studio through the `remote` engine
(`studio deploy add-remote {name} http://localhost:PORT/v1`).

Each Dockerfile has its own ignore file (`Dockerfile.*.dockerignore`, read by BuildKit) so each image copies only the
weights it serves. Built here? {engine_note}.
"""
    (folder / "README.md").write_text(readme, encoding="utf-8")
    return [engine_note, f"cpu: {lines['cpu']}", f"gpu: {lines['gpu']}"]
