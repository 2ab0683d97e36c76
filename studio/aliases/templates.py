"""Chat templates for model aliases: the built-in ones, the user's own, rendering, and templates read from model
files.

An alias's ``chat_template`` is one of:

* a built-in id (``llama3``, ``llama2``, ``llama2-legacy``, ``mistral``, ``mistral-v0.3``, ``phi3``, ``gemma``,
  ``qwen2.5``, ``deepseek``, ``command-r``, ``openchat``, ``tinyllama``, ``zephyr``, ``vicuna``, ``chatml``):
  ``configs/chat_templates/<id>.jinja``, described (families, default stop strings, bos/eos tokens) in
  ``configs/chat_templates/templates.yaml``. Each renders what its family's official template renders, and the
  studio tokenizes a chat prompt without adding special tokens (as transformers' ``apply_chat_template`` does), so
  the model gets the family's token ids, BOS included once (``tests/integration/test_chat_template_parity.py``);
* the name of a user template: ``STUDIO_HOME/chat_templates/<name>.jinja`` (a built-in id always means the
  built-in; a file with that name is ignored);
* a path to a ``.jinja`` file, absolute or relative to ``STUDIO_HOME/chat_templates`` or ``STUDIO_HOME``, inside
  the folders models may be read from (``STUDIO_HOME``, ``STUDIO_MODEL_DIRS``, the Hugging Face cache): any other
  path is refused (403) before the disk is looked at (:mod:`studio.paths`);
* ``embedded``: the model's own template, from its ``chat_template.jinja`` or ``tokenizer_config.json``;
* a Hugging Face repo id (``org/name``) whose template is read from the local hub cache.

User templates and model files render with the tokenizer's own bos/eos tokens, and bring no default stops.

Templates are Hugging Face style Jinja (``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``)
rendered in the same sandbox as transformers' ``apply_chat_template`` (immutable sandbox, ``trim_blocks``,
``lstrip_blocks``, ``raise_exception``, ``strftime_now``, a non-escaping ``tojson``, loop controls and the
``{% generation %}`` tag), so a template renders the same string here as in a tokenizer.
Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import yaml
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from studio.errors import ServerError, ValidationError
from studio.models.registry import pick_snapshot
from studio.paths import describe_roots, display_path, find_user_path, model_roots
from studio.settings import CONFIG_DIR, Settings

log = logging.getLogger(__name__)

TEMPLATES_DIR = CONFIG_DIR / "chat_templates"
CATALOGUE_FILE = TEMPLATES_DIR / "templates.yaml"
BUILTIN_TEMPLATES: tuple[str, ...] = (
    "llama3",
    "llama2",
    "llama2-legacy",
    "mistral",
    "mistral-v0.3",
    "phi3",
    "gemma",
    "qwen2.5",
    "deepseek",
    "command-r",
    "openchat",
    "tinyllama",
    "zephyr",
    "vicuna",
    "chatml",
)
EMBEDDED = "embedded"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # transformers >= 4.50 saves a tokenizer's template here
USER_TEMPLATES_DIR = "chat_templates"  # under STUDIO_HOME: <name>.jinja files a user adds
TEMPLATE_SUFFIX = ".jinja"
MAX_TEMPLATE_BYTES = 1_000_000  # the largest official templates are tens of kB
_USER_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_PARAM = "chat_template"


@dataclass(frozen=True)
class TemplateInfo:
    """What ``templates.yaml`` says about one built-in template."""

    id: str
    description: str
    families: tuple[str, ...]
    stop: tuple[str, ...]
    bos_token: str
    eos_token: str


class _TemplateEntry(BaseModel):
    """One entry of ``templates.yaml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    families: list[str] = Field(min_length=1)
    stop: list[str]
    bos_token: str
    eos_token: str


