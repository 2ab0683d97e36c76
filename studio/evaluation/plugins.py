"""Custom metric plugins: Python files and YAML files in ``STUDIO_HOME/plugins/``, and installed packages.

**Python plugin** — a file ``STUDIO_HOME/plugins/<name>.py`` with a ``register(registry)`` function::

    def polite(sample):                       # or polite(sample, ctx): see studio.evaluation.metrics
        '''1 when the reply says please or thank you.'''
        text = sample.output.lower()
        return float("please" in text or "thank" in text)

    def register(registry):
        registry.add("polite", polite, "Says please or thank you", higher_is_better=True)

``registry.add(name, score, description, keys=..., higher_is_better=..., needs_reference=..., aggregate=...)``
is the whole hook. ``score`` gets a :class:`~studio.evaluation.metrics.Sample` (``input``, ``reference``,
``output``, ``messages``, ``stats``, ``model``) and returns a number, a mapping of named numbers, or None.

**Installed package** — an entry point in the group ``whetstone.metrics`` whose object is such a ``register``
function (``[project.entry-points."whetstone.metrics"] mymetrics = "mypkg.metrics:register"``).

**YAML metric** — a file ``STUDIO_HOME/plugins/<name>.yaml`` declaring one metric (or a list under ``metrics:``)::

    name: mentions_paris            # type: regex | keywords | json_schema | judge
    type: regex
    description: The reply names Paris
    pattern: "\\\\bParis\\\\b"
    ignore_case: true

    # type: keywords  -> include: [..], exclude: [..], mode: all | any, ignore_case: true
    # type: json_schema -> schema: {...}  (the output, or its first {...} / [...] block, must validate)
    # type: judge       -> template (with {input} {reference} {output}), min_score, max_score, score_pattern;
    #                      graded by the run's judge.model

Plugins load only from that folder and from installed packages, and the folder is filled through the file system
only: nothing the studio receives (UI, Gradio API, REST) is ever written there (``studio.paths.confine_write``
refuses it), because loading a Python plugin runs it. A plugin that fails to load is listed with its error; one
that raises while scoring is reported in the run (name and traceback) and the run completes.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from studio.evaluation.metrics import (
    DEFAULT_SCORE_PATTERN,
    JudgeRubric,
    MetricContext,
    MetricRegistry,
    MetricSpec,
    PluginInfo,
    Sample,
    Scores,
    builtin_metrics,
)
from studio.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "whetstone.metrics"


# --- declarative (YAML) metrics ------------------------------------------------------------------------------------


class _YamlMetric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Metric name (letters, digits, _ . -).")
    description: str = Field("", max_length=500)


class RegexMetricSpec(_YamlMetric):
    """1 when ``pattern`` matches the output (searched anywhere, or the whole output with ``full_match``)."""

    type: Literal["regex"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = False
    full_match: bool = False


class KeywordMetricSpec(_YamlMetric):
    """1 when the output holds the ``include`` keywords (all, or any with ``mode: any``) and none of ``exclude``."""

    type: Literal["keywords"]
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    mode: Literal["all", "any"] = "all"
    ignore_case: bool = True


class JsonSchemaMetricSpec(_YamlMetric):
    """1 when the output (or its first JSON block) is JSON that validates against ``schema``."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")


class JudgeMetricSpec(_YamlMetric):
    """A judge rubric of its own, graded by the run's judge model; the score is normalised to 0-1."""

    type: Literal["judge"]
    template: str = Field(min_length=1)
    min_score: float = 1.0
    max_score: float = 5.0
    score_pattern: str = DEFAULT_SCORE_PATTERN


YamlMetric = Annotated[
    RegexMetricSpec | KeywordMetricSpec | JsonSchemaMetricSpec | JudgeMetricSpec, Field(discriminator="type")
]
_YAML_ADAPTER: TypeAdapter[Any] = TypeAdapter(YamlMetric)


def _regex_metric(spec: RegexMetricSpec) -> Callable[[Sample, MetricContext], float]:
    pattern = re.compile(spec.pattern, re.IGNORECASE if spec.ignore_case else 0)

    def score(sample: Sample, _ctx: MetricContext) -> float:
        found = pattern.fullmatch(sample.output.strip()) if spec.full_match else pattern.search(sample.output)
        return float(found is not None)

    return score


def _keyword_metric(spec: KeywordMetricSpec) -> Callable[[Sample, MetricContext], float]:
    def fold(text: str) -> str:
        return text.casefold() if spec.ignore_case else text

    include = [fold(k) for k in spec.include]
    exclude = [fold(k) for k in spec.exclude]

    def score(sample: Sample, _ctx: MetricContext) -> float:
        text = fold(sample.output)
        hits = [k in text for k in include]
        included = (all(hits) if spec.mode == "all" else any(hits)) if include else True
        return float(included and not any(k in text for k in exclude))

    return score


