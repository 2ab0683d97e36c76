"""Push an adapter, a model folder or an export to the Hugging Face Hub, with a generated model card.

Everything goes through ``huggingface_hub.HfApi`` (``HF_ENDPOINT``, proxies and offline mode work as for every
other tool): ``create_repo(exist_ok=True, private=...)``, then one ``create_commit`` with every file of the folder
and the card as ``README.md`` (what ``upload_folder`` does, with the card added in the same commit, so the repo
never shows files without their card). Left out: the studio's own records (``whetstone-run.json``,
``whetstone-adapter.json``, ``whetstone-model.json``: they hold local paths; the card says what they say), pickle
files (``.bin``, ``.pt``...: the studio never handles pickles), hidden files and symlinks. An export's own ``README.md``
(how to serve it) is kept below the generated card; any other folder's README is replaced by the card.

Steps (the last two and the end are each reported through ``log``: a job's log and progress, or the UI's line):

1. check the repo id (``ValidationError``, param ``repo_id``), the folder (inside STUDIO_HOME or the model roots;
   ``ForbiddenError`` otherwise), that the Hub is not switched off (``HF_HUB_OFFLINE=1``: ``HubUnavailableError``
   naming it) and that a token exists (``AuthenticationError``, param ``token``);
2. create the repo (an existing one is reused; its visibility is left as it is);
3. commit the files and the card.

The token is used for the Hub only: it is never logged, stored, put in a job row or in a message. The Hub's
answers become studio errors: 401 -> "the Hub refused the token ...", 403 -> no write access to the namespace,
400/422 -> the repo name (the Hub's reason), no network -> ``HubUnavailableError`` naming the endpoint.

Runs as a job too (kind ``push``, :func:`submit_push` / :func:`run_push`), reporting each step as the job's
progress and log. The job's config names the source and the repo, never a token: a token given at submit is handed
over in a file of its own (``STUDIO_HOME/secrets/hub-token-<random>``, mode 0600, in a 0700 folder) that the config
names by its random part; the job reads it once and removes it when it ends (a resumed push needs the token again).
Without one the job uses the worker's ``STUDIO_HF_TOKEN`` / ``HF_TOKEN`` / saved login.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studio import __version__
from studio.errors import (
    AuthenticationError,
    ForbiddenError,
    HubUnavailableError,
    StudioError,
    ValidationError,
)
from studio.export.model_card import PRIVATE_FILES, folder_kind, front_matter, model_card_for
from studio.models.adapters import PICKLE_SUFFIXES, adapters_dir
from studio.paths import confine, describe_roots, model_roots
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.db.engine import Database
    from studio.db.tables import Job
    from studio.jobs.runtime import JobRuntime

log = logging.getLogger(__name__)

KIND = "push"
LIBRARY = "whetstone-studio"
EXPORTS_DIR = "exports"
TOKEN_PAGE = "https://huggingface.co/settings/tokens"
SECRETS_DIR = "secrets"
SECRET_MAX_AGE_S = 7 * 24 * 3600  # a hand-over file of a push that never ran is removed after a week
_TOKEN_REF = re.compile(r"[0-9a-f]{32}")
Log = Callable[[str], None]


@dataclass(frozen=True)
class PushResult:
    """What was pushed where."""

    repo_id: str
    url: str
    commit: str
    files: list[str]  # paths in the repo, README.md included
    bytes: int
    private: bool
    left_out: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def check_push_repo_id(text: str) -> str:
    """A repo id to push to (``user/name`` or ``org/name``; a bare ``name`` goes to the token's own account),
    checked with ``huggingface_hub``'s rules. ``ValidationError`` naming the field ``repo_id``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    repo = (text or "").strip()
    if not repo:
        raise ValidationError(
            "'repo_id' is empty: give the repo to push to, e.g. your-name/my-adapter", param="repo_id"
        )
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise ValidationError(f"'repo_id': '{repo[:200]}' is not a valid Hub repo id: {exc}", param="repo_id") from None
    return repo


def push_source(settings: Settings, source: str) -> tuple[Path, str | None]:
    """The folder behind what a user picked to push, and the adapter's name when it is one: a registered adapter
    name (``adapters/<name>``, a trained one's link resolved), an export name (``exports/<name>``), a model id the
    registry lists (its folder), or a folder inside STUDIO_HOME / the model roots."""
    from studio.models.registry import ModelRegistry

    text = (source or "").strip()
    if not text:
        raise ValidationError("'source': give an adapter, an export or a model to push", param="source")
    if "/" not in text and ".." not in text:
        entry = adapters_dir(settings) / text
        if entry.exists():
            return Path(os.path.realpath(entry)), text
        export = settings.home / EXPORTS_DIR / text
        if export.is_dir():
            return export.resolve(), None
    try:
        model = ModelRegistry(settings).resolve(text)
    except StudioError:
        model = None
    if model is not None and model.format == "hf":
        return model.path.resolve(), None
    roots = [*model_roots(settings), settings.home / EXPORTS_DIR]
    path = confine(text, roots, param="source", base=settings.home, where=describe_roots(roots, settings))
    if not path.is_dir():
        raise ValidationError(
            f"'source': '{text}' is not an adapter, export or model folder of this studio", param="source"
        )
    real = Path(os.path.realpath(path))
    adapter = real.name if (real / "adapter_config.json").is_file() else None
    return real, adapter


def files_to_push(folder: Path) -> tuple[list[Path], list[str]]:
    """(files to push, names left out): regular files under ``folder``, without the studio's records, pickles,
    hidden files and links; ``README.md`` is left to the caller (the card replaces it)."""
    keep: list[Path] = []
    left_out: list[str] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(here / d))
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(folder).as_posix()
            if rel == "README.md":
                continue
            hidden_or_link = name.startswith(".") or not stat.S_ISREG(os.lstat(path).st_mode)
            if hidden_or_link or name in PRIVATE_FILES or path.suffix.lower() in PICKLE_SUFFIXES:
                left_out.append(rel)
            else:
                keep.append(path)
    return keep, left_out


