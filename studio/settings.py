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
    api_key: str | None = Field(
        default=None,
        description="If set, every surface (UI, Gradio API, uploads, REST, WebSocket) needs it: "
        "'Authorization: Bearer <key>' or the session cookie the login page sets.",
    )
    admin_user: str | None = Field(
        default=None,
        description="With STUDIO_ADMIN_PASSWORD: the first admin, created at start if no user has that name "
        "(then every surface asks for a user).",
    )
    admin_password: str | None = Field(default=None, repr=False, description="The password of STUDIO_ADMIN_USER.")
    session_secret: str | None = Field(
        default=None,
        repr=False,
        description="Signs user sessions; default: a random secret made once in STUDIO_HOME/secrets/session.key.",
    )
    signin_max_failures: int = Field(
        default=5, ge=1, le=1000, description="Failed sign-ins per user name or address before sign-in pauses."
    )
    signin_window_s: float = Field(
        default=300.0, ge=1, le=86400, description="Seconds a failed sign-in counts towards the limit."
    )
    hf_admins: str = Field(
        default="",
        description="Comma-separated Hugging Face user names that become admins when they sign in with Hugging "
        "Face on a Space; everyone else who signs in becomes a member (STUDIO_HF_DEFAULT_ROLE).",
    )
    hf_default_role: str = Field(default="member", description="Role of a new Hugging Face sign-in: member | viewer.")
    insecure: bool = Field(
        default=False,
        description="Allow serving on a non-loopback address or a share link without STUDIO_API_KEY "
        "(anyone who can reach the port can use the studio).",
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names accepted in the Host header besides the loopback names "
        "(127.0.0.1, localhost, ::1) and the bound address; '*' accepts any (guards against DNS rebinding).",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins (scheme://host[:port]) allowed to call the studio from another "
        "site's pages; empty: cross-origin requests are refused.",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, le=1 << 34, description="Largest request body (uploads excepted), bytes."
    )
    max_upload_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024, le=1 << 40, description="Largest file upload, bytes."
    )
    max_prompt_chars: int = Field(
        default=200_000, ge=1, le=100_000_000, description="Most characters in one request's prompt/messages."
    )
    max_tokens_limit: int = Field(
        default=8192, ge=1, le=1_000_000, description="Most tokens one request may ask to generate."
    )
    max_running_per_model: int = Field(
        default=8, ge=1, le=4096, description="Generations that run at once on one loaded model."
    )
    max_queued_per_model: int = Field(
        default=32, ge=0, le=100_000, description="Generations that may wait for a slot per model; more get 429."
    )
    drain_timeout_s: float = Field(
        default=10.0, ge=0, le=3600, description="On shutdown, seconds running generations may finish."
    )
    disk_low_percent: float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="Notify 'disk nearly full' when less than this percent of the volume holding STUDIO_HOME is "
        "free (0 turns the check off).",
    )
    model_dirs: str = Field(
        default="", description="Extra directories to scan for models, separated by the OS path separator."
    )
    hf_cache: Path | None = Field(default=None, description="Hugging Face hub cache; default HF_HUB_CACHE.")
    hf_token: str | None = Field(
        default=None,
        repr=False,
        description="Token for gated or private Hugging Face repos; default: HF_TOKEN or the one `hf auth login` "
        "saved. Sent to the Hub only, never logged or stored in a job.",
    )
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

    @staticmethod
    def _csv(value: str) -> list[str]:
        return [part.strip() for part in value.split(",") if part.strip()]

    @property
    def allowed_host_names(self) -> list[str]:
        """Extra host names from ``STUDIO_ALLOWED_HOSTS`` (lower-case; ``*`` means any)."""
        return [h.lower() for h in self._csv(self.allowed_hosts)]

    @property
    def cors_origin_list(self) -> list[str]:
        """Origins from ``STUDIO_CORS_ORIGINS`` (no trailing slash)."""
        return [o.rstrip("/") for o in self._csv(self.cors_origins)]

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
