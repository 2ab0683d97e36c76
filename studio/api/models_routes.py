"""The Models tab over REST (``/api/models/...``): deployments (serving processes and registered remote endpoints),
adapters and exports. The same functions as the tab and the CLI (``studio.deploy.service``,
``studio.models.adapters``, ``studio.export``); errors in the OpenAI shape, 400 naming the field, 404 for an
unknown name, 409 for a conflict (a port in use, a name taken, an adapter still loaded)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from studio.api.routing import StudioRoute
from studio.api.schemas import KEYED_ERRORS, RequestBody
from studio.context import AppContext
from studio.deploy.config import DeploymentCreate, RemoteDeploymentCreate
from studio.deploy.service import (
    DeploymentPublic,
    add_remote,
    delete_deployment,
    deployment_alias,
    deployment_logs,
    get_deployment,
    list_deployments,
    restart_deployment,
    start_deployment,
    stop_deployment,
)

router = APIRouter(prefix="/api/models", tags=["Models"], responses=KEYED_ERRORS, route_class=StudioRoute)


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


class DeploymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentPublic]


class DeploymentDeleted(BaseModel):
    id: str
    object: Literal["deployment"] = "deployment"
    deleted: bool = True


class DeploymentLogs(BaseModel):
    id: str
    lines: int
    log: str = Field(
        description="The last lines of the serving process's log (for a remote endpoint: where its logs are)."
    )


class DeploymentAlias(BaseModel):
    id: str
    alias: str = Field(description="The user alias (remote engine) that reaches the deployment from the Playground.")


@router.get("/deployments", response_model=DeploymentList)
def deployments(request: Request) -> DeploymentList:
    """Every deployment with its status from a health check made now, URL, engine, uptime and requests served."""
    ctx = _ctx(request)
    return DeploymentList(data=list_deployments(ctx.db, ctx.settings))


@router.post("/deployments", response_model=DeploymentPublic, status_code=201)
def create_deployment(body: DeploymentCreate, request: Request) -> DeploymentPublic:
    """Start a model, alias, ``adapter:NAME`` or ``export:NAME`` as its own serving process (status starting)."""
    ctx = _ctx(request)
    return start_deployment(ctx.db, ctx.settings, body)


@router.post("/deployments/remote", response_model=DeploymentPublic, status_code=201)
def create_remote_deployment(body: RemoteDeploymentCreate, request: Request) -> DeploymentPublic:
    """Register a cloud-hosted OpenAI-compatible endpoint (checked now; the key stays in its variable)."""
    ctx = _ctx(request)
    return add_remote(ctx.db, ctx.settings, body)


@router.get("/deployments/{ref}", response_model=DeploymentPublic)
def deployment(ref: str, request: Request) -> DeploymentPublic:
    """One deployment by id or name."""
    ctx = _ctx(request)
    return get_deployment(ctx.db, ctx.settings, ref)


@router.post("/deployments/{ref}/stop", response_model=DeploymentPublic)
def stop(ref: str, request: Request) -> DeploymentPublic:
    """Stop the serving process (its whole process group) or stop checking a remote endpoint."""
    ctx = _ctx(request)
    return stop_deployment(ctx.db, ctx.settings, ref)


@router.post("/deployments/{ref}/restart", response_model=DeploymentPublic)
def restart(ref: str, request: Request) -> DeploymentPublic:
    """Start a stopped, failed or lost deployment again on its port (a running one is stopped first)."""
    ctx = _ctx(request)
    return restart_deployment(ctx.db, ctx.settings, ref)


@router.delete("/deployments/{ref}", response_model=DeploymentDeleted)
def delete(ref: str, request: Request) -> DeploymentDeleted:
    """Forget a deployment that is not running (its row, log folder and Playground alias)."""
    ctx = _ctx(request)
    found = get_deployment(ctx.db, ctx.settings, ref)
    delete_deployment(ctx.db, ctx.settings, ref)
    return DeploymentDeleted(id=found.id)


@router.get("/deployments/{ref}/logs", response_model=DeploymentLogs)
def logs(ref: str, request: Request, lines: int = Query(100, ge=1, le=5000)) -> DeploymentLogs:
    """The last ``lines`` lines (1-5000) of the serving process's log."""
    ctx = _ctx(request)
    found = get_deployment(ctx.db, ctx.settings, ref)
    return DeploymentLogs(id=found.id, lines=lines, log=deployment_logs(ctx.db, ctx.settings, ref, lines))


@router.post("/deployments/{ref}/alias", response_model=DeploymentAlias)
def alias(ref: str, request: Request) -> DeploymentAlias:
    """Create the ``deploy:<name>`` alias that the Playground and Compare use to chat with the deployment."""
    ctx = _ctx(request)
    found = get_deployment(ctx.db, ctx.settings, ref)
    return DeploymentAlias(id=found.id, alias=deployment_alias(ctx.db, ctx.settings, found.id))


