"""Deployments' lifecycle: start, health, stop, restart, delete, re-attach after a restart, logs, Playground alias.

States of a row (``Deployment.status``)::

    local:   starting ──/health 200──▶ healthy ◀──▶ unhealthy        (process alive)
                │                         │             │
                └───── process died ──────┴─────────────┴──▶ failed  (message: how it ended + last log lines)
             any running state ──stop──▶ stopped ──restart──▶ starting
             after a studio restart (reattach): alive, ours and answering ▶ healthy; alive, ours, not answering ▶
             starting/unhealthy; pid gone or held by another program ▶ lost (with the last log lines)
    remote:  healthy ◀──▶ unhealthy (GET {base_url}/models with the key); stop ▶ stopped (no more checks)

*starting* lasts until the first healthy answer or ``start_timeout_s`` (then *unhealthy*: alive, not answering).
Every state comes from a real check made by :func:`refresh_deployments` (the UI's timer, ``studio deploy list``)
-- nothing is assumed. A process is "ours" when its pid, start time and argv all match the row
(:func:`studio.deploy.process.process_state`).

Local processes: ``studio serve-model`` (transformers, llama.cpp, ONNX Runtime: the studio's own OpenAI API) or
vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``, with ``STUDIO_VLLM_PYTHON`` when set). Each
logs to ``STUDIO_HOME/deployments/<id>/server.log`` and survives the studio. Requests served are read from the
process's ``/metrics`` and kept in the row across restarts of the deployment.

A port in use is refused before anything starts (ConflictError naming the port, and who holds it when the
system says); so is a port another running deployment was given.

The checks are in :mod:`studio.deploy.checks` and the row's public shape in :mod:`studio.deploy.records`; this module
re-exports what callers use, so the CLI, the REST API and the UI import the deployments' API from here alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from studio.aliases.resolve import AliasResolver
from studio.aliases.store import AliasStore
from studio.db.engine import Database
from studio.deploy.checks import (
    list_deployments,
    reattach,
    refresh_deployments,
    refresh_one,
    run_check,
    wait_until_ready,
)
from studio.deploy.config import (
    AUTO_PORTS,
    DeploymentCreate,
    RemoteDeploymentCreate,
    check_name,
    parse_create,
    parse_remote,
)
from studio.deploy.process import port_holder, port_in_use, process_state, spawn, stop_group, tail, wait_reaped
from studio.deploy.records import (
    RUNNING,
    STATUSES,
    DeploymentPublic,
    check_host,
    deployments_dir,
    find_row,
    get_deployment,
    log_path,
    now,
    server_url,
)
from studio.deploy.tables import Deployment
from studio.deploy.targets import DeployTarget, resolve_target
from studio.errors import ConflictError, ValidationError
from studio.settings import Settings

log = logging.getLogger(__name__)

ALIAS_PREFIX = "deploy:"
STOP_TIMEOUT_S = 10.0


def _resolver(settings: Settings) -> AliasResolver:
    from studio.models.registry import ModelRegistry

    return AliasResolver(AliasStore(settings.home / "aliases", label="$STUDIO_HOME/aliases"), ModelRegistry(settings))


# -- engines and commands ----------------------------------------------------------------------------------------
def choose_deploy_engine(target: DeployTarget, requested: str) -> str:
    """The engine that serves ``target``: ``requested``, checked against the model's format and what is
    installed, or the studio's ``auto`` rule (ONNX exports: onnxruntime; an adapter never lands on llama.cpp)."""
    from studio.inference.routing import choose_engine

    entry = target.resolved.entry
    name = (requested or "auto").strip().lower()
    if target.onnx:
        if name not in ("auto", "onnxruntime"):
            raise ValidationError(f"'{target.text}' is an ONNX model: serve it with onnxruntime", param="engine")
        if target.adapter is not None:
            raise ValidationError("an ONNX export cannot take a PEFT adapter: export the merged model", param="adapter")
        return choose_engine(entry, "onnxruntime", requested_by="deployment").engine  # 503 when not installed
    if name == "onnxruntime":
        raise ValidationError(
            f"the onnxruntime engine serves ONNX exports (export:NAME with model.onnx); '{target.text}' is a "
            f"{entry.format} model",
            param="engine",
        )
    if name == "auto":
        cp = target.resolved.alias.context_params if target.resolved.alias else None
        if cp is not None and cp.engine not in (None, "auto", "remote"):
            name = cp.engine  # an alias that names its engine keeps it
    if target.adapter is not None and name == "llamacpp":
        raise ValidationError(
            "llama.cpp cannot serve a PEFT adapter on top of a model: use transformers or vllm, or deploy a merged "
            "or GGUF export of it",
            param="engine",
        )
    choice = choose_engine(entry, None if name == "auto" else name, requested_by="deployment")
    if target.adapter is not None and choice.engine == "llamacpp":
        return "transformers"
    return choice.engine


