"""Prompting in the Playground: use cases, prompt templates, counting, export/import and batch runs.

* **Use cases** (``configs/use_cases.yaml``): a template, a system prompt, sampling settings, example prompts and
  optional few-shot pairs for Chatbot, Code Generation, Summarization, Question Answering, Creative Writing and
  Domain Adaptation.
* **Templates** (:func:`build_prompt`): ``chat`` sends messages through the model's chat template;
  ``instruction`` and ``raw`` build one completion text.
* **Export/import** (:class:`PromptSpec`): our JSON/YAML, an OpenAI chat-completions body, and ready-to-run
  curl / ``openai`` / ``gradio_client`` snippets.
* **Batch** (:func:`parse_prompt_list`, :func:`run_batch`): up to :data:`MAX_BATCH_PROMPTS` prompts, one row each.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from studio.errors import NotFoundError, StudioError, ValidationError
from studio.files import write_text_atomic
from studio.inference.base import ChatMessage
from studio.inference.params import SamplingParams, make_sampling_params, validation_error_from_pydantic
from studio.inference.stats import GenerationStats
from studio.playground.chat import content_text
from studio.settings import CONFIG_DIR

log = logging.getLogger(__name__)

PromptTemplate = Literal["chat", "instruction", "raw"]
PROMPT_TEMPLATES: tuple[PromptTemplate, ...] = ("chat", "instruction", "raw")
# The Alpaca preamble, used by the instruction template when no system prompt is given.
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
MAX_BATCH_PROMPTS = 500
# Sampling fields our API accepts that the official ``openai`` SDK has no argument for (sent as extra_body).
_OPENAI_EXTENSIONS = ("top_k", "repetition_penalty")
_ROLES = ("system", "user", "assistant")


# -- schemas ---------------------------------------------------------------------------------------------------
class _ParamError(ValueError):
    """A sampling value failed :class:`SamplingParams`; carries the field so errors can name ``params.<field>``."""

    def __init__(self, field: str, message: str, user_message: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.user_message = user_message or message


def _check_params(value: dict[str, Any]) -> dict[str, Any]:
    """Validate the given sampling values through SamplingParams; keep only those given (None = unset)."""
    given = {k: v for k, v in value.items() if v is not None}
    try:
        checked = SamplingParams.model_validate(given)
    except PydanticValidationError as exc:
        err = validation_error_from_pydantic(exc, model=SamplingParams)
        raise _ParamError(err.param or "params", err.message, err.user_message) from None
    return {k: getattr(checked, k) for k in given}


SuggestedParams = Annotated[dict[str, Any], AfterValidator(_check_params)]


class FewShotExample(BaseModel):
    """One worked example shown to the model before the real prompt."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="What the user asks.")
    output: str = Field(description="The answer the model should imitate.")


class UseCase(BaseModel):
    """A Playground preset: how to frame the prompt and which settings suit the task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Shown in the picker; the key in configs/use_cases.yaml.")
    description: str = Field(description="One line on what the use case is for.")
    prompt_template: PromptTemplate = Field(description="chat | instruction | raw (see build_prompt).")
    system_prompt: str = Field("", description="Suggested system prompt (for raw: a preamble on top).")
    params: SuggestedParams = Field(default_factory=dict, description="Suggested sampling settings (a subset).")
    example_prompts: list[str] = Field(min_length=1, description="Prompts to start from.")
    output_language: str | None = Field(None, description="Language for syntax highlighting; None = plain text.")
    few_shot: list[FewShotExample] = Field(default_factory=list, description="Examples placed before the prompt.")

    def sampling_params(self, **overrides: Any) -> SamplingParams:
        """Studio defaults, then this use case's settings, then ``overrides`` (None values are ignored)."""
        return make_sampling_params(**{**self.params, **{k: v for k, v in overrides.items() if v is not None}})


