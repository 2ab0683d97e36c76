"""Studio settings: environment variables (prefix ``STUDIO_``) over ``configs/defaults.yaml``.

``STUDIO_HOME`` defaults to ``~/.whetstone``; on a Hugging Face Space with persistent storage (``/data``
exists and ``SPACE_ID`` is set) it defaults to ``/data/whetstone``. ``STUDIO_DATABASE_URL`` defaults to a
SQLite file (WAL mode) in ``STUDIO_HOME``; any SQLAlchemy URL works, PostgreSQL included.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
BUNDLED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@cache
def load_defaults() -> dict[str, Any]:
    """The parsed ``configs/defaults.yaml`` (read once per process)."""
    with open(CONFIG_DIR / "defaults.yaml", encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{CONFIG_DIR / 'defaults.yaml'} must hold a mapping")
    return data


def _default_home() -> Path:
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():
        return Path("/data/whetstone")
    return Path.home() / ".whetstone"


def _default_host() -> str:
    # Hugging Face Spaces sets GRADIO_SERVER_NAME=0.0.0.0 for `python app.py`.
    return os.environ.get("GRADIO_SERVER_NAME") or str(load_defaults()["server"]["host"])


def _default_port() -> int:
    raw = os.environ.get("GRADIO_SERVER_PORT")
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"GRADIO_SERVER_PORT must be a port number 1-65535; got {raw!r}") from None
    return int(load_defaults()["server"]["port"])


class Settings(BaseSettings):
    """Process-wide configuration. Construct once in ``AppContext``; pass it down, never import a global."""

    model_config = SettingsConfigDict(env_prefix="STUDIO_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Where aliases, models, runs and the DB live.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<home>/studio.db (WAL)."
    )
    default_model: str = Field(
        default_factory=lambda: str(load_defaults()["default_model"]),
        description="The model the name 'default' resolves to.",
    )
    host: str = Field(default_factory=_default_host)
    port: int = Field(default_factory=_default_port, ge=1, le=65535)
    api_key: str | None = Field(default=None, description="If set, REST calls need 'Authorization: Bearer <key>'.")
    model_dirs: str = Field(
        default="", description="Extra directories to scan for models, separated by the OS path separator."
    )
    hf_cache: Path | None = Field(default=None, description="Hugging Face hub cache; default HF_HUB_CACHE.")
    dtype: str = Field(default="auto", description="auto | bfloat16 | float16 | float32")
    threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; default: torch's own choice (all cores)."
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, v: str) -> str:
        allowed = ("auto", "bfloat16", "float16", "float32")
        if v not in allowed:
            raise ValueError(f"STUDIO_DTYPE must be one of {', '.join(allowed)}; got {v!r}")
        return v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'studio.db'}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def extra_model_dirs(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.model_dirs.split(os.pathsep) if p.strip()]

    @property
    def hf_cache_dir(self) -> Path:
        if self.hf_cache is not None:
            return self.hf_cache.expanduser()
        if os.environ.get("HF_HUB_CACHE"):
            return Path(os.environ["HF_HUB_CACHE"]).expanduser()
        hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
        return hf_home / "hub"

    def ensure_dirs(self) -> None:
        """Create STUDIO_HOME and its sub-folders."""
        for sub in ("", "models", "aliases", "adapters", "datasets", "runs", "exports", "plugins"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)


def generation_defaults() -> dict[str, Any]:
    """Default sampling parameters from ``configs/defaults.yaml``."""
    return dict(load_defaults()["generation"])
