"""What a user asks for when deploying: one pydantic schema per kind, shared by the CLI, the REST API and the UI
form (``extra="forbid"``; each field documented once).

Names are checked here because they become parts of file names and URLs: a deployment name, an adapter name
after ``adapter:`` and an export name after ``export:`` are single names (``[A-Za-z0-9][A-Za-z0-9_.-]*``, at
most 64 characters), never paths such as ``../x``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from studio.errors import ValidationError
from studio.inference.params import validation_error_from_pydantic

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

LocalEngine = Literal["auto", "transformers", "llamacpp", "onnxruntime", "vllm"]
LOCAL_ENGINES: tuple[str, ...] = ("auto", "transformers", "llamacpp", "onnxruntime", "vllm")

#: the ports tried, in order, when a deployment names none
AUTO_PORTS = range(8100, 8200)


def check_name(value: str, *, param: str = "name", what: str = "a deployment name") -> str:
    """``value`` stripped, when it is a single safe name; else a ValidationError naming ``param``."""
    text = (value or "").strip()
    if not NAME_RE.match(text) or ".." in text:
        raise ValidationError(
            f"'{param}': {text!r} is not {what}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit (no '/', no '..')",
            param=param,
        )
    return text


def _name_value(value: str | None, what: str) -> str | None:
    if value is None or not value.strip():
        return None
    if not NAME_RE.match(value.strip()) or ".." in value:
        raise ValueError(f"{value!r} is not {what}: use 1-64 letters, digits, '_', '.' or '-' (no '/', no '..')")
    return value.strip()


def _deployment_name(value: str | None) -> str | None:
    out = _name_value(value, "a deployment name")
    if out == "default":
        raise ValueError("'default' is reserved for the configured default model")
    return out


class DeploymentCreate(BaseModel):
    """A local deployment: TARGET served by its own process on ``host``:``port``."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        min_length=1,
        max_length=1024,
        description="What to serve: 'default', a user alias, a model id or a model path (as everywhere), "
        "'adapter:NAME' (an adapter under STUDIO_HOME/adapters, on the base it was trained on) or 'export:NAME' "
        "(an export folder under STUDIO_HOME/exports: an HF folder, a .gguf file or model.onnx).",
    )
    adapter: str | None = Field(
        None, max_length=1024, description="A PEFT adapter to serve on top of the model (a name under adapters/)."
    )
    engine: LocalEngine = Field(
        "auto",
        description="auto, transformers, llamacpp (GGUF files), onnxruntime (ONNX exports) or vllm "
        "(its own OpenAI server).",
    )
    name: str | None = Field(None, description="Unique name (default: from the target and the port).")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=255,
        description="Interface to bind; another than loopback needs STUDIO_API_KEY (or STUDIO_INSECURE=1).",
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="Port 1-65535 (default: the first free one from 8100 to 8199)."
    )
    start_timeout_s: float = Field(
        300.0, ge=5, le=3600, description="Seconds to wait for the first healthy answer before it is unhealthy."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return _deployment_name(v)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        v = v.strip()
        if not v or "\x00" in v:
            raise ValueError("give a model, an alias, adapter:NAME or export:NAME")
        prefix, sep, rest = v.partition(":")
        if sep and prefix in ("adapter", "export") and _name_value(rest, f"an {prefix} name") is None:
            raise ValueError(f"give a name after '{prefix}:'")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip()
        if not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", v):
            raise ValueError(f"{v!r} is not a host name or address")
        return v


class RemoteDeploymentCreate(BaseModel):
    """A cloud-hosted (or any other) OpenAI-compatible endpoint registered as a deployment."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique name of the deployment.")
    base_url: str = Field(
        max_length=1024,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="The server's OpenAI base URL, e.g. https://api.example.com/v1.",
    )
    api_key_env: str | None = Field(
        None,
        pattern=ENV_NAME_PATTERN,
        description="Name of the environment variable holding the API key (the key itself is never stored).",
    )
    model: str | None = Field(
        None, max_length=512, description="The model name to request (default: the first one the server lists)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        out = _deployment_name(v)
        if out is None:
            raise ValueError("give a name")
        return out

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return v.strip().rstrip("/")


def parse_create(data: dict[str, Any] | DeploymentCreate) -> DeploymentCreate:
    """``data`` as a validated :class:`DeploymentCreate`; the first problem as a ValidationError naming its field."""
    if isinstance(data, DeploymentCreate):
        return data
    try:
        return DeploymentCreate.model_validate(data)
    except PydanticValidationError as exc:
        raise validation_error_from_pydantic(exc, model=DeploymentCreate) from None


def parse_remote(data: dict[str, Any] | RemoteDeploymentCreate) -> RemoteDeploymentCreate:
    """``data`` as a validated :class:`RemoteDeploymentCreate` (first problem as a ValidationError)."""
    if isinstance(data, RemoteDeploymentCreate):
        return data
    try:
        return RemoteDeploymentCreate.model_validate(data)
    except PydanticValidationError as exc:
        raise validation_error_from_pydantic(exc, model=RemoteDeploymentCreate) from None