def _serve_model_command(row: Deployment, settings: Settings) -> list[str]:
    cmd = [sys.executable, "-m", "studio", "serve-model", row.target, "--engine", row.engine]
    cmd += ["--host", row.host, "--port", str(row.port), "--name", row.served_model]
    if row.adapter and row.target_kind != "adapter":  # adapter:NAME names its adapter itself
        cmd += ["--adapter", str(settings.home / row.adapter)]
    return cmd


def _vllm_command(row: Deployment, settings: Settings, target: DeployTarget) -> list[str]:
    from studio.inference.vllm_backend import server_command
    from studio.models.convert import prepare_model

    path = prepare_model(target.resolved.entry, settings.models_dir)
    served = f"{row.name}-base" if row.adapter else row.served_model
    cmd = server_command(path, served, int(row.port or 0), enable_lora=bool(row.adapter))
    cmd[cmd.index("--host") + 1] = row.host
    if row.adapter:
        cmd += ["--lora-modules", f"{row.served_model}={settings.home / row.adapter}"]
    return cmd


def _env(settings: Settings, db: Database, engine: str) -> dict[str, str]:
    from studio.jobs.procs import child_env

    env = child_env(settings, db.url)
    if engine == "vllm":
        from studio.inference.vllm_backend import server_env

        env.update({k: v for k, v in server_env().items() if os.environ.get(k) != v})
        if settings.api_key:  # vLLM checks this key itself (an environment variable: never visible in `ps`)
            env["VLLM_API_KEY"] = settings.api_key
    return env


# -- starting ----------------------------------------------------------------------------------------------------
def _default_name(session: Any, target: DeployTarget, port: int) -> str:
    stem = target.text.split(":", 1)[1] if target.text.startswith(("adapter:", "export:")) else target.model_id
    stem = "".join(c if c.isalnum() or c in "_.-" else "-" for c in Path(stem).name).strip(".-_") or "model"
    name = f"{stem[:50]}-{port}"
    taken = {r.name for r in session.exec(select(Deployment)).all()}
    n = 2
    candidate = name
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _busy_ports(session: Any) -> dict[int, str]:
    rows = session.exec(select(Deployment).where(Deployment.kind == "local")).all()
    return {int(r.port): r.name for r in rows if r.port is not None and r.status in RUNNING}


def _pick_port(session: Any, host: str, wanted: int | None) -> int:
    busy = _busy_ports(session)
    if wanted is not None:
        if wanted in busy:
            raise ConflictError(
                f"port {wanted} is in use by the deployment '{busy[wanted]}'; choose another port", param="port"
            )
        if port_in_use(host, wanted):
            raise ConflictError(
                f"port {wanted} on {host} is in use{port_holder(wanted)}; choose another port", param="port"
            )
        return wanted
    for port in AUTO_PORTS:
        if port not in busy and not port_in_use(host, port):
            return port
    raise ConflictError(
        f"no free port from {AUTO_PORTS.start} to {AUTO_PORTS.stop - 1}; give one with --port", param="port"
    )


