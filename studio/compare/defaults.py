"""The Compare tab's defaults, read from ``configs/compare/defaults.yaml``."""

from __future__ import annotations

from functools import cache

import yaml
from pydantic import BaseModel, ConfigDict, Field

from studio.settings import CONFIG_DIR

DEFAULTS_FILE = CONFIG_DIR / "compare" / "defaults.yaml"


class LeaderboardConfig(BaseModel):
    """How ratings are computed (see :mod:`studio.compare.ratings`)."""

    model_config = ConfigDict(extra="forbid")

    elo_k: float = Field(32.0, gt=0, le=400, description="Online Elo: points moved per battle.")
    elo_base: float = Field(1000.0, description="Starting Elo rating and the Bradley–Terry scale's average.")
    bt_prior: float = Field(1.0, ge=0, le=100, description="Bradley–Terry: virtual ties with a reference player.")
    bootstrap_rounds: int = Field(200, ge=0, le=10_000, description="Bootstrap resamples for the intervals.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Width of the confidence intervals.")
    min_battles: int = Field(
        3, ge=1, le=1000, description="Fewer voted battles than this: 'n too small' instead of an interval."
    )
    seed: int = Field(0, ge=0, description="Bootstrap seed.")


class GenerationConfig(BaseModel):
    """Sampling defaults of a comparison (the form's starting values)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(128, ge=1, le=8192, description="New tokens per side.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature per side.")


class RankingConfig(BaseModel):
    """Limits of the ranking annotation."""

    model_config = ConfigDict(extra="forbid")

    min_candidates: int = Field(2, ge=2, le=6)
    max_candidates: int = Field(6, ge=2, le=6)
    score_min: int = Field(1, ge=0)
    score_max: int = Field(7, ge=1)


class CompareDefaults(BaseModel):
    """``configs/compare/defaults.yaml``."""

    model_config = ConfigDict(extra="forbid")

    leaderboard: LeaderboardConfig = Field(default_factory=LeaderboardConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    ranking: RankingConfig = Field(default_factory=RankingConfig)


@cache
def compare_defaults() -> CompareDefaults:
    """The parsed defaults file (read once per process)."""
    data = yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8")) or {}
    return CompareDefaults.model_validate(data)
