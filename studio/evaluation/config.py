"""The one schema of an evaluation run: the YAML file, the Evaluate tab's form, the CLI and the stored job row.

An eval YAML file looks like::

    kind: eval
    name: smollm2-quick
    models: [HuggingFaceTB/SmolLM2-135M-Instruct]          # aliases / registry ids, or {model, adapter, label}
    dataset_file: configs/eval/data/quick-qa.jsonl         # or dataset: NAME (+ dataset_version), or text_file
    metrics: [perplexity, rouge, exact_match]
    generation: {temperature: 0.0, max_tokens: 48}
    limit: 12

``prepare_eval`` (the job kind's submit-time hook) resolves the data source against the studio: a
``dataset_file`` is imported into the dataset store, and the dataset version number and content hash are pinned
into the stored config, so a run always names exactly the data it scored.

Files a config names (``dataset_file``, ``text_file``, ``judge.rubric``) are read only from STUDIO_HOME and the
shipped ``configs/`` folder (:func:`resolve_path`): put your own data under STUDIO_HOME (e.g.
``$STUDIO_HOME/eval/my-data.jsonl``, written ``eval/my-data.jsonl``). ``~`` is never expanded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from studio.errors import StudioError, ValidationError
from studio.paths import check_user_path_text, config_roots, describe_roots, find_user_path
from studio.settings import CONFIG_DIR, Settings

EVAL_CONFIG_DIR = CONFIG_DIR / "eval"
#: where relative ``dataset_file`` / ``text_file`` / rubric paths are also looked for (the repository root, for the
#: shipped ``configs/eval/...``), after STUDIO_HOME
REPO_ROOT = CONFIG_DIR.parent
RUBRIC_SUFFIXES = (".yaml", ".yml")


def _check_path_text(value: str | None, param: str) -> str | None:
    """The checks a path field gets from its text alone (NUL, '~', over-long names); where it may point is checked
    when the studio resolves it (:func:`resolve_path`)."""
    if value is None or not value.strip():
        return None
    try:
        return check_user_path_text(value, param=param)
    except StudioError as exc:
        raise ValueError(exc.message.removeprefix(f"'{param}'").lstrip(": ")) from None


class ModelSpec(BaseModel):
    """One model under evaluation: an alias or model id, optionally with a PEFT adapter on top."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=512,
        description="Alias, registry id (repo:QUANT) or a model folder under STUDIO_HOME or STUDIO_MODEL_DIRS.",
    )
    adapter: str | None = Field(
        None,
        max_length=1024,
        description="PEFT adapter: a name under STUDIO_HOME/adapters, or its folder under STUDIO_HOME or "
        "STUDIO_MODEL_DIRS.",
    )
    label: str | None = Field(
        None, max_length=200, description="Name shown in results; default: model, plus '+adapter' when one is set."
    )

    @property
    def display(self) -> str:
        """The label results use for this model."""
        if self.label:
            return self.label
        if self.adapter:
            return f"{self.model}+{Path(self.adapter).name}"
        return self.model


class EvalGenerationConfig(BaseModel):
    """Sampling for the generations under evaluation (greedy by default, so runs are repeatable)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy decoding (repeatable scores).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1 = off).")
    top_k: int = Field(0, ge=0, le=1000, description="Keep only the k most likely tokens (0 = no limit).")
    max_tokens: int = Field(64, ge=1, le=4096, description="Most tokens generated per example.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0, description="1.0 = off.")
    seed: int | None = Field(0, ge=0, description="Fixes sampling when temperature > 0.")
    stop: list[str] = Field(default_factory=list, max_length=8, description="Stop sequences.")

    def sampling_overrides(self) -> dict[str, Any]:
        """The values as ``SamplingParams`` keyword arguments."""
        return self.model_dump()


class JudgeConfig(BaseModel):
    """LLM-as-judge: which model grades the outputs and with which rubric."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=512, description="Alias or model id of the judge.")
    rubric: str = Field(
        "judge_rubric.yaml",
        max_length=1024,
        description="Rubric YAML: a file name under configs/eval/ (default judge_rubric.yaml), or a path under "
        "STUDIO_HOME (relative paths are taken from it) or configs/.",
    )
    max_tokens: int = Field(96, ge=8, le=2048, description="Most tokens the judge may write per verdict.")

    @field_validator("rubric")
    @classmethod
    def _rubric_file(cls, v: str) -> str:
        text = _check_path_text(v, "judge.rubric")
        if text is None or not text.lower().endswith(RUBRIC_SUFFIXES):
            raise ValueError("a judge rubric is a .yaml or .yml file")
        return text