def _card_text(card: Any, folder: Path) -> str:
    """The generated card, followed by the body of an export's own README.md (how to serve it). Any other folder's
    README is replaced: an adapter's is PEFT's empty template ("More Information Needed"), a model's the base's."""
    text = str(card)
    readme = folder / "README.md"
    if folder_kind(folder) == "export" and readme.is_file() and not os.path.islink(readme):
        original = readme.read_text(encoding="utf-8", errors="replace")
        if front_matter(readme):
            original = original.split("---", 2)[2]
        if original.strip():
            text = text.rstrip() + "\n\n## Notes\n\n" + original.strip() + "\n"
    return text


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


@contextmanager
def push_errors(repo_id: str, token: str | None) -> Iterator[None]:
    """``huggingface_hub``'s and the network's exceptions as studio errors naming what to change; no message carries
    the token."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    endpoint = _endpoint()
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your account"
    try:
        yield
    except StudioError:
        raise
    except OfflineModeIsEnabled:
        raise HubUnavailableError(_offline_message()) from None
    except HFValidationError as exc:
        raise ValidationError(f"'repo_id': {_scrub(str(exc), token)}", param="repo_id") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        reason = _scrub(str(getattr(exc, "server_message", "") or ""), token).strip()[:300]
        if status == 401:
            raise AuthenticationError(
                f"the Hub refused the token (401): it is not valid, has expired or was revoked. Create a token with "
                f"write access on {TOKEN_PAGE} and give it again",
                param="token",
            ) from None
        if status == 403:
            raise ForbiddenError(
                f"the token may not write to '{namespace}' on the Hub (403): use a token with write access to it, or "
                "push under your own account",
                param="repo_id",
            ) from None
        if status in (400, 409, 422):
            raise ValidationError(
                f"the Hub refused the repo '{repo_id}' ({status}){': ' + reason if reason else ''}; check 'repo_id'",
                param="repo_id",
            ) from None
        raise HubUnavailableError(
            f"the Hugging Face Hub at {endpoint} answered {status or 'an error'} while pushing to '{repo_id}'"
            f"{': ' + reason if reason else ''}; try again later"
        ) from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as exc:
        raise HubUnavailableError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}): is this machine online? Check "
            "the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT, then push again"
        ) from None


def _offline_message() -> str:
    return (
        "the Hugging Face Hub is switched off on this machine (HF_HUB_OFFLINE=1 is set): nothing can be pushed. Unset "
        "HF_HUB_OFFLINE (or set it to 0) and restart the studio to push"
    )


def _token(settings: Settings, token: str | None) -> str:
    from huggingface_hub import get_token

    found = (token or "").strip() or settings.hf_token or get_token()
    if not found:
        raise AuthenticationError(
            "pushing to the Hub needs a token with write access: give one, set HF_TOKEN (or STUDIO_HF_TOKEN), or run "
            f"`hf auth login`. Create one on {TOKEN_PAGE}",
            param="token",
        )
    return str(found)


def _human(n: int) -> str:
    from studio.models.hub import human_bytes

    return human_bytes(n)


def push_to_hub(
    settings: Settings,
    folder: Path,
    repo_id: str,
    private: bool,
    token: str | None,
    log: Log | None = None,
    *,
    db: Database | None = None,
    adapter: str | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Push ``folder`` (an adapter, a model folder or an export; see :func:`push_source`) to ``repo_id`` with a
    generated model card, creating the repo (``private``) when it does not exist. ``token``: None uses
    ``STUDIO_HF_TOKEN``, ``HF_TOKEN`` or the saved login. ``log`` receives one line per step. ``db``: where eval runs
    and audits are looked up for the card. Errors: see the module docstring."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    say: Log = log or (lambda line: None)
    repo = check_push_repo_id(repo_id)
    roots = [*model_roots(settings), settings.home / EXPORTS_DIR]
    where = describe_roots(roots, settings)
    path = Path(os.path.realpath(confine(folder, roots, param="folder", base=settings.home, where=where)))
    if not path.is_dir():
        raise ValidationError(f"'folder': '{Path(folder).name}' is not a folder", param="folder")
    if constants.HF_HUB_OFFLINE:
        raise HubUnavailableError(_offline_message())
    secret = _token(settings, token)
    files, left_out = files_to_push(path)
    if not files:
        raise ValidationError(f"'folder': '{path.name}' has no files to push", param="folder")
    card = model_card_for(settings, path, repo, db=db, adapter=adapter)
    readme = _card_text(card, path).encode("utf-8")
    total = sum(p.stat().st_size for p in files) + len(readme)
    endpoint = _endpoint()
    api = HfApi(endpoint=endpoint, token=secret, library_name=LIBRARY, library_version=__version__)
    say(f"creating {repo} ({'private' if private else 'public'}) on {endpoint} if it does not exist")
    with push_errors(repo, secret):
        url = api.create_repo(repo, private=private, exist_ok=True)
        full_id = getattr(url, "repo_id", None) or repo
        operations = [
            CommitOperationAdd(path_in_repo=p.relative_to(path).as_posix(), path_or_fileobj=str(p)) for p in files
        ]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme))
        skipped = f"; left out: {', '.join(left_out)}" if left_out else ""
        say(f"uploading {len(operations)} files ({_human(total)}) to {full_id}{skipped}")
        info = api.create_commit(
            full_id,
            operations=operations,
            commit_message=commit_message or f"Upload {adapter or path.name} from Whetstone Studio",
        )
    pushed = sorted([*(p.relative_to(path).as_posix() for p in files), "README.md"])
    say(f"pushed {len(pushed)} files to {endpoint}/{full_id} (commit {str(info.oid)[:12]})")
    return PushResult(
        repo_id=str(full_id),
        url=f"{endpoint}/{full_id}",
        commit=str(info.oid),
        files=pushed,
        bytes=total,
        private=private,
        left_out=left_out,
    )


# -- as a job ----------------------------------------------------------------------------------------------------


def _secret_path(settings: Settings, ref: str) -> Path:
    if not _TOKEN_REF.fullmatch(ref):
        raise ValidationError("'token_ref' is not a token hand-over reference", param="token_ref")
    return settings.home / SECRETS_DIR / f"hub-token-{ref}"


def stash_token(settings: Settings, token: str) -> str:
    """Hand ``token`` over to a push job: written to a file only this user can read (0600, in a 0700 folder);
    returns the random reference the job's config carries instead of the token."""
    folder = settings.home / SECRETS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for stale in folder.glob("hub-token-*"):  # pushes that were queued and never ran
        try:
            if time.time() - stale.stat().st_mtime > SECRET_MAX_AGE_S:
                stale.unlink()
        except OSError:
            continue
    ref = secrets.token_hex(16)
    path = _secret_path(settings, ref)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token.strip())
    os.replace(tmp, path)
    return ref


