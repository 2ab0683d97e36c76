"""The Evaluate tab's starting values, read from ``configs/eval/defaults.yaml``: the form as it first appears must
run as it is (issue 15: "Run" with the defaults failed because no dataset was preselected)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import yaml
from pydantic import BaseModel, ConfigDict, Field

from studio.evaluation.config import EVAL_CONFIG_DIR, EvalGenerationConfig

DEFAULTS_FILE = EVAL_CONFIG_DIR / "defaults.yaml"


class EvalFormDefaultsConfig(BaseModel):
    """``configs/eval/defaults.yaml``: the New-run form's starting values."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(
        "whetstone-assistant",
        max_length=200,
        description="Dataset preselected when the store has it; else the first stored dataset is.",
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["perplexity", "rouge", "exact_match"],
        max_length=32,
        description="Metrics preselected (those the registry does not know are left out).",
    )
    max_tokens: int = Field(
        EvalGenerationConfig.model_fields["max_tokens"].default, ge=1, le=4096, description="Most tokens per example."
    )
    limit: int = Field(10, ge=0, le=100_000, description="Examples scored; 0 = every example.")

    def pick_dataset(self, names: Sequence[str]) -> str | None:
        """The dataset the form preselects among the stored ``names``: the configured one, else the first; None
        when the store is empty."""
        if self.dataset and self.dataset in names:
            return self.dataset
        return names[0] if names else None

    def pick_metrics(self, known: Sequence[str]) -> list[str]:
        """The configured metrics that ``known`` (the metric registry's names) has, in the configured order."""
        return [m for m in self.metrics if m in known]


@cache
def eval_form_defaults() -> EvalFormDefaultsConfig:
    """The parsed defaults file (read once per process)."""
    data = yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8")) or {}
    return EvalFormDefaultsConfig.model_validate(data)