class EvalConfig(BaseModel):
    """An evaluation run: models × examples × metrics."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["eval"] = Field("eval", description="Job kind; always 'eval' for this schema.")
    name: str = Field("", max_length=200, description="Run name shown in lists (default: the config file's name).")
    models: list[ModelSpec] = Field(min_length=1, max_length=16, description="Models (aliases/ids, adapters).")
    dataset: str | None = Field(None, max_length=200, description="Dataset name in the studio's dataset store.")
    dataset_version: int | None = Field(None, ge=1, description="Dataset version number; empty = the latest.")
    dataset_hash: str | None = Field(None, max_length=64, description="Content hash of the version (set at submit).")
    dataset_file: str | None = Field(
        None,
        max_length=1024,
        description="A JSONL/CSV file of examples under STUDIO_HOME (relative paths are taken from it) or the "
        "shipped configs/, imported into the dataset store at submit (as 'dataset').",
    )
    text_file: str | None = Field(
        None,
        max_length=1024,
        description="A plain text file under STUDIO_HOME or configs/ (paragraphs separated by blank lines): for "
        "perplexity and LAMBADA-style runs.",
    )
    metrics: list[str] = Field(min_length=1, max_length=32, description="Metric names (built-in or plugin).")
    generation: EvalGenerationConfig = Field(default_factory=EvalGenerationConfig)
    limit: int | None = Field(None, ge=1, le=100_000, description="Score at most this many examples (empty = all).")
    judge: JudgeConfig | None = Field(None, description="Needed by the 'judge' metric and judge-rubric plugins.")
    perplexity_window: int = Field(
        512, ge=8, le=32768, description="Sliding-window size in tokens for perplexity of long texts."
    )
    perplexity_stride: int = Field(
        256, ge=1, le=32768, description="How far the perplexity window moves each time (≤ window)."
    )
    priority: int = Field(0, ge=-100, le=100, description="Queue priority; higher runs first.")

    @field_validator("models", mode="before")
    @classmethod
    def _models_from_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"model": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("dataset_file", "text_file")
    @classmethod
    def _path_text(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_path_text(v, str(info.field_name))

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m for m in re.split(r"[,\s]+", value) if m]
        return value

    @field_validator("metrics", mode="after")
    @classmethod
    def _unique_metrics(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(m.strip() for m in value if m.strip()))

    @model_validator(mode="after")
    def _one_source(self) -> EvalConfig:
        sources = [s for s in ("dataset", "dataset_file", "text_file") if getattr(self, s)]
        if "text_file" in sources and len(sources) > 1:
            raise ValueError("give either a dataset (dataset / dataset_file) or a text_file, not both")
        if not sources:
            raise ValueError("give the data to evaluate on: dataset (a stored dataset), dataset_file or text_file")
        if self.perplexity_stride > self.perplexity_window:
            raise ValueError("perplexity_stride must not exceed perplexity_window")
        labels = [m.display for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError("two models have the same label; give each a distinct 'label'")
        return self

    @property
    def source_label(self) -> str:
        """What the run scored, for people: 'dataset quick-qa v1' or 'text file wiki.txt'."""
        if self.text_file:
            return f"text file {Path(self.text_file).name}"
        version = f" v{self.dataset_version}" if self.dataset_version else ""
        return f"dataset {self.dataset or Path(self.dataset_file or '').stem}{version}"


def resolve_path(raw: str, param: str, settings: Settings | None = None) -> Path:
    """A file a config names: absolute, or relative to STUDIO_HOME and then to the repository root (so shipped
    examples such as ``configs/eval/data/...`` work from anywhere). It must lie under STUDIO_HOME or ``configs/``
    (only ``configs/`` without ``settings``): else :class:`~studio.errors.ForbiddenError`, the same answer whether
    the file exists or not. Messages never show an absolute path."""
    roots = config_roots(settings) if settings is not None else [CONFIG_DIR]
    bases = [settings.home, REPO_ROOT] if settings is not None else [REPO_ROOT]
    where = describe_roots(roots, settings) if settings is not None else "configs"
    return find_user_path(raw, roots, param=param, bases=bases, where=where).resolve()


def resolve_rubric(ref: str, settings: Settings | None = None) -> Path:
    """A judge rubric: a file name under ``configs/eval/`` (``judge_rubric.yaml``), else as :func:`resolve_path`."""
    text = check_user_path_text(ref, param="judge.rubric")
    if "/" not in text and "\\" not in text and (EVAL_CONFIG_DIR / text).is_file():
        return EVAL_CONFIG_DIR / text
    return resolve_path(text, "judge.rubric", settings)


def parse_eval_config(data: dict[str, Any]) -> EvalConfig:
    """Validate a mapping as an :class:`EvalConfig`; the error names every bad field."""
    try:
        return EvalConfig.model_validate(data)
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(config)"
            problems.append(f"{where}: {err['msg']}")
        first = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
        raise ValidationError("invalid eval config: " + "; ".join(problems), param=first or "config") from None


def eval_config_from_yaml(text: str, source: str = "eval config") -> EvalConfig:
    """Parse eval YAML text (a ``kind: eval`` line is allowed)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML: {exc}", param="config") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{source}: an eval config must be a YAML mapping of fields", param="config")
    return parse_eval_config(data)


def eval_config_to_yaml(config: EvalConfig) -> str:
    """The config as YAML, unset optional fields left out."""
    data = config.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