def take_token(settings: Settings, ref: str) -> str:
    """The token :func:`stash_token` handed over under ``ref``, removing its file. ``AuthenticationError`` when it
    is gone (it is read once: a resumed or repeated push needs the token again)."""
    path = _secret_path(settings, ref)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        raise AuthenticationError(
            "the token given when this push was queued is gone (a token is handed to one run only): push again with "
            "the token, or set HF_TOKEN for the worker",
            param="token",
        ) from None
    path.unlink(missing_ok=True)
    return token


def drop_token(settings: Settings, ref: str | None) -> None:
    """Remove a handed-over token that will not be used (a submit that failed, a push that ended)."""
    if ref:
        _secret_path(settings, ref).unlink(missing_ok=True)


class PushConfig(BaseModel):
    """A push to the Hugging Face Hub (``kind: push``). No token here: see ``token_ref``."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(KIND, description="Job kind; always 'push' for this schema.")
    source: str = Field(
        min_length=1,
        max_length=1024,
        description="What to push: an adapter name, an export name (STUDIO_HOME/exports/<name>), a model id or folder.",
    )
    repo_id: str = Field(description="The Hub repo to push to, e.g. your-name/my-adapter (created if missing).")
    private: bool = Field(True, description="Create the repo private (an existing repo keeps its visibility).")
    commit_message: str | None = Field(None, max_length=500, description="The commit's message.")
    name: str = Field("", max_length=200, description="Shown in the job list (default: source -> repo).")
    token_ref: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="Set by submit_push when a token was given: the random name of the file that hands it to the job "
        "(the token itself is never in a config). Empty: the worker's HF_TOKEN / STUDIO_HF_TOKEN / saved login.",
    )

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, v: str) -> str:
        return check_push_repo_id(v)


def prepare_push(config: PushConfig, settings: Settings, db: Any) -> PushConfig:
    """At submit: the source resolves, the Hub is not switched off and a token exists (it is not stored)."""
    from huggingface_hub import constants

    push_source(settings, config.source)
    if constants.HF_HUB_OFFLINE:
        raise HubUnavailableError(_offline_message())
    if config.token_ref:
        if not _secret_path(settings, config.token_ref).is_file():
            raise ValidationError("'token_ref' names no handed-over token: give the token again", param="token_ref")
    else:
        _token(settings, None)
    return config.model_copy(update={"name": config.name or f"push {config.source} -> {config.repo_id}"})


def submit_push(
    settings: Settings,
    db: Database,
    source: str,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    commit_message: str | None = None,
    device: str = "cpu",
) -> Job:
    """Queue a ``push`` job (checked as :func:`prepare_push` does). ``token``: handed to the job through a 0600
    file, never stored in the job row; None: the worker's own token."""
    from studio.jobs import queue

    config: dict[str, Any] = {
        "source": source,
        "repo_id": repo_id,
        "private": private,
        "commit_message": commit_message,
    }
    ref = stash_token(settings, token) if token and token.strip() else None
    if ref:
        config["token_ref"] = ref
    try:
        return queue.submit(db, KIND, config, settings=settings, device=device)
    except BaseException:
        drop_token(settings, ref)
        raise


