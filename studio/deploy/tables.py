"""The ``deployment`` table (created by the "deployments" migration in ``studio.db.migrations``).

One row per deployment: a serving process the studio started (``kind`` "local") or a cloud-hosted
OpenAI-compatible endpoint registered by URL (``kind`` "remote"). The lifecycle is documented in
:mod:`studio.deploy.service`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from studio.db.tables import new_id, utcnow


class Deployment(SQLModel, table=True):
    """A serving process or a remote endpoint, with what its last health check found.

    ``command`` is the exact argv the process was started with: re-attaching after a studio restart compares it
    (and ``proc_created``, the process's start time) with the live process holding ``pid``, so a pid the system
    gave to another program is never taken for ours. A remote endpoint stores the *name* of the environment
    variable holding its API key (``api_key_env``), never the key.
    """

    __tablename__ = "deployment"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(unique=True, max_length=64)
    kind: str = Field(max_length=16)  # local | remote
    target: str = Field(max_length=1024)  # as the user gave it: default, an alias, a model id, adapter:X, export:X
    target_kind: str = Field(max_length=16)  # model | alias | adapter | export | remote
    model_id: str = Field(default="", max_length=1024)  # the model that serves (resolved), or the remote model
    adapter: str | None = Field(default=None, max_length=1024)  # adapter folder, relative to STUDIO_HOME
    engine: str = Field(max_length=32)  # transformers | llamacpp | onnxruntime | vllm | remote
    host: str = Field(default="127.0.0.1", max_length=255)
    port: int | None = None
    base_url: str = Field(default="", max_length=1024)  # the OpenAI base URL clients use (…/v1)
    served_model: str = Field(default="", max_length=512)  # the `model` name requests send
    api_key_env: str | None = Field(default=None, max_length=128)
    status: str = Field(default="starting", index=True, max_length=16)
    message: str = Field(default="")  # why it is unhealthy / failed / lost (with the last log lines)
    pid: int | None = None
    proc_created: float | None = None  # psutil create_time of ``pid`` (tells a reused pid apart)
    command: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    requests_served: int = 0  # every run so far, this one included
    requests_before: int = 0  # served by the runs before the current one
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    healthy_at: datetime | None = None  # first healthy answer of the current run
    stopped_at: datetime | None = None
    checked_at: datetime | None = None