def extract_json(text: str) -> Any:
    """The output as JSON: the whole text, else its first ``{...}`` or ``[...]`` block (models wrap JSON in prose
    or code fences). Raises ``ValueError`` when there is none."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(stripped):
        if ch in "{[":
            try:
                return decoder.raw_decode(stripped[i:])[0]
            except ValueError:
                continue
    raise ValueError("no JSON found in the output")


def _json_schema_metric(spec: JsonSchemaMetricSpec) -> Callable[[Sample, MetricContext], float]:
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(spec.schema_)
    validator_cls.check_schema(spec.schema_)
    validator = validator_cls(spec.schema_)

    def score(sample: Sample, _ctx: MetricContext) -> float:
        try:
            value = extract_json(sample.output)
        except ValueError:
            return 0.0
        return float(validator.is_valid(value))

    return score


def _judge_metric(spec: JudgeMetricSpec) -> Callable[[Sample, MetricContext], Scores]:
    rubric = JudgeRubric(
        name=spec.name,
        template=spec.template,
        min_score=spec.min_score,
        max_score=spec.max_score,
        score_pattern=spec.score_pattern,
        description=spec.description,
    )
    re.compile(rubric.score_pattern)
    if "{output}" not in spec.template:
        raise ValueError("a judge template must contain {output}")

    def score(sample: Sample, ctx: MetricContext) -> Scores:
        return rubric.scores(ctx.ask_judge(rubric.prompt(sample)), prefix=spec.name)

    return score


def metric_from_yaml(data: dict[str, Any], source: str) -> MetricSpec:
    """One declarative metric from its parsed YAML mapping; ``ValueError`` names the bad field."""
    try:
        spec = _YAML_ADAPTER.validate_python(data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(metric)"
        raise ValueError(f"{where}: {err['msg']}") from None
    keys: tuple[str, ...] = (spec.name,)
    score: Callable[[Sample, MetricContext], Any]
    if isinstance(spec, RegexMetricSpec):
        score = _regex_metric(spec)
    elif isinstance(spec, KeywordMetricSpec):
        score = _keyword_metric(spec)
    elif isinstance(spec, JsonSchemaMetricSpec):
        score = _json_schema_metric(spec)
    else:
        score = _judge_metric(spec)
        keys = (spec.name, f"{spec.name}_raw", f"{spec.name}_valid")
    return MetricSpec(
        name=spec.name,
        description=spec.description or f"{spec.type} metric from {Path(source).name}",
        score=score,
        keys=keys,
        higher_is_better=True,
        source=source,
    )


# --- loading ----------------------------------------------------------------------------------------------------


def _error_text() -> str:
    return traceback.format_exc().rstrip()


def _load_python_file(registry: MetricRegistry, path: Path) -> PluginInfo:
    before = set(registry.names())
    registry._current_source = str(path)
    try:
        module_name = f"whetstone_plugin_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        register = getattr(module, "register", None)
        if not callable(register):
            raise AttributeError(f"{path.name} defines no register(registry) function")
        register(registry)
        description = (module.__doc__ or "").strip().split("\n", 1)[0]
    except Exception:  # a broken plugin is listed with its traceback; the others still load
        log.warning("metric plugin %s failed to load", path, exc_info=True)
        return PluginInfo(path.stem, str(path), "python", "", error=_error_text())
    finally:
        registry._current_source = "builtin"
    added = tuple(n for n in registry.names() if n not in before)
    return PluginInfo(path.stem, str(path), "python", description, metrics=added)


def _load_yaml_file(registry: MetricRegistry, path: Path) -> PluginInfo:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        entries = data.get("metrics") if isinstance(data, dict) and "metrics" in data else [data]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("a YAML metric file holds one metric mapping, or a list of them under 'metrics:'")
        specs = [metric_from_yaml(entry, str(path)) for entry in entries]
        for spec in specs:
            registry.register(spec)
    except Exception:  # listed with the reason; the other plugins still load
        log.warning("YAML metric %s failed to load", path, exc_info=True)
        return PluginInfo(path.stem, str(path), "yaml", "", error=_error_text())
    description = "; ".join(s.description for s in specs)
    return PluginInfo(path.stem, str(path), "yaml", description, metrics=tuple(s.name for s in specs))


def _load_entry_points(registry: MetricRegistry) -> list[PluginInfo]:
    infos: list[PluginInfo] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        before = set(registry.names())
        registry._current_source = f"entry point {ep.value}"
        try:
            register = ep.load()
            register(registry)
        except Exception:
            log.warning("metric entry point %s failed to load", ep.value, exc_info=True)
            infos.append(PluginInfo(ep.name, ep.value, "entry_point", "", error=_error_text()))
            continue
        finally:
            registry._current_source = "builtin"
        added = tuple(n for n in registry.names() if n not in before)
        doc = (getattr(register, "__doc__", None) or "").strip().split("\n", 1)[0]
        infos.append(PluginInfo(ep.name, ep.value, "entry_point", doc, metrics=added))
    return infos


def plugin_files(folder: Path) -> list[Path]:
    """The plugin files of ``folder`` in name order (hidden and ``_``-prefixed files are skipped)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in (".py", ".yaml", ".yml") and not p.name.startswith((".", "_"))
    )


def load_registry(
    settings: Settings | None = None, *, folder: Path | None = None, entry_points: bool = True
) -> MetricRegistry:
    """The built-in metrics plus every plugin of ``STUDIO_HOME/plugins/`` (or ``folder``) and of installed
    packages. ``registry.plugins`` lists each plugin with its metrics, or its load error."""
    registry = MetricRegistry(builtin_metrics())
    target = folder if folder is not None else (settings.home / "plugins" if settings is not None else None)
    infos: list[PluginInfo] = []
    if entry_points:
        infos.extend(_load_entry_points(registry))
    for path in plugin_files(target) if target is not None else []:
        infos.append(_load_python_file(registry, path) if path.suffix == ".py" else _load_yaml_file(registry, path))
    registry.plugins = infos
    return registry


def plugin_rows(infos: Iterable[PluginInfo]) -> list[list[str]]:
    """Plugins as table rows: name, kind, metrics, description (or the first line of the error)."""
    rows = []
    for info in infos:
        status = f"failed: {info.error.strip().splitlines()[-1]}" if info.error else ", ".join(info.metrics) or "(none)"
        rows.append([info.name, info.kind, status, info.description, info.source])
    return rows