def start_deployment(db: Database, settings: Settings, data: dict[str, Any] | DeploymentCreate) -> DeploymentPublic:
    """Deploy a model, alias, adapter or export as its own serving process and return its row (status
    *starting*; :func:`wait_until_ready` or the UI's refresh follows it to *healthy* or *failed*).

    Refused before anything starts: a bad field (400 naming it), a target that is not there (404), a host that
    needs a key (400), a port in use or taken by another running deployment (409 naming it), a name in use (409)."""
    from studio.auth import check_bind

    spec = parse_create(data)
    check_bind(settings, spec.host)
    target = resolve_target(settings, _resolver(settings), spec.target, spec.adapter, spec.engine)
    engine = choose_deploy_engine(target, spec.engine)
    with db.session() as session:
        port = _pick_port(session, spec.host, spec.port)
        name = spec.name or _default_name(session, target, port)
        if session.exec(select(Deployment).where(Deployment.name == name)).first() is not None:
            raise ConflictError(f"a deployment named '{name}' exists; choose another --name", param="name")
        adapter = None
        if target.adapter is not None:
            home = settings.home.resolve()
            adapter = str(target.adapter.relative_to(home)) if target.adapter.is_relative_to(home) else None
            if adapter is None:
                raise ValidationError("'adapter': a deployed adapter must be under STUDIO_HOME", param="adapter")
        row = Deployment(
            name=name,
            kind="local",
            target=target.text,
            target_kind=target.kind,
            model_id=target.model_id,
            adapter=adapter,
            engine=engine,
            host=spec.host,
            port=port,
            base_url=f"{server_url(spec.host, port)}/v1",
            served_model=name,
            config=spec.model_dump(),
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise ConflictError(f"a deployment named '{name}' exists; choose another --name", param="name") from None
    return _launch(db, settings, row.id, target)


def _launch(
    db: Database, settings: Settings, deployment_id: str, target: DeployTarget | None = None
) -> DeploymentPublic:
    """Spawn the row's process and record it (the row is *failed* with the reason if it cannot even start)."""
    with db.session() as session:
        row = session.get(Deployment, deployment_id)
        assert row is not None
        try:
            if row.engine == "vllm":
                found = target or resolve_target(settings, _resolver(settings), row.target, None, row.engine)
                command = _vllm_command(row, settings, found)
            else:
                command = _serve_model_command(row, settings)
            pid, created = spawn(command, _env(settings, db, row.engine), log_path(settings, row.id))
        except OSError as exc:
            row.status, row.message = "failed", f"could not start the serving process: {exc}"
            session.add(row)
            return DeploymentPublic.from_row(row, settings)
        row.command, row.pid, row.proc_created = command, pid, created
        row.status, row.message = "starting", "loading the model"
        row.started_at, row.healthy_at, row.stopped_at, row.checked_at = now(), None, None, None
        row.requests_before = row.requests_served
        session.add(row)
        log.info("deployment %s (%s) started: pid %d, %s", row.name, row.id, pid, row.base_url)
        return DeploymentPublic.from_row(row, settings)


# -- remote endpoints --------------------------------------------------------------------------------------------
def add_remote(db: Database, settings: Settings, data: dict[str, Any] | RemoteDeploymentCreate) -> DeploymentPublic:
    """Register an OpenAI-compatible endpoint (cloud-hosted or any other) as a deployment and check it once.
    Only the *name* of the environment variable holding its key is stored."""
    spec = parse_remote(data)
    with db.session() as session:
        if session.exec(select(Deployment).where(Deployment.name == spec.name)).first() is not None:
            raise ConflictError(f"a deployment named '{spec.name}' exists; choose another name", param="name")
        row = Deployment(
            name=spec.name,
            kind="remote",
            target=spec.base_url,
            target_kind="remote",
            model_id=spec.model or "",
            engine="remote",
            host="",
            port=None,
            base_url=spec.base_url,
            served_model=spec.model or "",
            api_key_env=spec.api_key_env,
            status="unhealthy",
            message="not checked yet",
            config=spec.model_dump(),
            started_at=now(),
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise ConflictError(f"a deployment named '{spec.name}' exists; choose another name", param="name") from None
        deployment_id = row.id
    return refresh_one(db, settings, deployment_id)


# -- stop / restart / delete -------------------------------------------------------------------------------------
def stop_deployment(db: Database, settings: Settings, ref: str, timeout_s: float = STOP_TIMEOUT_S) -> DeploymentPublic:
    """Stop a deployment: SIGTERM its process group, SIGKILL after ``timeout_s``; the requests it served are kept.
    A remote endpoint is only no longer checked. Stopping a stopped one changes nothing."""
    with db.session() as session:
        deployment_id = find_row(session, ref).id
    if db_row_kind(db, deployment_id) == "local":
        run_check(db, settings, deployment_id)  # the last requests-served count, or how it died
    with db.session() as session:
        row = session.get(Deployment, deployment_id)
        assert row is not None
        if row.kind == "remote":
            row.status, row.message, row.healthy_at = "stopped", "not checked while stopped", None
        elif row.status in RUNNING:
            how = "was already gone"
            if row.pid is not None and process_state(row.pid, row.proc_created, row.command) == "alive":
                how = stop_group(row.pid, timeout_s)
                wait_reaped(row.pid)
            row.status, row.message = "stopped", f"stopped by request: {how}"
            row.pid, row.proc_created, row.stopped_at = None, None, now()
            row.requests_before = row.requests_served
        session.add(row)
        log.info("deployment %s stopped", row.name)
        return DeploymentPublic.from_row(row, settings)


def db_row_kind(db: Database, deployment_id: str) -> str:
    with db.session() as session:
        row = session.get(Deployment, deployment_id)
        return row.kind if row is not None else ""


def restart_deployment(db: Database, settings: Settings, ref: str) -> DeploymentPublic:
    """Stop (if running) and start again with the same target, engine and port -- also a stopped, failed or lost
    deployment. The port must be free again (409 naming it otherwise)."""
    current = stop_deployment(db, settings, ref)
    if current.kind == "remote":
        with db.session() as session:
            row = session.get(Deployment, current.id)
            assert row is not None
            row.status, row.message = "unhealthy", "not checked yet"
            session.add(row)
        return refresh_one(db, settings, current.id)
    with db.session() as session:
        row = session.get(Deployment, current.id)
        assert row is not None
        spec = parse_create(row.config)
        busy = {p: n for p, n in _busy_ports(session).items() if n != row.name}
        port = int(row.port or 0)
        if port in busy:
            raise ConflictError(f"port {port} is in use by the deployment '{busy[port]}'", param="port")
    if port_in_use(spec.host, port):
        raise ConflictError(f"port {port} on {spec.host} is in use{port_holder(port)}; cannot restart", param="port")
    return _launch(db, settings, current.id)


def delete_deployment(db: Database, settings: Settings, ref: str) -> None:
    """Delete a deployment's row, its log folder and its ``deploy:<name>`` alias. Refused while its process runs
    (stop it first): the message says how it runs."""
    current = refresh_one(db, settings, ref)
    if current.kind == "local" and current.status in RUNNING:
        raise ConflictError(
            f"deployment '{current.name}' is running ({current.status}, pid {current.pid}, port {current.port}); "
            f"stop it first (studio deploy stop {current.name})",
            param="deployment",
        )
    with db.session() as session:
        row = session.get(Deployment, current.id)
        if row is not None:
            session.delete(row)
    folder = deployments_dir(settings) / current.id
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    store = AliasStore(settings.home / "aliases", label="$STUDIO_HOME/aliases")
    if store.get(ALIAS_PREFIX + current.name) is not None:
        store.delete(ALIAS_PREFIX + current.name)
    log.info("deployment %s deleted", current.name)


# -- logs and the Playground ------------------------------------------------------------------------------------
def deployment_logs(db: Database, settings: Settings, ref: str, lines: int = 100) -> str:
    """The last ``lines`` lines of the deployment's server.log (1-10000)."""
    if not 1 <= lines <= 10_000:
        raise ValidationError(f"'lines' must be between 1 and 10000 (got {lines})", param="lines")
    current = get_deployment(db, settings, ref)
    if current.kind == "remote":
        return f"'{current.name}' is a remote endpoint ({current.url}): its logs are on that server"
    return tail(log_path(settings, current.id), lines)


def deployment_alias(db: Database, settings: Settings, deployment_id: str) -> str:
    """Create (or update) the user alias ``deploy:<name>`` that reaches the deployment through the ``remote``
    engine -- base URL, model name and the key's variable -- and return its name, for the Playground and Compare
    pickers ("Use in the Playground")."""
    from studio.aliases.service import save_checked

    current = get_deployment(db, settings, deployment_id)
    if not current.served_model:
        raise ValidationError(
            f"deployment '{current.name}' does not know its model name yet: refresh it once the server answers, or "
            "register it with --model",
            param="model",
        )
    name = ALIAS_PREFIX + current.name
    key_env = current.api_key_env if current.kind == "remote" else ("STUDIO_API_KEY" if settings.api_key else None)
    url = current.url
    if current.kind == "local" and current.port is not None:  # a wildcard bind is reached on loopback from here
        url = f"{server_url(check_host(current.host), current.port)}/v1"
    context: dict[str, Any] = {"engine": "remote", "base_url": url}
    if key_env:
        context["api_key_env"] = key_env
    data = {"alias": name, "repo": current.served_model, "context_params": context}
    resolver = _resolver(settings)
    editing = name if resolver.store.get(name) is not None else None
    save_checked(resolver, data, editing=editing)
    return name


__all__ = [
    "ALIAS_PREFIX",
    "RUNNING",
    "STATUSES",
    "DeploymentPublic",
    "add_remote",
    "check_name",
    "choose_deploy_engine",
    "delete_deployment",
    "deployment_alias",
    "deployment_logs",
    "get_deployment",
    "list_deployments",
    "log_path",
    "reattach",
    "refresh_deployments",
    "refresh_one",
    "restart_deployment",
    "start_deployment",
    "stop_deployment",
    "wait_until_ready",
]