class PromptSpec(BaseModel):
    """One prompt with everything needed to replay it: the unit of export and import."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("default", description="Model id, alias or 'default'.")
    template: PromptTemplate = Field("chat", description="chat | instruction | raw.")
    prompt: str = Field(description="The user's prompt.")
    system_prompt: str = Field("", description="System prompt (instruction: header; raw: preamble).")
    examples: list[FewShotExample] = Field(default_factory=list, description="Few-shot pairs before the prompt.")
    params: SuggestedParams = Field(default_factory=dict, description="Sampling settings that differ from defaults.")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the prompt is empty")
        return v


def _error_from_pydantic(exc: PydanticValidationError, where: str) -> ValidationError:
    """A ValidationError naming ``where`` and the field (``params.<field>`` for sampling values)."""
    cause = (exc.errors()[0].get("ctx") or {}).get("error")
    if isinstance(cause, _ParamError):
        return ValidationError(
            f"{where}: {cause}", param=f"params.{cause.field}", user_message=f"{where}: {cause.user_message}"
        )
    err = validation_error_from_pydantic(exc)
    return ValidationError(f"{where}: {err.message}", param=err.param, user_message=f"{where}: {err.user_message}")


def _load_yaml(text: str, source: str, param: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ValidationError(f"{where}: not valid YAML ({exc.problem})", param=param) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML ({exc})", param=param) from None


# -- use cases -------------------------------------------------------------------------------------------------
def parse_use_cases(text: str, source: str = "use_cases.yaml") -> dict[str, UseCase]:
    """Parse a use-case file: a mapping from name to fields. Errors name the use case and the field."""
    data = _load_yaml(text, source, "use_cases")
    if not isinstance(data, dict) or not data:
        raise ValidationError(f"{source}: must be a mapping from use-case name to its fields", param="use_cases")
    out: dict[str, UseCase] = {}
    for name, fields in data.items():
        if not isinstance(fields, dict):
            raise ValidationError(f"{source}: use case {name!r} must be a mapping of fields", param="use_cases")
        try:
            out[str(name)] = UseCase.model_validate({**fields, "name": str(name)})
        except PydanticValidationError as exc:
            raise _error_from_pydantic(exc, f"{source}: use case {name!r}") from None
    return out


@cache
def _bundled_use_cases() -> tuple[UseCase, ...]:
    path = CONFIG_DIR / "use_cases.yaml"
    return tuple(parse_use_cases(path.read_text(encoding="utf-8"), str(path)).values())


def load_use_cases() -> dict[str, UseCase]:
    """The use cases of ``configs/use_cases.yaml`` in file order (parsed and validated once per process)."""
    return {uc.name: uc for uc in _bundled_use_cases()}


def use_case(name: str) -> UseCase:
    """One use case by name (case-insensitive); an unknown name raises an error listing the known ones."""
    cases = load_use_cases()
    found = cases.get(name) or next((uc for key, uc in cases.items() if key.lower() == name.strip().lower()), None)
    if found is None:
        raise ValidationError(f"unknown use case {name!r}; known use cases: {', '.join(cases)}", param="use_case")
    return found


# -- templates -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltPrompt:
    """What to send: ``messages`` for a chat request (``kind == "chat"``), or ``text`` for a completion."""

    kind: Literal["chat", "completion"]
    messages: list[ChatMessage] | None = None
    text: str | None = None


HistoryItem = ChatMessage | Mapping[str, Any]


def _as_message(turn: HistoryItem) -> ChatMessage:
    if isinstance(turn, ChatMessage):
        return turn
    role = str(turn.get("role", ""))
    if role not in _ROLES:
        raise ValidationError(f"history has a message with unknown role {role!r}", param="history")
    return ChatMessage(role, content_text(turn.get("content")))  # type: ignore[arg-type]


def _as_example(ex: FewShotExample | Mapping[str, Any]) -> FewShotExample:
    if isinstance(ex, FewShotExample):
        return ex
    try:
        return FewShotExample.model_validate(ex)
    except PydanticValidationError as exc:
        raise _error_from_pydantic(exc, "few-shot example") from None


def build_prompt(
    template: PromptTemplate,
    prompt: str,
    *,
    system_prompt: str = "",
    examples: Iterable[FewShotExample | Mapping[str, Any]] = (),
    history: Iterable[HistoryItem] = (),
) -> BuiltPrompt:
    """Frame ``prompt`` with a template.

    * ``chat``: messages: the system prompt (if any), each few-shot pair as a user/assistant turn, the history
      turns, then the prompt as the last user message. The model's chat template does the formatting.
    * ``instruction``: Alpaca text: the system prompt on top (the Alpaca preamble when empty), few-shot pairs and
      then history as earlier ``### Instruction:`` / ``### Response:`` blocks, the prompt as the last
      instruction, ending with ``### Response:\\n`` for the model to continue.
    * ``raw``: the prompt verbatim, preceded by the system prompt as a preamble paragraph (if any) and by each
      few-shot pair as ``Input: ...\\nOutput: ...`` lines. History is ignored: a raw completion has no turns.
    """
    if template not in PROMPT_TEMPLATES:
        raise ValidationError(
            f"unknown prompt template {template!r}; choose one of {', '.join(PROMPT_TEMPLATES)}", param="template"
        )
    if not prompt.strip():
        raise ValidationError("the prompt is empty; type something to send", param="prompt")
    shots = [_as_example(ex) for ex in examples]
    if template == "raw":
        head = f"{system_prompt.strip()}\n\n" if system_prompt.strip() else ""
        head += "".join(f"Input: {ex.input}\nOutput: {ex.output}\n\n" for ex in shots)
        return BuiltPrompt(kind="completion", text=head + prompt)
    turns = [_as_message(t) for t in history]
    if template == "chat":
        messages = [ChatMessage("system", system_prompt)] if system_prompt.strip() else []
        for ex in shots:
            messages += [ChatMessage("user", ex.input), ChatMessage("assistant", ex.output)]
        return BuiltPrompt(kind="chat", messages=[*messages, *turns, ChatMessage("user", prompt)])
    header = [system_prompt.strip()] if system_prompt.strip() else []
    header += [t.content.strip() for t in turns if t.role == "system" and t.content.strip()]
    parts = ["\n\n".join(header) or ALPACA_PREAMBLE]
    for ex in shots:
        parts += [f"### Instruction:\n{ex.input}", f"### Response:\n{ex.output}"]
    for t in turns:
        if t.role != "system":
            parts.append(f"### {'Instruction' if t.role == 'user' else 'Response'}:\n{t.content}")
    parts.append(f"### Instruction:\n{prompt}")
    return BuiltPrompt(kind="completion", text="\n\n".join(parts) + "\n\n### Response:\n")


class Tokenizer(Protocol):
    """Anything called like a Hugging Face tokenizer: ``tok(text, add_special_tokens=False)["input_ids"]``."""

    def __call__(self, text: str, *, add_special_tokens: bool = ...) -> Any: ...


def count_chars_and_tokens(text: str, tokenizer: Tokenizer | None) -> tuple[int, int | None]:
    """Characters (Unicode code points) and tokens (without BOS/EOS) in ``text``; tokens None without a
    tokenizer."""
    if tokenizer is None:
        return len(text), None
    return len(text), len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


# -- export / import -------------------------------------------------------------------------------------------
def _spec_messages(spec: PromptSpec) -> list[ChatMessage]:
    """The messages a chat request carries: the chat messages, or one user message holding the built text."""
    built = build_prompt(spec.template, spec.prompt, system_prompt=spec.system_prompt, examples=spec.examples)
    if built.messages is not None:
        return built.messages
    return [ChatMessage("user", built.text or "")]


def to_openai_request(spec: PromptSpec) -> dict[str, Any]:
    """An OpenAI chat-completions body for ``POST /v1/chat/completions``.

    ``instruction`` and ``raw`` prompts become a single user message holding the built text (the server still
    applies the model's chat template to it). Only the sampling values set in the spec are included.
    """
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [{"role": m.role, "content": m.content} for m in _spec_messages(spec)],
    }
    body.update(spec.params)
    return body


def _export_dict(spec: PromptSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def export_json(spec: PromptSpec) -> str:
    """The spec as pretty JSON (what :func:`import_prompt` reads back)."""
    return json.dumps(_export_dict(spec), indent=2, ensure_ascii=False) + "\n"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as ``|`` blocks so exported prompts stay readable."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def export_yaml(spec: PromptSpec) -> str:
    """The same content as :func:`export_json`, as YAML."""
    return yaml.dump(_export_dict(spec), Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)


def save_prompt(spec: PromptSpec, path: str | Path) -> Path:
    """Write the spec atomically as JSON (``.json``) or YAML (any other suffix)."""
    target = Path(path)
    write_text_atomic(target, export_json(spec) if target.suffix.lower() == ".json" else export_yaml(spec))
    return target


_OPENAI_PARAMS = {
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
}
_OPENAI_IGNORED = {"stream", "stream_options", "user"}  # about delivery, not about the prompt


def _spec_from_openai(body: dict[str, Any], source: str) -> PromptSpec:
    params: dict[str, Any] = {}
    for key, value in body.items():
        if key in _OPENAI_PARAMS:
            params[key] = value
        elif key == "max_completion_tokens":
            params.setdefault("max_tokens", value)
        elif key == "n" and value in (None, 1):
            continue
        elif key not in _OPENAI_IGNORED | {"model", "messages"}:
            raise ValidationError(f"{source}: '{key}' is not supported in an imported request", param=key)
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValidationError(f"{source}: 'messages' must be a non-empty list", param="messages")
    system: list[str] = []
    turns: list[tuple[int, str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValidationError(f"{source}: messages[{i}] must be an object", param=f"messages.{i}")
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in _ROLES:
            raise ValidationError(
                f"{source}: messages[{i}] has role {m.get('role')!r}; expected system, user or assistant",
                param=f"messages.{i}.role",
            )
        text = content_text(m.get("content"))
        if role == "system":
            system.append(text)
        else:
            turns.append((i, str(role), text))
    if not turns or turns[-1][1] != "user":
        raise ValidationError(f"{source}: the last message must be the user's prompt", param="messages")
    earlier = turns[:-1]
    examples: list[FewShotExample] = []
    for (i, role, text), (j, next_role, next_text) in zip(earlier[::2], earlier[1::2], strict=False):
        if role != "user" or next_role != "assistant":
            raise ValidationError(
                f"{source}: messages[{i}] and messages[{j}] should be a user turn and its assistant reply; "
                "earlier turns are imported as few-shot pairs",
                param=f"messages.{i}",
            )
        examples.append(FewShotExample(input=text, output=next_text))
    if len(earlier) % 2:
        i = earlier[-1][0]
        raise ValidationError(f"{source}: messages[{i}] has no reply before the prompt", param=f"messages.{i}")
    try:
        return PromptSpec(
            model=str(body.get("model") or "default"),
            template="chat",
            prompt=turns[-1][2],
            system_prompt="\n\n".join(system),
            examples=examples,
            params=params,
        )
    except PydanticValidationError as exc:
        raise _error_from_pydantic(exc, source) from None


def import_prompt(text: str, source: str = "imported prompt") -> PromptSpec:
    """Read our JSON/YAML export, or an OpenAI chat-completions body (JSON or YAML).

    From an OpenAI body: system messages become the system prompt, the last user message the prompt, and
    earlier user/assistant pairs few-shot examples (the template is ``chat``). Errors name the field, or the
    line for syntax errors.
    """
    if not text.strip():
        raise ValidationError(f"{source}: nothing to import (the text is empty)", param="prompt_file")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"{source}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})", param="json"
            ) from None
    else:
        data = _load_yaml(text, source, "yaml")
    if not isinstance(data, dict):
        raise ValidationError(
            f"{source}: expected an object with 'prompt' (our export) or 'messages' (an OpenAI request)",
            param="prompt_file",
        )
    if "messages" in data:
        return _spec_from_openai(data, source)
    try:
        return PromptSpec.model_validate(data)
    except PydanticValidationError as exc:
        raise _error_from_pydantic(exc, source) from None


def _stop_field(stops: Sequence[str]) -> str:
    """Stops as the Playground's text box takes them: one per line, escaped where a line needs it."""
    return "\n".join(
        s.encode("unicode_escape").decode("ascii") if any(c in s for c in "\\\n\r\t") else s for s in stops
    )


def _py_literal(value: Any, level: int = 0) -> str:
    """``value`` (JSON-like data) as Python source: one item per line, strings double-quoted on one line."""
    pad, end = "    " * (level + 1), "    " * level
    if isinstance(value, dict) and value:
        flat = "{" + ", ".join(f"{json.dumps(k)}: {_py_literal(v)}" for k, v in value.items()) + "}"
        if not any(isinstance(v, dict | list) for v in value.values()) and len(flat) + len(pad) <= 100:
            return flat
        items = "".join(f"{pad}{json.dumps(k)}: {_py_literal(v, level + 1)},\n" for k, v in value.items())
        return "{\n" + items + end + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + "".join(f"{pad}{_py_literal(v, level + 1)},\n" for v in value) + end + "]"
    if isinstance(value, list):
        return "[" + ", ".join(_py_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid Python string literal
    return repr(value)


def snippets(spec: PromptSpec, base_url: str = "http://127.0.0.1:7860") -> dict[str, str]:
    """Runnable code that sends this prompt to a running studio: ``curl``, ``openai`` and ``gradio_client``.

    curl and openai post :func:`to_openai_request`'s body to ``/v1/chat/completions`` (``STUDIO_API_KEY`` is used
    when set). gradio_client calls the Playground's ``/playground_generate`` with every setting filled in
    (studio defaults for those the spec leaves unset).
    """
    base = base_url.rstrip("/")
    body = to_openai_request(spec)
    extra = {k: body.pop(k) for k in _OPENAI_EXTENSIONS if k in body}
    json_body = json.dumps(to_openai_request(spec), indent=2, ensure_ascii=False)
    curl = (
        f"curl {shlex.quote(base + '/v1/chat/completions')} \\\n"
        '  -H "Content-Type: application/json" \\\n'
        '  -H "Authorization: Bearer ${STUDIO_API_KEY:-unused}" \\\n'
        f"  -d {shlex.quote(json_body)}\n"
    )
    call = (
        "client.chat.completions.create(**body, extra_body=extra_body)"
        if extra
        else "client.chat.completions.create(**body)"
    )
    openai = (
        "import os\n\nfrom openai import OpenAI\n\n"
        f'client = OpenAI(base_url={json.dumps(base + "/v1")}, api_key=os.environ.get("STUDIO_API_KEY", "unused"))\n'
        f"body = {_py_literal(body)}\n"
        + (f"# Whetstone's sampling parameters beyond OpenAI's\nextra_body = {_py_literal(extra)}\n" if extra else "")
        + f"reply = {call}\nprint(reply.choices[0].message.content)\n"
    )
    p = make_sampling_params(**spec.params)
    if spec.template == "chat":
        message, system = spec.prompt, spec.system_prompt
        history = [
            {"role": role, "content": text}
            for ex in spec.examples
            for role, text in (("user", ex.input), ("assistant", ex.output))
        ]
    else:  # as to_openai_request: the built text is the whole user message
        message, system, history = _spec_messages(spec)[0].content, "", []
    args = {
        "message": message,
        "history": history,
        "model": spec.model,
        "system_prompt": system,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k,
        "max_tokens": p.max_tokens,
        "repetition_penalty": p.repetition_penalty,
        "stop": _stop_field(p.stop),
        "seed": -1 if p.seed is None else p.seed,
        "frequency_penalty": p.frequency_penalty,
        "presence_penalty": p.presence_penalty,
    }
    lines = "".join(f"    {k}={_py_literal(v, 1)},\n" for k, v in args.items())
    gradio = (
        "from gradio_client import Client\n\n"
        f"client = Client({json.dumps(base + '/')})\n"
        f"result = client.predict(\n{lines}"
        '    api_name="/playground_generate",\n)\n'
        "chat, stats = result[0], result[1]\n"
        'print(chat[-1]["content"])  # the reply\nprint(stats)\n'
    )
    return {"curl": curl, "openai": openai, "gradio_client": gradio}


# -- batch -----------------------------------------------------------------------------------------------------
def _read_prompt_file(path: Path) -> list[str]:
    try:
        raw = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often start CSV files with a BOM
    except FileNotFoundError:
        raise NotFoundError(f"prompt file not found: {path}", param="prompts") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {path.name}: {exc}", param="prompts") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        if "prompt" not in columns:
            found = ", ".join(repr(c) for c in reader.fieldnames or []) or "none"
            raise ValidationError(f"{path.name}: needs a 'prompt' column (columns found: {found})", param="prompts")
        return [(row.get(columns["prompt"]) or "").strip() for row in reader]
    if suffix == ".jsonl":
        out: list[str] = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{path.name}, line {n}: not valid JSON ({exc.msg})", param="prompts") from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise ValidationError(
                    f'{path.name}, line {n}: expected an object like {{"prompt": "..."}}', param="prompts"
                )
            out.append(item["prompt"].strip())
        return out
    return [line.strip() for line in raw.splitlines()]


def parse_prompt_list(text: str | None = None, path: Path | None = None) -> list[str]:
    """The prompts of a batch, from pasted ``text`` (one per non-empty line) or a file: ``.csv`` with a
    ``prompt`` column, ``.jsonl`` with ``{"prompt": ...}`` per line (both allow multi-line prompts), or any other
    file as one prompt per line. Empty entries are skipped; more than :data:`MAX_BATCH_PROMPTS` is an error."""
    if text is not None and text.strip() and path is not None:
        raise ValidationError("give either pasted prompts or a file, not both", param="prompts")
    items = _read_prompt_file(Path(path)) if path is not None else (text or "").splitlines()
    prompts = [p.strip() for p in items if p.strip()]
    if not prompts:
        raise ValidationError("no prompts: paste one per line or upload a .txt, .csv or .jsonl file", param="prompts")
    if len(prompts) > MAX_BATCH_PROMPTS:
        raise ValidationError(
            f"{len(prompts)} prompts; a batch holds at most {MAX_BATCH_PROMPTS}, so split the list", param="prompts"
        )
    return prompts


class GenerationOutcome(Protocol):
    """What a batch's ``generate`` returns (:class:`studio.inference.stats.GenerationResult` fits)."""

    text: str

    @property
    def stats(self) -> GenerationStats: ...


@dataclass(frozen=True)
class BatchRow:
    """One prompt's result. ``index`` counts from 1; on failure ``error`` holds the message and the figures
    the run could not produce are None."""

    index: int
    prompt: str
    output: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    tokens_per_s: float | None
    total_s: float
    finish_reason: str
    error: str | None = None


BATCH_COLUMNS: tuple[str, ...] = (
    "index",
    "prompt",
    "output",
    "prompt_tokens",
    "completion_tokens",
    "ttft_s",
    "tokens_per_s",
    "total_s",
    "finish_reason",
    "error",
)


def run_batch(
    prompts: Sequence[str],
    generate: Callable[[str], GenerationOutcome],
    *,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[BatchRow]:
    """Run ``generate`` on each prompt in turn. A prompt that fails gets a row with its error and the batch goes
    on. ``on_progress(done, total)`` is called after each prompt; setting ``cancel`` stops before the next one
    (the rows so far are returned)."""
    rows: list[BatchRow] = []
    total = len(prompts)
    for i, prompt in enumerate(prompts, start=1):
        if cancel is not None and cancel.is_set():
            break
        started = time.perf_counter()
        try:
            result = generate(prompt)
            s = result.stats
            row = BatchRow(
                i, prompt, result.text, s.prompt_tokens, s.completion_tokens, s.ttft_s, s.tokens_per_s, s.total_s,
                s.finish_reason,
            )  # fmt: skip
        except Exception as exc:  # one bad prompt must not lose the other results
            if not isinstance(exc, StudioError):
                log.exception("batch prompt %d failed", i)
            message = str(exc) or type(exc).__name__
            row = BatchRow(i, prompt, "", None, None, None, None, time.perf_counter() - started, "error", message)
        rows.append(row)
        if on_progress is not None:
            on_progress(i, total)
    return rows


def _row_values(row: BatchRow) -> list[Any]:
    return [getattr(row, c) for c in BATCH_COLUMNS]


def batch_csv(rows: Iterable[BatchRow]) -> str:
    """The rows as CSV with a header (:data:`BATCH_COLUMNS`); missing values are empty cells."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(BATCH_COLUMNS)
    for row in rows:
        writer.writerow(["" if v is None else v for v in _row_values(row)])
    return buf.getvalue()


def batch_table(rows: Iterable[BatchRow]) -> list[list[Any]]:
    """The rows for a UI table, in :data:`BATCH_COLUMNS` order: times rounded for reading, missing values ''."""
    digits = {"ttft_s": 3, "tokens_per_s": 1, "total_s": 2}
    table: list[list[Any]] = []
    for row in rows:
        values = _row_values(row)
        for j, col in enumerate(BATCH_COLUMNS):
            if values[j] is None:
                values[j] = ""
            elif col in digits:
                values[j] = round(values[j], digits[col])
        table.append(values)
    return table


def save_batch_csv(rows: Iterable[BatchRow], path: str | Path) -> Path:
    """Write :func:`batch_csv` to ``path`` atomically."""
    target = Path(path)
    write_text_atomic(target, batch_csv(rows))
    return target