# -- built-in templates ----------------------------------------------------------------------------------------
@cache
def _catalogue() -> dict[str, TemplateInfo]:
    """The parsed ``templates.yaml``, in ``BUILTIN_TEMPLATES`` order (read once per process)."""
    try:
        raw = yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ServerError(f"cannot read the built-in chat templates from {CATALOGUE_FILE}: {err}") from err
    if not isinstance(raw, dict) or set(raw) != set(BUILTIN_TEMPLATES):
        found = ", ".join(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise ServerError(
            f"{CATALOGUE_FILE} must describe exactly the built-in templates {', '.join(BUILTIN_TEMPLATES)}; "
            f"it holds: {found}"
        )
    catalogue: dict[str, TemplateInfo] = {}
    for template_id in BUILTIN_TEMPLATES:
        try:
            entry = _TemplateEntry.model_validate(raw[template_id])
        except PydanticValidationError as err:
            raise ServerError(f"{CATALOGUE_FILE}: entry '{template_id}' is malformed: {err}") from err
        catalogue[template_id] = TemplateInfo(
            id=template_id,
            description=entry.description,
            families=tuple(entry.families),
            stop=tuple(entry.stop),
            bos_token=entry.bos_token,
            eos_token=entry.eos_token,
        )
    return catalogue


def _builtin_id(template_id: str) -> str:
    """``template_id`` normalised to a built-in id, or a :class:`ValidationError` listing the known ids."""
    normalised = template_id.strip().lower()
    if normalised not in BUILTIN_TEMPLATES:
        raise ValidationError(
            f"unknown built-in chat template '{template_id}'; built-in templates: {', '.join(BUILTIN_TEMPLATES)}",
            param=_PARAM,
        )
    return normalised


def list_templates() -> list[TemplateInfo]:
    """Every built-in template with its description, model families, default stops and bos/eos tokens."""
    return list(_catalogue().values())


def template_info(template_id: str) -> TemplateInfo:
    """The description, families, default stops and bos/eos tokens of one built-in template (case-insensitive)."""
    return _catalogue()[_builtin_id(template_id)]


@lru_cache(maxsize=len(BUILTIN_TEMPLATES))
def _read_builtin(template_id: str) -> str:
    path = TEMPLATES_DIR / f"{template_id}.jinja"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ServerError(f"the built-in chat template '{template_id}' is missing: cannot read {path}: {err}") from err


def builtin_template(template_id: str) -> str:
    """The Jinja source of a built-in template (id case-insensitive).

    Raises :class:`ValidationError` (``param="chat_template"``) listing the built-in ids when ``template_id`` is
    not one of them.
    """
    return _read_builtin(_builtin_id(template_id))


def default_stop(template_id: str) -> list[str]:
    """The stop strings an alias gets by default with this built-in template (e.g. ``["<|eot_id|>"]``)."""
    return list(template_info(template_id).stop)


# -- the user's templates ----------------------------------------------------------------------------------------
def user_templates_dir(settings: Settings) -> Path:
    """``STUDIO_HOME/chat_templates``: a ``<name>.jinja`` there is the template ``<name>``."""
    return settings.home / USER_TEMPLATES_DIR


def _reserved(name: str) -> bool:
    return name.lower() in BUILTIN_TEMPLATES or name.lower() == EMBEDDED


def list_user_templates(settings: Settings) -> list[str]:
    """The names of the user's templates (``STUDIO_HOME/chat_templates/<name>.jinja``), sorted.

    A file named like a built-in template or ``embedded`` is left out (that name keeps meaning the built-in), and so
    is one whose name is not ``[A-Za-z0-9_.-]`` or starts with a dot; both are logged."""
    folder = user_templates_dir(settings)
    try:
        files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(TEMPLATE_SUFFIX) and p.is_file())
    except OSError:  # no folder yet (or unreadable): no user templates
        return []
    names: list[str] = []
    for path in files:
        name = path.name[: -len(TEMPLATE_SUFFIX)]
        if _reserved(name):
            log.warning("%s is ignored: '%s' is a built-in chat template", display_path(path, settings), name.lower())
        elif not _USER_NAME.fullmatch(name):
            log.warning("%s is ignored: a template name is letters, digits, '_', '-', '.'", path.name)
        else:
            names.append(name)
    return names


def template_choices(settings: Settings | None = None) -> list[str]:
    """Every ``chat_template`` value that needs no path: ``embedded``, the built-in ids, then the user's templates."""
    return [EMBEDDED, *BUILTIN_TEMPLATES, *(list_user_templates(settings) if settings is not None else [])]


