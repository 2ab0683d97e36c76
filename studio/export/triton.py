"""A Triton Inference Server model repository for its vLLM backend, holding the (merged) model's weights.

Layout written into the export folder::

    model_repository/<name>/config.pbtxt       backend: "vllm" (the model's config for Triton)
    model_repository/<name>/1/model.json       the vLLM engine arguments ("model": the weights below)
    model_repository/<name>/1/model/           the merged model: safetensors + tokenizer + chat template
    README.md                                  how Triton serves it, and how the studio talks to it

Triton itself is not installable here (no ``tritonserver`` on PyPI; it ships as the NGC container
``nvcr.io/nvidia/tritonserver:<yy.mm>-vllm-python-py3`` and needs a CUDA GPU), so the layout is checked by
loading its weights on transformers and comparing greedy answers with the source (see :mod:`studio.export.job`);
serving goes through Triton's OpenAI-compatible frontend, which the studio's ``remote`` engine talks to.
"""

from __future__ import annotations

import json
from pathlib import Path

REPOSITORY_DIR = "model_repository"
WEIGHTS_DIR = "model"
MOUNT = "/models"  # where the README mounts model_repository inside the container
OPENAI_PORT = 9000  # Triton's OpenAI-compatible frontend's default port
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3"


def config_pbtxt(name: str) -> str:
    """``config.pbtxt`` of a vLLM-backend model: decoupled (streaming) and one model instance (vLLM batches)."""
    return (
        f'name: "{name}"\n'
        'backend: "vllm"\n'
        "model_transaction_policy {\n  decoupled: true\n}\n"
        "instance_group [\n  {\n    count: 1\n    kind: KIND_MODEL\n  }\n]\n"
    )


def model_json(name: str) -> dict[str, object]:
    """The vLLM engine arguments Triton's vLLM backend reads from ``1/model.json``."""
    return {
        "model": f"{MOUNT}/{name}/1/{WEIGHTS_DIR}",
        "served_model_name": name,
        "disable_log_requests": True,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
    }


def readme(name: str) -> str:
    """How Triton serves the repository, and how to use it from the studio."""
    return f"""# {name}: Triton Inference Server model repository (vLLM backend)

Made by Whetstone Studio (`studio export triton`). `model_repository/{name}/1/{WEIGHTS_DIR}/` holds the merged
model (safetensors, tokenizer, chat template); `config.pbtxt` selects Triton's vLLM backend and `1/model.json`
gives vLLM its engine arguments (edit `gpu_memory_utilization` and `max_model_len` for your GPU).

Triton is **not installable on the machine that made this export** (there is no `tritonserver` package on PyPI;
Triton ships as an NGC container and its vLLM backend needs a CUDA GPU), so this layout was checked by loading
the weights in `1/{WEIGHTS_DIR}` on transformers and comparing their greedy answers with the source model's
(see `manifest.json`, `verification`), not by running Triton.

## Serve it

```sh
docker run --rm --gpus all --shm-size=1g -p 8000:8000 -p {OPENAI_PORT}:{OPENAI_PORT} \\
  -v "$PWD/{REPOSITORY_DIR}:{MOUNT}" {TRITON_IMAGE} \\
  python3 /opt/tritonserver/python/openai/openai_frontend/main.py \\
    --model-repository {MOUNT} --tokenizer {MOUNT}/{name}/1/{WEIGHTS_DIR}
```

That starts Triton with its OpenAI-compatible frontend on port {OPENAI_PORT} (`/v1/chat/completions`,
`/v1/models`). Plain Triton (KServe protocol on port 8000) is
`tritonserver --model-repository {MOUNT}` in the same container.

## Use it from the studio

Point the `remote` engine at the frontend, e.g. `studio deploy add-remote triton-{name} http://HOST:{OPENAI_PORT}/v1`
(or an alias with `context_params: {{engine: remote}}` and that URL), and pick it in the Playground or Compare.
"""


def write_triton_repository(folder: Path, name: str) -> Path:
    """Write the repository's ``config.pbtxt``, ``model.json`` and README into ``folder``; returns the folder the
    merged weights go into (``model_repository/<name>/1/model``)."""
    model = folder / REPOSITORY_DIR / name
    version = model / "1"
    weights = version / WEIGHTS_DIR
    weights.mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(config_pbtxt(name), encoding="utf-8")
    (version / "model.json").write_text(json.dumps(model_json(name), indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(readme(name), encoding="utf-8")
    return weights