def run_push(config: PushConfig, runtime: JobRuntime) -> dict[str, Any]:
    """The job body: push and report each step (check, create the repo, upload) as progress and in the log."""
    try:
        token = take_token(runtime.settings, config.token_ref) if config.token_ref else None
        folder, adapter = push_source(runtime.settings, config.source)
        step = 0

        def report(line: str) -> None:
            nonlocal step
            step += 1
            runtime.log(line)
            runtime.progress(min(step, 3), 3, message=line)

        runtime.log(f"pushing {config.source} ({folder.name}) to {config.repo_id}")
        runtime.progress(0, 3, message=f"pushing {config.source} to {config.repo_id}")
        result = push_to_hub(
            runtime.settings,
            folder,
            config.repo_id,
            config.private,
            token,
            report,
            db=runtime.db,
            adapter=adapter,
            commit_message=config.commit_message,
        )
    finally:
        drop_token(runtime.settings, config.token_ref)
    runtime.progress(3, 3, message=f"pushed to {result.url}")
    return result.to_dict()


def _register() -> None:
    from studio.jobs.kinds import JobKind, register_kind

    register_kind(
        JobKind(
            KIND,
            PushConfig,
            run_push,
            "Push an adapter, model or export to the Hugging Face Hub with a generated model card.",
            prepare=prepare_push,
        )
    )


_register()