def _template_file(spec: str, settings: Settings) -> Path:
    """The ``.jinja`` file a path names, confined to the model roots (:class:`ForbiddenError` outside them,
    before the disk is looked at); relative paths are taken from ``STUDIO_HOME/chat_templates``, then
    ``STUDIO_HOME``."""
    bases = [user_templates_dir(settings), settings.home]
    roots = model_roots(settings)
    where = describe_roots(roots if Path(spec.strip()).is_absolute() else bases, settings)
    found = find_user_path(spec, roots, param=_PARAM, bases=bases, where=where, suffixes=(TEMPLATE_SUFFIX,))
    return found.resolve()


def _read_template_file(path: Path, settings: Settings) -> str:
    """A user's template file, checked to parse (so an alias with a broken template fails validation, not a chat)."""
    shown = display_path(path, settings)
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ValidationError(
                f"chat template {shown} is larger than {MAX_TEMPLATE_BYTES // 1000} kB; is it a template?",
                param=_PARAM,
            )
        source = path.read_text(encoding="utf-8")
    except OSError as err:  # its text names the absolute path, which messages never reveal
        raise ValidationError(f"cannot read the chat template {shown}: {err.strerror}", param=_PARAM) from err
    except UnicodeDecodeError as err:
        raise ValidationError(f"chat template {shown} is not UTF-8 text: {err.reason}", param=_PARAM) from err
    if not source.strip():
        raise ValidationError(f"chat template {shown} is empty", param=_PARAM)
    try:
        _compile(source)
    except jinja2.TemplateSyntaxError as err:
        raise ValidationError(
            f"chat template {shown} has a syntax error on line {err.lineno}: {err.message}", param=_PARAM
        ) from err
    return source


def _is_path(spec: str) -> bool:
    return spec.lower().endswith(TEMPLATE_SUFFIX) or spec.startswith(("/", "~", "."))