# -- adapters ----------------------------------------------------------------------------------------------------
class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(
        description="Each adapter: name, base_model, method, rank, alpha, target_modules, size_bytes, origin, job_id, "
        "dataset, loaded_on, created, problem."
    )


class AdapterRename(RequestBody):
    name: str = Field(min_length=1, max_length=100, description="The new name (letters, digits, '.', '_', '-').")


class AdapterDeleted(BaseModel):
    name: str
    object: Literal["adapter"] = "adapter"
    deleted: bool = True


@router.get("/adapters", response_model=AdapterList)
def adapters(request: Request) -> AdapterList:
    """Every adapter under STUDIO_HOME/adapters with its base, method, rank, target modules, size and origin."""
    from studio.models.adapters import list_adapters

    ctx = _ctx(request)
    return AdapterList(data=[a.to_dict() for a in list_adapters(ctx.settings, ctx.engines)])


@router.post("/adapters/{name}/rename", response_model=dict[str, Any])
def rename_adapter(name: str, body: AdapterRename, request: Request) -> dict[str, Any]:
    """Rename an adapter (409 while it is loaded)."""
    from studio.models.adapters import rename_adapter as rename

    ctx = _ctx(request)
    return rename(ctx.settings, name, body.name, ctx.engines).to_dict()


@router.delete("/adapters/{name}", response_model=AdapterDeleted)
def delete_adapter(name: str, request: Request) -> AdapterDeleted:
    """Delete an adapter (409 while it is loaded, naming the model to unload)."""
    from studio.models.adapters import delete_adapter as delete_one

    ctx = _ctx(request)
    delete_one(ctx.settings, name, ctx.engines)
    return AdapterDeleted(name=name)


# -- exports and push --------------------------------------------------------------------------------------------
class JobQueued(BaseModel):
    id: str = Field(description="The job's id: GET /api/models/jobs/{id} (or `studio jobs show ID`) follows it.")
    kind: str
    state: str
    config: dict[str, Any]


class ExportList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(
        description="Each finished export: name, format, path, created_at, source, registered_as, verification "
        "(prompts identical, token agreement, engine), size_bytes."
    )


class PushRequest(RequestBody):
    source: str = Field(min_length=1, max_length=1024, description="An adapter name, an export name or a model.")
    repo_id: str = Field(min_length=1, max_length=200, description="The Hub repository, 'user/name'.")
    private: bool = Field(True, description="Create the repository private.")
    token: str | None = Field(
        None, max_length=1000, description="A Hub token, used once by the job and never stored; default HF_TOKEN."
    )


class JobStatus(BaseModel):
    id: str
    kind: str
    state: str
    step: int
    total_steps: int | None
    message: str
    result: dict[str, Any]


def _queued(job: Any) -> JobQueued:
    return JobQueued(id=job.id, kind=job.kind, state=job.state, config=dict(job.config))


@router.get("/exports", response_model=ExportList)
def exports(request: Request) -> ExportList:
    """Every finished export with how it answered against its source."""
    from studio.export.exporter import list_exports

    return ExportList(data=[e.to_dict() for e in list_exports(_ctx(request).settings)])


@router.post("/exports", response_model=JobQueued, status_code=202)
def create_export(body: dict[str, Any], request: Request) -> JobQueued:
    """Queue an export job: ``{"format": "merged|gguf|onnx|triton|docker", "model", "adapter", "quant", "dtype",
    "name"}`` (the ``export`` job kind's config, checked at submit)."""
    from studio.jobs import queue

    ctx = _ctx(request)
    return _queued(queue.submit(ctx.db, "export", body, settings=ctx.settings))


@router.post("/push", response_model=JobQueued, status_code=202)
def push(body: PushRequest, request: Request) -> JobQueued:
    """Queue a push of an adapter or export to the Hugging Face Hub, with a generated model card."""
    from studio.export.push import submit_push

    ctx = _ctx(request)
    job = submit_push(ctx.settings, ctx.db, body.source, body.repo_id, private=body.private, token=body.token)
    return _queued(job)


@router.get("/jobs/{job_id}", response_model=JobStatus)
def job(job_id: str, request: Request) -> JobStatus:
    """Where an export, push or download job stands: state, step, message, result."""
    from studio.errors import NotFoundError
    from studio.jobs import queue

    row = queue.get_job(_ctx(request).db, job_id)
    if row.kind not in ("export", "push", "download"):
        raise NotFoundError(f"no export, push or download job '{job_id}'", param="job_id")
    return JobStatus(
        id=row.id,
        kind=row.kind,
        state=row.state,
        step=row.step,
        total_steps=row.total_steps,
        message=row.message or "",
        result=dict(row.result or {}),
    )
