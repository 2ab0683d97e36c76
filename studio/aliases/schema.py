"""The alias file schema (ARCHITECTURE.md "Alias file"): one pydantic model for the YAML file, the UI form,
the CLI and the API. Ranges of request parameters are those of :class:`SamplingParams`, checked in
:func:`validate_alias` so an error names ``request_params.<field>``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studio.errors import StudioError
from studio.paths import check_user_path_text

ALIAS_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")

Engine = Literal["auto", "transformers", "vllm", "llamacpp", "onnxruntime", "remote"]
KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]


class ContextParams(BaseModel):
    """Performance & Resources: how the model is loaded and served."""

    model_config = ConfigDict(extra="forbid")

    n_threads: int | None = Field(None, ge=1, le=512, description="CPU threads used for computation.")
    n_ctx: int | None = Field(None, ge=16, le=1_048_576, description="Context window size in tokens.")
    n_parallel: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Requests served concurrently (transformers: generations that take turns per decode step, "
        "default 8; more wait for a slot).",
    )
    n_predict: int | None = Field(
        None, ge=-1, le=1_048_576, description="Most tokens to predict per request (-1 = until the context is full)."
    )
    n_keep: int | None = Field(
        None, ge=0, le=1_048_576, description="Tokens of the initial prompt kept when the context overflows."
    )
    n_seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Seed used to initialise the context.")
    engine: Engine | None = Field(
        None, description="Inference engine: auto, transformers, vllm, llamacpp, onnxruntime, remote."
    )
    dtype: Dtype | None = Field(None, description="Weight precision: auto, bfloat16, float16, float32.")
    base_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="engine remote: base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.",
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="engine remote: name of the environment variable holding the server's API key.",
    )
    # llama.cpp (engine llamacpp) only
    n_batch: int | None = Field(
        None, ge=1, le=65_536, description="llama.cpp: prompt tokens processed per batch (default 512)."
    )
    flash_attn: bool | None = Field(None, description="llama.cpp: use flash attention.")
    kv_cache_type: KvCacheType | None = Field(
        None, description="llama.cpp: KV cache precision (f16 default; q8_0/q4_0 save memory, need flash_attn)."
    )
    n_gpu_layers: int | None = Field(
        None, ge=-1, le=10_000, description="llama.cpp: layers offloaded to the GPU (-1 = all, 0 = CPU only)."
    )
    use_mlock: bool | None = Field(None, description="llama.cpp: lock the weights in RAM (no swapping).")
    use_mmap: bool | None = Field(None, description="llama.cpp: memory-map the GGUF file (default on).")

    def llamacpp_options(self) -> dict[str, Any]:
        """The set llama.cpp-only fields (n_batch, flash_attn, kv_cache_type, n_gpu_layers, use_mlock, use_mmap)
        and n_keep, by our names; :mod:`studio.inference.llamacpp_backend` maps them onto llama.cpp's."""
        names = ("n_batch", "flash_attn", "kv_cache_type", "n_gpu_layers", "use_mlock", "use_mmap", "n_keep")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class RequestParams(BaseModel):
    """Generation Control: defaults for every request made through this alias."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256, description="End-user identifier sent with requests.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def sampling_overrides(self) -> dict[str, Any]:
        """The set fields that map onto SamplingParams (``user`` is metadata, not sampling)."""
        return {k: v for k, v in self.model_dump(exclude={"user"}).items() if v is not None}


class AliasConfig(BaseModel):
    """One alias file. ``repo`` (+ ``filename`` for GGUF files) names the model; ``repo`` may also be a
    registry id or a local path."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(description="Unique name used as the `model` in requests.")
    repo: str = Field(min_length=1, description="Model repository id, registry id or local path.")
    filename: str | None = Field(None, description="GGUF file inside the repository (quantization).")
    snapshot: str | None = Field(None, description="Hugging Face cache snapshot (commit) to use.")
    chat_template: str | None = Field(
        None,
        description="A built-in template id; the name of your own .jinja file in STUDIO_HOME/chat_templates, or a "
        "path to one in STUDIO_HOME or the model folders; 'embedded' (the model's own); or a repo id with a "
        "tokenizer_config.",
    )
    context_params: ContextParams = Field(default_factory=ContextParams)
    request_params: RequestParams = Field(default_factory=RequestParams)
    owner: str | None = Field(
        None,
        max_length=64,
        description="The studio user who made the alias (set by the studio when users are configured); only they "
        "and admins may change it.",
    )
    private: bool = Field(
        False, description="Only the owner and admins see and use the alias (else the team may use it, read-only)."
    )
    safety_policy: str | None = Field(
        None,
        max_length=1024,
        description="Safety policy for this alias: 'default', a name under STUDIO_HOME/safety/ or a YAML path in "
        "that folder (or the shipped configs/safety/). Requests through the alias are filtered unless they turn "
        "filtering off.",
    )

    @field_validator("safety_policy")
    @classmethod
    def _policy_reference(cls, v: str | None) -> str | None:
        # The folder check needs STUDIO_HOME: PolicyStore.read_path does it each time the alias is used. Here, what
        # can be refused from the text alone (NUL, '~', over-long names, a path that is not a .yaml/.yml file).
        if v is None or not v.strip():
            return None
        try:
            text = check_user_path_text(v, param="safety_policy")
        except StudioError as exc:
            raise ValueError(exc.message.removeprefix("'safety_policy'").lstrip(": ")) from None
        if ("/" in text or "\\" in text) and not text.lower().endswith((".yaml", ".yml")):
            raise ValueError("a policy path must name a .yaml or .yml file (or give a policy name)")
        return text

    @field_validator("alias")
    @classmethod
    def _alias_name(cls, v: str) -> str:
        v = v.strip()
        if not ALIAS_NAME_RE.match(v):
            raise ValueError("must be 1-256 characters, without control characters")
        if v == "default":
            raise ValueError("'default' is reserved for the configured default model")
        return v

    def to_yaml_dict(self) -> dict[str, Any]:
        """The file's content: unset fields and empty parameter groups left out, key order as documented."""
        data: dict[str, Any] = {"alias": self.alias, "repo": self.repo}
        for key in ("filename", "snapshot", "chat_template", "safety_policy", "owner"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.private:
            data["private"] = True
        ctx = self.context_params.model_dump(exclude_none=True)
        req = self.request_params.model_dump(exclude_none=True)
        if ctx:
            data["context_params"] = ctx
        if req:
            data["request_params"] = req
        return data
