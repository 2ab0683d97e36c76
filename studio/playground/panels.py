"""What the Playground's analysis, batch and export/import panels do, as plain functions over the engine
manager and the per-session :class:`~studio.playground.session.PlaygroundSession`. The panels in
``components/playground/`` only read widgets, call one of the entry points below and show the result.

* Analysis: :func:`reply_token_view` (coloured tokens and the log probability chart of the last reply),
  :func:`reply_attention` (its attention maps, drawn first for the middle layer) and :func:`attention_view_figure`
  (another layer/head of maps already computed).
* Batch: :func:`playground_batch` parses the prompts, runs each as a single-turn chat
  (:func:`run_playground_batch`) and writes the CSV into a fresh folder under ``STUDIO_HOME/exports``.
* Export/import: :func:`export_prompt` builds a :class:`~studio.playground.prompts.PromptSpec` from the form and
  renders every export format; :func:`import_prompt_form` reads one back and maps it onto the form.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.errors import NotFoundError, StudioError, ValidationError
from studio.files import write_text_atomic
from studio.inference.base import ChatMessage, TokenEvent
from studio.inference.manager import EngineManager
from studio.inference.params import SamplingParams, make_sampling_params
from studio.inference.stats import GenerationResult
from studio.playground.attention import AttentionMaps, attention_figure, attention_summary, default_layer
from studio.playground.prompts import (
    PROMPT_TEMPLATES,
    BatchRow,
    FewShotExample,
    PromptSpec,
    _stop_field,
    batch_table,
    export_json,
    export_yaml,
    import_prompt,
    parse_prompt_list,
    run_batch,
    save_batch_csv,
    snippets,
    to_openai_request,
)
from studio.playground.session import PARAM_NAMES, PlaygroundSession
from studio.playground.token_view import logprob_figure, token_view_html

if TYPE_CHECKING:
    import plotly.graph_objects as go

DEFAULT_BASE_URL = "http://127.0.0.1:7860"
IMPORT_SUFFIXES = (".json", ".yaml", ".yml")


# -- analysis --------------------------------------------------------------------------------------------------
def last_reply_tokens(session: PlaygroundSession | None) -> list[TokenEvent]:
    """The tokens of this session's last reply; a :class:`ValidationError` that says what to do when there is
    none yet."""
    if session is None or not session.tokens:
        raise ValidationError(
            "there is no reply to analyse yet: send a message in the Chat tab (or run a prompt) first", param="reply"
        )
    return list(session.tokens)


def attention_for_session(engines: EngineManager, session: PlaygroundSession | None) -> AttentionMaps:
    """Attention maps over the prompt and the reply of this session's last reply, recomputed on the model
    that wrote it (which must still be loaded)."""
    tokens = last_reply_tokens(session)
    if session is None or not session.model:
        raise ValidationError("the last reply did not record its model; send the message again", param="model")
    maps: AttentionMaps = engines.attention_for_reply(
        session.model,
        [t.token_id for t in tokens],
        messages=session.messages,
        prompt_text=session.prompt_text,
    )
    return maps


def describe_attention(maps: AttentionMaps) -> str:
    """One Markdown line on what the maps cover: layers, heads, tokens of prompt and reply, any cut."""
    s = attention_summary(maps)
    reply = s["seq_len"] - s["prompt_len"]
    text = (
        f"**{s['layers']} layers × {s['heads']} heads** over {s['seq_len']} tokens "
        f"({s['prompt_len']} of the prompt, {reply} of the reply)"
    )
    if s["truncated"]:
        text += f"; the first {s['truncated']} tokens are not shown (they still shaped the attention)"
    return text


@dataclass(frozen=True)
class TokenView:
    """The token view of a reply: coloured tokens (HTML) and the log probability chart."""

    html: str
    figure: go.Figure


def reply_token_view(session: PlaygroundSession | None) -> TokenView:
    """This session's last reply as a token view (:func:`~studio.playground.token_view.token_view_html` and
    :func:`~studio.playground.token_view.logprob_figure`)."""
    tokens = last_reply_tokens(session)
    return TokenView(token_view_html(tokens), logprob_figure(tokens))


@dataclass(frozen=True)
class AttentionView:
    """Freshly computed attention maps, drawn for ``layer`` (the middle one), with the sizes a UI sets its sliders
    from."""

    maps: AttentionMaps
    layers: int
    heads: int
    layer: int
    figure: go.Figure
    summary: str


def reply_attention(
    engines: EngineManager, session: PlaygroundSession | None, *, average_heads: bool = False
) -> AttentionView:
    """Attention maps of this session's last reply, drawn for the middle layer (:func:`~studio.playground.attention.
    default_layer`; head 0, or the average over heads)."""
    maps = attention_for_session(engines, session)
    layer = default_layer(maps)
    return AttentionView(
        maps=maps,
        layers=maps.layers,
        heads=maps.heads,
        layer=layer,
        figure=attention_figure(maps, layer, None if average_heads else 0),
        summary=describe_attention(maps),
    )


def attention_view_figure(
    maps: AttentionMaps | None, layer: float | None, head: float | None, *, average_heads: bool = False
) -> go.Figure:
    """The heat map for the layer and head a UI's sliders ask for (``average_heads``: mean over heads); a
    :class:`ValidationError` when attention has not been computed in this session, or naming the allowed range
    when ``layer``/``head`` is out of it."""
    if maps is None:
        raise ValidationError("press 'Compute attention' first", param="attention")
    return attention_figure(maps, int(layer or 0), None if average_heads else int(head or 0))


# -- batch -----------------------------------------------------------------------------------------------------
def batch_messages(system_prompt: str | None, prompt: str) -> list[ChatMessage]:
    """A batch prompt as a single-turn chat: the system prompt (when set), then the prompt."""
    system = (system_prompt or "").strip()
    return [*([ChatMessage("system", system_prompt or "")] if system else []), ChatMessage("user", prompt)]


def run_playground_batch(
    engines: EngineManager,
    prompts: Sequence[str],
    model: str,
    system_prompt: str | None,
    params: SamplingParams,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    owner: str | None = None,
) -> list[BatchRow]:
    """Each prompt as its own single-turn chat with ``model``, one after the other (see
    :func:`~studio.playground.prompts.run_batch`). ``owner`` tags the generations: cancelling the owner's
    running generation (``EngineManager.cancel_owner``) also stops the batch before its next prompt."""
    cancel = threading.Event()
    name = model or "default"

    def generate(prompt: str) -> GenerationResult:
        handle = engines.start_chat(
            name, batch_messages(system_prompt, prompt), params, endpoint="playground.batch", owner=owner
        )
        result = handle.wait()
        if handle.cancelled:
            cancel.set()
        return result

    return run_batch(prompts, generate, on_progress=on_progress, cancel=cancel)


def new_export_dir(home: Path, prefix: str) -> Path:
    """A fresh, empty folder under ``home/exports`` (so two downloads never overwrite each other)."""
    exports = home / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=exports))


def save_batch(rows: Sequence[BatchRow], home: Path) -> Path:
    """Write the batch's CSV to ``home/exports/batch-*/batch.csv`` and return its path."""
    return save_batch_csv(rows, new_export_dir(home, "batch") / "batch.csv")


@dataclass(frozen=True)
class BatchRun:
    """A finished batch: its rows, the same as a UI table (:data:`~studio.playground.prompts.BATCH_COLUMNS`
    order) and the CSV file written under ``STUDIO_HOME/exports``."""

    rows: list[BatchRow]
    table: list[list[Any]]
    csv_path: Path


def playground_batch(
    engines: EngineManager,
    home: Path,
    prompts_text: str | None,
    prompt_file: str | Path | None,
    model: str | None,
    system_prompt: str | None,
    params: SamplingParams,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    owner: str | None = None,
) -> BatchRun:
    """The Playground's batch: prompts pasted one per line or from a .txt/.csv/.jsonl file
    (:func:`~studio.playground.prompts.parse_prompt_list`), run by :func:`run_playground_batch`, saved by
    :func:`save_batch`. ``on_progress(done, total)`` is called once before the first prompt and after each."""
    prompts = parse_prompt_list(prompts_text, Path(prompt_file) if prompt_file else None)
    if on_progress is not None:
        on_progress(0, len(prompts))
    rows = run_playground_batch(
        engines, prompts, model or "default", system_prompt, params, on_progress=on_progress, owner=owner
    )
    return BatchRun(rows=rows, table=batch_table(rows), csv_path=save_batch(rows, home))


# -- export / import -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptExport:
    """One prompt in every export format, plus the JSON file written for download."""

    spec: PromptSpec
    json: str
    yaml: str
    openai_request: str
    curl: str
    openai: str
    gradio_client: str
    path: Path


def model_defaults(engines: EngineManager, model: str) -> SamplingParams:
    """The sampling settings a request to ``model`` gets when it sets none: the alias's, else the studio
    defaults (also for a name this studio cannot resolve)."""
    try:
        return engines.params_for(model or "default")
    except StudioError:  # an unknown name, a path that is gone: export against the studio defaults
        return make_sampling_params()


def changed_params(params: SamplingParams, baseline: SamplingParams) -> dict[str, Any]:
    """The form's settings (``PARAM_NAMES``) whose values differ from ``baseline``; what an exported prompt must
    carry to be replayed with the same settings. A random seed (None) is left out."""
    out: dict[str, Any] = {}
    for name in PARAM_NAMES:
        value = getattr(params, name)
        if value is not None and value != getattr(baseline, name):
            out[name] = value
    return out


def prompt_spec_from_form(
    model: str | None,
    template: str | None,
    prompt: str | None,
    system_prompt: str | None,
    params: SamplingParams,
    *,
    baseline: SamplingParams,
    examples: Sequence[FewShotExample | Mapping[str, Any]] = (),
) -> PromptSpec:
    """A :class:`PromptSpec` from the Playground form; errors name the field (an empty prompt, an unknown
    template)."""
    if not (prompt or "").strip():
        raise ValidationError("type the prompt to export first", param="prompt")
    chosen = template or "chat"
    if chosen not in PROMPT_TEMPLATES:
        raise ValidationError(
            f"unknown prompt template {chosen!r}; choose one of {', '.join(PROMPT_TEMPLATES)}", param="template"
        )
    shots = [ex if isinstance(ex, FewShotExample) else FewShotExample.model_validate(ex) for ex in examples]
    return PromptSpec(
        model=(model or "").strip() or "default",
        template=chosen,
        prompt=prompt or "",
        system_prompt=system_prompt or "",
        examples=shots,
        params=changed_params(params, baseline),
    )


def export_prompt(
    engines: EngineManager,
    model: str | None,
    template: str | None,
    prompt: str | None,
    system_prompt: str | None,
    params: SamplingParams,
    *,
    home: Path,
    base_url: str = DEFAULT_BASE_URL,
    examples: Sequence[FewShotExample | Mapping[str, Any]] = (),
) -> PromptExport:
    """Export the Playground's prompt: our JSON and YAML, the OpenAI chat-completions body, curl / openai /
    gradio_client snippets for ``base_url``, and the JSON written to ``home/exports/prompt-*/prompt.json``.
    Only settings that differ from what ``model`` would use anyway are recorded."""
    spec = prompt_spec_from_form(
        model,
        template,
        prompt,
        system_prompt,
        params,
        baseline=model_defaults(engines, model or "default"),
        examples=examples,
    )
    code = snippets(spec, base_url)
    text = export_json(spec)
    path = new_export_dir(home, "prompt") / "prompt.json"
    write_text_atomic(path, text)
    return PromptExport(
        spec=spec,
        json=text,
        yaml=export_yaml(spec),
        openai_request=json.dumps(to_openai_request(spec), indent=2, ensure_ascii=False) + "\n",
        curl=code["curl"],
        openai=code["openai"],
        gradio_client=code["gradio_client"],
        path=path,
    )


def read_prompt_import(text: str | None, path: str | Path | None) -> PromptSpec:
    """The prompt in pasted ``text`` or in an uploaded ``.json`` / ``.yaml`` file (our export or an OpenAI
    chat-completions body); see :func:`~studio.playground.prompts.import_prompt`."""
    if path is not None and str(path).strip():
        if (text or "").strip():
            raise ValidationError("give either pasted text or a file to import, not both", param="prompt_file")
        file = Path(path)
        if file.suffix.lower() not in IMPORT_SUFFIXES:
            raise ValidationError(f"{file.name}: expected a {', '.join(IMPORT_SUFFIXES)} file", param="prompt_file")
        try:
            content = file.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise NotFoundError(f"file not found: {file}", param="prompt_file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read {file.name}: {exc}", param="prompt_file") from None
        return import_prompt(content, file.name)
    return import_prompt(text or "", "pasted text")


def form_values(spec: PromptSpec) -> dict[str, Any]:
    """The spec's sampling settings as the Playground's widgets take them (``PARAM_NAMES`` keys, only those the
    spec sets): stop sequences one per line with escapes, no seed as -1."""
    values: dict[str, Any] = {}
    for name in PARAM_NAMES:
        if name not in spec.params:
            continue
        value = spec.params[name]
        if name == "stop":
            value = _stop_field([value] if isinstance(value, str) else list(value or []))
        elif name == "seed":
            value = -1 if value is None else value
        values[name] = value
    return values


def _same_model(engines: EngineManager, a: str, b: str) -> bool:
    """Whether two model names mean the same model here (``default`` and its id, an alias and its id...)."""
    if a == b:
        return True
    try:
        return engines.resolve(a).entry.id == engines.resolve(b).entry.id
    except StudioError:  # a name this studio cannot resolve is only equal to itself
        return False


def import_summary(spec: PromptSpec, same_model: bool) -> str:
    """A Markdown line on what an import filled in, and what it could not (a different model is not
    switched: picking it would reset the parameters to that model's own)."""
    parts = [f"Imported a **{spec.template}** prompt"]
    parts.append(f"{len(spec.params)} setting(s)" if spec.params else "no sampling settings (kept the current ones)")
    if spec.examples:
        parts.append(f"{len(spec.examples)} few-shot example(s) (kept for the next export)")
    text = ", ".join(parts)
    if not same_model:
        text += f". It was written for model `{spec.model}`: pick it in the Model box to use it"
    return text


@dataclass(frozen=True)
class PromptImport:
    """An imported prompt, ready for the Playground's form: ``values`` holds only the ``PARAM_NAMES`` settings
    the prompt sets (as the widgets take them), ``examples`` its few-shot pairs as plain dicts."""

    spec: PromptSpec
    values: dict[str, Any]
    examples: list[dict[str, str]]
    summary: str


def import_prompt_form(
    engines: EngineManager, text: str | None, path: str | Path | None, current_model: str | None
) -> PromptImport:
    """Read a prompt from pasted ``text`` or an uploaded file (:func:`read_prompt_import`) and map it onto the
    Playground's form; ``current_model`` is the model picked now (a prompt for another one says so)."""
    spec = read_prompt_import(text, path)
    same = _same_model(engines, spec.model, current_model or "default")
    return PromptImport(
        spec=spec,
        values=form_values(spec),
        examples=[ex.model_dump() for ex in spec.examples],
        summary=import_summary(spec, same),
    )


def base_url_from_headers(headers: Mapping[str, Any], fallback: str = DEFAULT_BASE_URL) -> str:
    """The address the user reached the studio at (honouring a proxy's X-Forwarded-* headers), for snippets."""
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    host = (lower.get("x-forwarded-host") or lower.get("host") or "").split(",")[0].strip()
    if not host:
        return fallback
    proto = (lower.get("x-forwarded-proto") or "http").split(",")[0].strip()
    return f"{proto}://{host}"