# -- rendering -------------------------------------------------------------------------------------------------
class _GenerationTag(Extension):
    """Accept transformers' ``{% generation %}...{% endgeneration %}`` and render its body unchanged.

    Training templates wrap assistant turns in it to build loss masks; rendering a prompt needs only the text.
    """

    tags = {"generation"}  # noqa: RUF012 - jinja2 declares Extension.tags as a plain class attribute

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON (as in transformers).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def render_chat_template(
    source: str,
    messages: Sequence[Mapping[str, str]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render a conversation (``[{"role": ..., "content": ...}, ...]``) with a Jinja chat template.

    Raises :class:`ValidationError` (``param="chat_template"``) when the template does not parse, calls
    ``raise_exception`` (e.g. roles that do not alternate) or fails while rendering.
    """
    try:
        template = _compile(source)
    except jinja2.TemplateSyntaxError as err:
        raise ValidationError(
            f"chat template has a syntax error on line {err.lineno}: {err.message}", param=_PARAM
        ) from err
    try:
        return template.render(
            messages=[dict(message) for message in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    # A template is user code: any of these means the template (or the conversation it was given) is wrong.
    except (jinja2.TemplateError, TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as err:
        raise ValidationError(f"chat template failed to render: {err}", param=_PARAM) from err


# -- templates from model files --------------------------------------------------------------------------------
def template_from_tokenizer_config(path: Path) -> str | None:
    """The chat template stored with a tokenizer, or None when it has none.

    ``path`` is a ``tokenizer_config.json`` or the directory holding it. A sibling ``chat_template.jinja``
    (how transformers >= 4.50 saves templates) wins over the config's ``chat_template``, as it does in
    transformers. The config's value is a string, or a list of ``{"name", "template"}`` of which the one named
    ``default`` is used. Raises :class:`ValidationError` when the config is unreadable or malformed.
    """
    config_path = path / TOKENIZER_CONFIG_FILE if path.is_dir() else path
    jinja_path = config_path.parent / CHAT_TEMPLATE_FILE
    if jinja_path.is_file():
        try:
            source = jinja_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValidationError(f"cannot read the chat template {jinja_path}: {err}", param=_PARAM) from err
        return source or None
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValidationError(f"cannot read {config_path}: {err}", param=_PARAM) from err
    value = config.get("chat_template") if isinstance(config, dict) else None
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        named = {item.get("name"): item.get("template") for item in value}
        default = named.get("default")
        if isinstance(default, str) and default:
            return default
        log.info("%s has chat templates %s but none named 'default'", config_path, sorted(map(str, named)))
        return None
    raise ValidationError(
        f"{config_path}: chat_template must be a string or a list of {{name, template}}, not {type(value).__name__}",
        param=_PARAM,
    )


def _template_from_hf_cache(repo: str, hf_cache: Path) -> str:
    org, _, name = repo.partition("/")
    if not org or not name or "/" in name:
        raise ValidationError(
            f"chat template '{repo}' is neither a built-in template nor a Hugging Face repo id (org/name)",
            param=_PARAM,
        )
    repo_dir = hf_cache / f"models--{org}--{name}"
    fetch = f"nothing is downloaded: fetch it first (e.g. `hf download {repo} {TOKENIZER_CONFIG_FILE}`)"
    snapshot = pick_snapshot(repo_dir) if repo_dir.is_dir() else None
    if snapshot is None:
        raise ValidationError(
            f"chat template repo '{repo}' is not in the Hugging Face cache (looked for {repo_dir / 'snapshots'}); "
            f"{fetch}, or pick a built-in template: {', '.join(BUILTIN_TEMPLATES)}",
            param=_PARAM,
        )
    source = template_from_tokenizer_config(snapshot)
    if source is None:
        raise ValidationError(
            f"chat template repo '{repo}' has no chat template in the Hugging Face cache (looked for "
            f"{TOKENIZER_CONFIG_FILE} and {CHAT_TEMPLATE_FILE} in {snapshot}); {fetch}, or pick a built-in "
            f"template: {', '.join(BUILTIN_TEMPLATES)}",
            param=_PARAM,
        )
    return source


def resolve_template_source(
    spec: str, *, model_dir: Path | None, hf_cache: Path, settings: Settings | None = None
) -> tuple[str | None, list[str]]:
    """Turn an alias's ``chat_template`` into ``(jinja source, default stop strings)``.

    * a built-in id: its source and its default stops;
    * a user template's name (``settings`` given): ``STUDIO_HOME/chat_templates/<name>.jinja``;
    * a path to a ``.jinja`` file (``settings`` given): absolute, or relative to ``STUDIO_HOME/chat_templates``
      then ``STUDIO_HOME``; it must lie inside STUDIO_HOME, ``STUDIO_MODEL_DIRS`` or the Hugging Face cache, else
      :class:`~studio.errors.ForbiddenError` (without looking at the disk);
    * ``embedded``: the template stored in ``model_dir`` (``chat_template.jinja`` / ``tokenizer_config.json``),
      or ``(None, [])`` when there is none there (or ``model_dir`` is None or a GGUF file): the tokenizer then
      uses its own template;
    * ``org/name``: that repo's template from ``hf_cache`` (``models--org--name/snapshots/<refs/main or
      newest>/``), offline only.

    User templates and templates from model files come with no default stops. Raises :class:`ValidationError`
    (``param="chat_template"``) for an unknown spec, a template file that is missing, unreadable or does not
    parse, or a repo whose template is not in the cache, naming where it looked.
    """
    name = spec.strip()
    if name.lower() in BUILTIN_TEMPLATES:
        return builtin_template(name), default_stop(name)
    if name.lower() == EMBEDDED:
        if model_dir is None or not model_dir.is_dir():
            return None, []
        return template_from_tokenizer_config(model_dir), []
    if settings is not None and _is_path(name):
        return _read_template_file(_template_file(name, settings), settings), []
    if settings is not None and _USER_NAME.fullmatch(name):
        path = user_templates_dir(settings) / f"{name}{TEMPLATE_SUFFIX}"
        if path.is_file():
            return _read_template_file(path, settings), []
    if "/" in name and not _is_path(name):
        return _template_from_hf_cache(name, hf_cache), []
    mine = list_user_templates(settings) if settings is not None else []
    yours = f"; your templates ($STUDIO_HOME/{USER_TEMPLATES_DIR}/*.jinja): {', '.join(mine)}" if mine else ""
    raise ValidationError(
        f"unknown chat template '{spec}'; use a built-in template ({', '.join(BUILTIN_TEMPLATES)}){yours}, "
        f"'{EMBEDDED}' for the model's own, the name of a .jinja file in $STUDIO_HOME/{USER_TEMPLATES_DIR}/ or a "
        "path to one, or a Hugging Face repo id (org/name) whose tokenizer_config.json has one",
        param=_PARAM,
    )
