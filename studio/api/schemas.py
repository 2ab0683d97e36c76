"""Request shapes of the OpenAI-compatible API, the error body every route answers with, and the error responses
the OpenAPI document lists. Sampling ranges are not repeated here: they are checked by
:class:`studio.inference.params.SamplingParams`, the one schema the UI uses too."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from studio.inference.base import ChatMessage

_SURROGATE = re.compile("[\ud800-\udfff]")


def _find_surrogate(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path of the first string (or key) in parsed JSON that holds a lone surrogate, else None."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _SURROGATE.search(key):
                return (*path, key.encode("utf-8", "backslashreplace").decode("ascii", "replace"))
            found = _find_surrogate(item, (*path, str(key)))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_surrogate(item, (*path, str(index)))
            if found is not None:
                return found
    return None


class RequestBody(BaseModel):
    """Base of every JSON request body: unknown fields are refused, and so is text that is not valid Unicode.

    JSON may spell a lone UTF-16 surrogate (``"\\ud800"``); Python parses it into a ``str`` that cannot be
    encoded, tokenised or stored, so it is refused up front as a 400 naming the field."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        path = _find_surrogate(data)
        if path is not None:
            param = ".".join(path) or "body"
            raise PydanticCustomError(
                "lone_surrogate",
                "text holds a lone surrogate, which is not valid Unicode",
                {"param": param},
            )
        return data


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong and what to do about it.")
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, server_error, ...")
    param: str | None = Field(None, description="The request field at fault, when one is.")
    code: str | None = Field(None, description="A machine-readable code: model_not_found, rate_limit_exceeded, ...")


class ErrorResponse(BaseModel):
    """Every error answer, OpenAI's shape."""

    error: ErrorDetail


def server_error_body(reference: str) -> dict[str, Any]:
    """The body of a 500 for a server bug: no traceback, no paths; ``reference`` finds it in the server log."""
    return {
        "error": {
            "message": f"internal server error (reference {reference}; the server log has the details)",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if headers:
        out["headers"] = headers
    return out


# The error responses the OpenAPI document lists (FastAPI's own 422 is replaced by 400 in studio.api.server).
KEYED_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error(
        "Missing or wrong API key (when STUDIO_API_KEY is set).", {"WWW-Authenticate": {"schema": {"type": "string"}}}
    ),
}
GENERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: _error("Unknown model or alias."),
    413: _error("The body (STUDIO_MAX_BODY_BYTES) or the prompt (STUDIO_MAX_PROMPT_CHARS) is over its limit."),
    429: _error(
        "The model's running and waiting places are all taken (STUDIO_MAX_RUNNING_PER_MODEL, "
        "STUDIO_MAX_QUEUED_PER_MODEL); try again after Retry-After seconds.",
        {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}},
    ),
    503: _error("The server is shutting down and takes no new generations."),
}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def to_message(self) -> ChatMessage:
        if self.content is None:
            text = ""
        elif isinstance(self.content, str):
            text = self.content
        else:
            unsupported = [p.type for p in self.content if p.type != "text"]
            if unsupported:
                from studio.errors import ValidationError

                raise ValidationError(
                    f"message content parts of type {unsupported[0]!r} are not supported; only 'text'",
                    param="messages",
                )
            text = "".join(p.text or "" for p in self.content)
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _SamplingFields(RequestBody):
    """Fields shared by chat and text completions; ranges are enforced by SamplingParams."""

    model: str = Field(min_length=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Whetstone extension (send with the openai SDK's extra_body): filter this request with the safety policy
    # (true/false); left out, filtering is on only for aliases that carry a safety_policy
    safety: bool | None = None

    @field_validator("n")
    @classmethod
    def _only_one(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported; send several requests for several replies")
        return v

    def sampling_overrides(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "repetition_penalty": self.repetition_penalty,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "stop": self.stop,
            "seed": self.seed,
        }


class ChatCompletionRequest(_SamplingFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "default", "messages": [{"role": "user", "content": "Name a prime number."}]}]
        }
    )

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None

    def sampling_overrides(self) -> dict[str, Any]:
        out = super().sampling_overrides()
        if self.max_completion_tokens is not None:
            out["max_tokens"] = self.max_completion_tokens
        out["logprobs"] = self.logprobs
        if self.top_logprobs is not None:
            out["top_logprobs"] = self.top_logprobs
        return out


class CompletionRequest(_SamplingFields):
    model_config = ConfigDict(json_schema_extra={"examples": [{"model": "default", "prompt": "2, 3, 5, 7,"}]})

    prompt: str | list[str]
    logprobs: int | None = None  # legacy API: number of alternatives per token (0-20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def sampling_overrides(self) -> dict[str, Any]:
        out = super().sampling_overrides()
        if self.logprobs is not None:
            out["logprobs"] = True
            out["top_logprobs"] = self.logprobs
        return out
