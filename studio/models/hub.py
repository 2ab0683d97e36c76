"""Models from the Hugging Face Hub: list a repo's files, pick the ones a model needs, download them into the
standard Hugging Face cache (``STUDIO_HF_CACHE`` / ``HF_HUB_CACHE``), where transformers, llama.cpp tools and
``hf`` see them too. Every Hub call goes through ``huggingface_hub`` (``HF_ENDPOINT``, proxies, offline mode and
tokens work as they do for every other tool).

Lifecycle of one download (the ``download`` job kind in :mod:`studio.models.download` drives it):

1. **list** (:func:`list_hub_files`): the repo's files with their sizes, its commit, whether it is gated, its
   licence and languages; :func:`select_files` picks what a model needs (config, tokenizer, card and one weight
   format; for a GGUF repo one file or quant). A gated repo is asked for the first file's metadata at once, so a
   missing token is a 401 before anything is queued.
2. **fetch** (:func:`download_files`): each file goes to ``blobs/<etag>.incomplete`` in the cache, appended to with
   ``Range`` requests, so a download stopped by a cancel, a shutdown or ``kill -9`` goes on from the bytes already
   on disk (``huggingface_hub`` itself writes to a per-process temporary file and drops it on failure); then it is
   checked (sha256 for LFS files, the git blob id for the others) and renamed to ``blobs/<etag>``.
3. **link**: only when every file of the model is complete, ``hf_hub_download`` links them into
   ``snapshots/<commit>/`` and writes ``refs/<revision>``. Until then the snapshot does not exist, so neither the
   registry nor another tool sees half a model.

The token comes from ``STUDIO_HF_TOKEN`` (settings) or ``huggingface_hub``'s own (``HF_TOKEN``, ``hf auth login``);
it is sent to the Hub only and appears in no message, log line or job row. ``HF_HUB_OFFLINE=1`` or an unreachable
Hub is a :class:`~studio.errors.HubUnavailableError` that says which. Repo ids are checked with
``validate_repo_id``; revisions, file names and etags are checked before any of them becomes part of a path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from studio import __version__
from studio.errors import (
    AuthenticationError,
    ForbiddenError,
    HubUnavailableError,
    NotFoundError,
    ServerError,
    StudioError,
    UserError,
    ValidationError,
)
from studio.models.registry import gguf_quant
from studio.settings import Settings

log = logging.getLogger(__name__)

LIBRARY = "whetstone-studio"
#: bytes per read while downloading: progress, cancel checks and what a kill -9 can lose (huggingface_hub's
#: default is 10 MiB, coarse for a progress bar and for resuming)
CHUNK_BYTES = 1024 * 1024
PROGRESS_EVERY_S = 0.25
SPEED_WINDOW_S = 5.0

_COMMIT = re.compile(r"[0-9a-f]{40}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}")
_ETAG = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")
#: files of a transformers model folder, taken from the repo root (weights are chosen separately)
_HF_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken", ".md")
_BIN_WEIGHTS = re.compile(r"(pytorch_model|model)(-\d{5}-of-\d{5})?\.bin$")


# -- what a user types ---------------------------------------------------------------------------------------------


def check_repo_id(text: str) -> str:
    """A Hub repo id (``org/name`` or ``name``), checked with ``huggingface_hub``'s own rules; it names a cache
    folder (``models--org--name``), so it is never a path. Raises ``ValidationError`` (param ``repo``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    repo = (text or "").strip()
    if not repo:
        raise ValidationError("give a repo id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct", param="repo")
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise ValidationError(f"'{repo[:200]}' is not a Hugging Face repo id: {exc}", param="repo") from None
    return repo


def check_revision(text: str | None) -> str | None:
    """A branch, tag, ``refs/pr/N`` or commit; None (or blank) means ``main``. It becomes ``refs/<revision>`` in the
    cache, so ``..``, empty parts and leading or trailing slashes are refused (param ``revision``)."""
    revision = (text or "").strip()
    if not revision:
        return None
    parts = revision.split("/")
    if not _REVISION.fullmatch(revision) or any(p in ("", ".", "..") for p in parts) or revision.endswith("/"):
        raise ValidationError(
            f"'{revision[:200]}' is not a revision: give a branch, tag or commit (letters, digits, . _ - + and "
            "single slashes; no '..')",
            param="revision",
        )
    return revision


def check_repo_filename(text: str, param: str = "file") -> str:
    """A file name inside a repo (``model.Q4_K_M.gguf``, ``onnx/model.onnx``): relative, forward slashes, no ``.`` or
    ``..`` parts, no NUL. It names a file under the snapshot folder, never anything outside it."""
    name = (text or "").strip()
    parts = name.split("/")
    if (
        not name
        or len(name) > 1000
        or "\x00" in name
        or "\\" in name
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValidationError(
            f"'{name[:200]}' is not a file of a repo: give its name as the Hub lists it (e.g. model.Q4_K_M.gguf)",
            param=param,
        )
    return name


def hub_endpoint() -> str:
    """The Hub's base URL ``huggingface_hub`` uses (``HF_ENDPOINT``, read when it was imported)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def _token(settings: Settings) -> str | None:
    # None lets huggingface_hub find its own (HF_TOKEN, or the one `hf auth login` saved)
    return settings.hf_token or None


def _has_token(settings: Settings) -> bool:
    from huggingface_hub import get_token

    return bool(_token(settings) or get_token())


def ensure_online() -> None:
    """Raise :class:`HubUnavailableError` at once when ``huggingface_hub`` is in offline mode."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubUnavailableError(
            "the Hugging Face Hub is switched off on this machine (HF_HUB_OFFLINE=1 is set): nothing can be "
            "listed or downloaded. Unset HF_HUB_OFFLINE (or set it to 0) and restart the studio to download; "
            "models already in the Hugging Face cache work offline."
        )


# -- choosing files ------------------------------------------------------------------------------------------------


def _stem(name: str) -> str:
    return _SHARD.sub("", Path(name).stem)


def quant_of(name: str) -> str | None:
    """The quant a GGUF file name carries (``m-Q4_K_M-00001-of-00002.gguf`` -> ``Q4_K_M``), or None."""
    return gguf_quant(_stem(name) + ".gguf")


def _quants(ggufs: list[str]) -> list[str]:
    return sorted({q for q in (quant_of(n) for n in ggufs) if q})


def _choices(ggufs: list[str]) -> str:
    quants = _quants(ggufs)
    return f"quants {', '.join(quants)}" if quants else f"files {', '.join(ggufs[:20])}"


def select_files(names: list[str], file: str | None = None) -> list[str]:
    """The files of a repo a model needs, sorted.

    - ``file`` names one file exactly: that file (a GGUF with the repo's README.md, for its licence and languages);
    - ``file`` is a quant (``q4_k_m``, any case): the GGUF file(s) of that quant (all shards of a split file);
    - a transformers repo (``config.json`` + weights): the root's config, tokenizer, chat template and card files
      and one weight format, safetensors before ``.bin``; ONNX, TF, Flax, GGUF copies and sub-folders are left out;
    - a repo with one GGUF file: that file; with several, ``file`` must say which (the message lists the quants).

    Raises ``ValidationError`` / ``NotFoundError`` with param ``file`` naming the choices.
    """
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    card = ["README.md"] if "README.md" in names else []
    if file:
        wanted = check_repo_filename(file)
        if wanted in names:
            return sorted({wanted, *card}) if wanted.lower().endswith(".gguf") else [wanted]
        matches = [n for n in ggufs if (quant_of(n) or "").upper() == wanted.upper()]
        if not matches:
            listed = _choices(ggufs) if ggufs else f"files {', '.join(sorted(names)[:20])}"
            raise NotFoundError(f"the repo has no file or quant '{wanted}'; it has {listed}", param="file")
        if len({_stem(n) for n in matches}) > 1:
            raise ValidationError(
                f"several GGUF files have the quant {wanted.upper()}: {', '.join(matches)}; give the file name",
                param="file",
            )
        return sorted({*matches, *card})
    root = [n for n in names if "/" not in n]
    safetensors = sorted(n for n in root if n.endswith(".safetensors"))
    bins = sorted(n for n in root if _BIN_WEIGHTS.fullmatch(n))
    if "config.json" in root and (safetensors or bins):
        extras = [n for n in root if n.endswith(_HF_SUFFIXES)]
        return sorted({*extras, *(safetensors or bins)})
    if len(ggufs) == 1 or (ggufs and len({_stem(n) for n in ggufs}) == 1):
        return sorted({*ggufs, *card})
    if ggufs:
        raise ValidationError(
            f"the repo has {len(ggufs)} GGUF files: choose one with a file name or a quant ({_choices(ggufs)})",
            param="file",
        )
    raise ValidationError(
        "the repo has no weights the studio can load: a transformers model (config.json with safetensors or .bin "
        "weights) or a GGUF file",
        param="repo",
    )


# -- listing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubFile:
    """One file of a repo as the Hub lists it."""

    name: str
    size: int
    lfs: bool
    selected: bool  # part of the model: will be downloaded
    cached: bool  # already complete in the Hugging Face cache (for this commit)
    blob: str = ""  # the content's id (LFS sha256 or git blob id): files with the same content share one blob


@dataclass(frozen=True)
class HubListing:
    """What a user sees before downloading: the files, what will be taken and how much it is."""

    repo: str
    revision: str  # as asked (``main`` when none was given)
    commit: str
    files: list[HubFile]
    gated: bool
    license: str | None
    languages: list[str]
    parameters: int | None
    file: str | None = None  # the file or quant asked for

    @property
    def selected(self) -> list[str]:
        """The names of the files the download takes, sorted."""
        return sorted(f.name for f in self.files if f.selected)

    @property
    def download_bytes(self) -> int:
        """Bytes still to fetch: the selected files not yet complete in the cache (shared content once)."""
        return sum({f.blob or f.name: f.size for f in self.files if f.selected and not f.cached}.values())

    @property
    def selected_bytes(self) -> int:
        """Size of the model on disk once downloaded (shared content once)."""
        return sum({f.blob or f.name: f.size for f in self.files if f.selected}.values())

    @property
    def total_bytes(self) -> int:
        """Every file of the repo together."""
        return sum(f.size for f in self.files)

    @property
    def quants(self) -> list[str]:
        """The GGUF quants the repo offers."""
        return _quants([f.name for f in self.files if f.name.lower().endswith(".gguf")])


def _languages(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if v]
    return []


def list_hub_files(settings: Settings, repo: str, revision: str | None = None, file: str | None = None) -> HubListing:
    """List ``repo`` at ``revision`` (default ``main``): every file with its size, which ones a download takes
    (:func:`select_files` with ``file``), which are already in the cache, and the card's licence and languages.

    Raises :class:`HubUnavailableError` (offline, unreachable), ``NotFoundError`` (repo, revision or file),
    ``AuthenticationError`` 401 (gated or private, no token) and ``ForbiddenError`` 403 (a token without access).
    """
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    repo = check_repo_id(repo)
    revision = check_revision(revision)
    ensure_online()
    token = _token(settings)
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY, library_version=__version__)
    with hub_errors(settings, repo, revision, file):
        info = api.model_info(repo, revision=revision, files_metadata=True)
    commit = str(info.sha or "")
    if not _COMMIT.fullmatch(commit):
        raise HubUnavailableError(f"the Hub at {endpoint} gave no commit for {repo} (got {commit[:60]!r})")
    siblings = [s for s in (info.siblings or []) if s.rfilename]
    names = [s.rfilename for s in siblings]
    chosen = set(select_files(names, file))
    for name in chosen:
        check_repo_filename(name)  # the Hub's listing names files under the snapshot, never anything outside it
    gated = bool(info.gated) or bool(info.private)
    if gated:  # the listing is public for gated repos; the files are not: say so before anything is queued
        first = sorted(chosen)[-1]
        with hub_errors(settings, repo, revision, first):
            get_hf_file_metadata(hf_hub_url(repo, first, revision=commit, endpoint=endpoint), token=token)
    cache = str(settings.hf_cache_dir)
    files = [
        HubFile(
            name=s.rfilename,
            size=int(s.size or (s.lfs.size if s.lfs else 0) or 0),
            lfs=s.lfs is not None,
            selected=s.rfilename in chosen,
            cached=isinstance(try_to_load_from_cache(repo, s.rfilename, cache_dir=cache, revision=commit), str),
            blob=(s.lfs.sha256 if s.lfs else s.blob_id) or "",
        )
        for s in siblings
    ]
    card = info.card_data
    parameters: int | None = None
    if info.safetensors is not None:
        parameters = int(info.safetensors.total)
    elif isinstance(info.gguf, dict) and info.gguf.get("total"):
        parameters = int(info.gguf["total"])
    return HubListing(
        repo=repo,
        revision=revision or "main",
        commit=commit,
        files=files,
        gated=gated,
        license=str(card.license) if card is not None and getattr(card, "license", None) else None,
        languages=_languages(getattr(card, "language", None)),
        parameters=parameters,
        file=file,
    )


@contextmanager
def hub_errors(settings: Settings, repo: str, revision: str | None, file: str | None) -> Iterator[None]:
    """Turn ``huggingface_hub``'s and the network's exceptions into studio errors a user can act on. No message
    carries the token."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    page = f"{endpoint}/{repo}"
    token_hint = "set HF_TOKEN (or STUDIO_HF_TOKEN) to a token of an account that has access and try again"
    try:
        yield
    except StudioError:
        raise
    except OfflineModeIsEnabled:
        ensure_online()
        raise
    except GatedRepoError as exc:
        status = exc.response.status_code if exc.response is not None else 401
        if status == 403 or _has_token(settings):
            raise ForbiddenError(
                f"'{repo}' is a gated repo and the token in use has no access to it ({status}): ask for access on "
                f"{page}, or {token_hint}",
                param="repo",
            ) from None
        raise AuthenticationError(
            f"'{repo}' is a gated repo: downloading it needs a Hugging Face token (401). Accept its terms on {page}, "
            f"then {token_hint}",
            param="repo",
        ) from None
    except RevisionNotFoundError:
        raise NotFoundError(
            f"'{repo}' has no revision '{revision}' on the Hub; give a branch, tag or commit it has", param="revision"
        ) from None
    except RemoteEntryNotFoundError:
        raise NotFoundError(f"'{repo}' has no file '{file}' at revision '{revision or 'main'}'", param="file") from None
    except RepositoryNotFoundError as exc:
        status = exc.response.status_code if exc.response is not None else 404
        raise NotFoundError(
            f"repo '{repo}' not found on the Hub at {endpoint} ({status}): check its name; if it is private, "
            f"{token_hint}",
            param="repo",
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:
            raise AuthenticationError(
                f"the Hub refused the request for '{repo}' (401): the token is missing or not valid; {token_hint}",
                param="repo",
            ) from None
        raise HubUnavailableError(
            f"the Hugging Face Hub at {endpoint} answered {status} for '{repo}'; try again later"
        ) from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as exc:
        raise HubUnavailableError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}): is this machine online? Check "
            "the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT, then try again (a download goes on from where it "
            "stopped)"
        ) from None


# -- downloading ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadProgress:
    """Where a download stands: bytes over all its files, the speed over the last seconds and the time left."""

    bytes_done: int
    bytes_total: int
    bytes_per_s: float | None
    eta_s: float | None
    file: str
    file_index: int  # 1-based
    files_count: int
    file_bytes_done: int
    file_bytes_total: int

    def summary(self) -> str:
        """``12.3 MB of 45.6 MB · 3.2 MB/s · 10 s left · model.safetensors (2/5)``."""
        parts = [f"{human_bytes(self.bytes_done)} of {human_bytes(self.bytes_total)}"]
        if self.bytes_per_s:
            parts.append(f"{human_bytes(int(self.bytes_per_s))}/s")
        if self.eta_s is not None:
            parts.append(f"{human_duration(self.eta_s)} left")
        parts.append(f"{self.file} ({self.file_index}/{self.files_count})")
        return " · ".join(parts)


@dataclass(frozen=True)
class DownloadOutcome:
    """How :func:`download_files` ended: the snapshot folder when complete, or ``stopped`` when asked to stop."""

    stopped: bool
    snapshot: Path | None
    commit: str
    files: list[str]
    bytes_fetched: int  # in this call (resumed bytes not counted)


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1024, as file managers show sizes)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class _Stopped(Exception):
    """Raised from inside a transfer when the download must stop; the partial file is kept."""


class _Meter:
    """Counts bytes, measures the speed over the last seconds, reports progress and checks for a stop."""

    def __init__(
        self,
        total: int,
        done: int,
        files_count: int,
        report: Callable[[DownloadProgress], None],
        should_stop: Callable[[], bool],
    ) -> None:
        self.total = total
        self.done = done
        self.files_count = files_count
        self.fetched = 0
        self.report = report
        self.should_stop = should_stop
        self.file = ""
        self.file_index = 0
        self.file_done = 0
        self.file_total = 0
        self.stop_pending = False
        self._samples: deque[tuple[float, int]] = deque()
        self._last_report = 0.0

    def start_file(self, name: str, index: int, have: int, size: int) -> None:
        self.file, self.file_index, self.file_done, self.file_total = name, index, have, size
        self.emit(force=True)

    def add(self, n: int) -> None:
        # huggingface_hub counts a chunk before it writes it: stop at the call after the one that saw the request,
        # once the chunk before is on disk
        if self.stop_pending:
            raise _Stopped
        self.done += n
        self.file_done += n
        self.fetched += n
        now = time.monotonic()
        self._samples.append((now, self.fetched))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_S:
            self._samples.popleft()
        self.emit(force=self.file_done >= self.file_total)
        self.stop_pending = self.should_stop()

    def check_stop(self) -> None:
        """Between files: raise ``_Stopped`` when a stop was asked for."""
        if self.stop_pending or self.should_stop():
            raise _Stopped

    def speed(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 and b1 > b0 else None

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < PROGRESS_EVERY_S:
            return
        self._last_report = now
        speed = self.speed()
        left = max(0, self.total - self.done)
        eta = left / speed if speed else (0.0 if left == 0 else None)
        self.report(
            DownloadProgress(
                bytes_done=min(self.done, self.total),
                bytes_total=self.total,
                bytes_per_s=speed,
                eta_s=eta,
                file=self.file,
                file_index=self.file_index,
                files_count=self.files_count,
                file_bytes_done=self.file_done,
                file_bytes_total=self.file_total,
            )
        )

    def bar_class(self) -> type:
        """A stand-in for the tqdm class ``huggingface_hub`` draws its progress bar with: it feeds this meter."""
        meter = self

        class _Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def __enter__(self) -> _Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def update(self, n: float | None = 1) -> None:
                meter.add(int(n or 0))

            def close(self) -> None:
                pass

        return _Bar


@dataclass(frozen=True)
class _Remote:
    name: str
    url: str
    etag: str
    size: int
    same_host: bool


def _storage(settings: Settings, repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return settings.hf_cache_dir / repo_folder_name(repo_id=repo, repo_type="model")


def _verify(path: Path, etag: str, name: str) -> None:
    """Check a complete file against its etag: the sha256 of an LFS file, the git blob id of a small one."""
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        digest = hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % path.stat().st_size)
    else:
        return  # an etag that is no content hash: nothing to check against
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 * 1024 * 1024), b""):
            digest.update(block)
    if digest.hexdigest() != etag:
        kind = "sha256" if len(etag) == 64 else "git blob id"
        path.unlink(missing_ok=True)
        raise ServerError(
            f"the downloaded '{name}' is corrupt: its {kind} is {digest.hexdigest()[:12]}…, the Hub says "
            f"{etag[:12]}…; it was deleted, so resuming the download fetches it again"
        )


def download_files(
    settings: Settings,
    listing: HubListing,
    report: Callable[[DownloadProgress], None],
    should_stop: Callable[[], bool],
) -> DownloadOutcome:
    """Download the selected files of ``listing`` into the Hugging Face cache, resuming partial files.

    ``report`` gets a :class:`DownloadProgress` at most every ``PROGRESS_EVERY_S`` and when a file ends;
    ``should_stop`` is asked after every chunk: when it says True the transfer stops, what arrived stays in
    ``blobs/<etag>.incomplete`` for the next call, and the outcome is ``stopped``. The snapshot folder is filled only
    once every file is complete. Raises the errors of :func:`hub_errors`; a file whose hash does not match is deleted
    and a ``ServerError`` says so.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils import WeakFileLock, build_hf_headers  # type: ignore[attr-defined]

    ensure_online()
    repo, commit, names = listing.repo, listing.commit, listing.selected
    token = _token(settings)
    endpoint = hub_endpoint()
    storage = _storage(settings, repo)
    blobs = storage / "blobs"
    locks = settings.hf_cache_dir / ".locks" / repo_folder_name(repo_id=repo, repo_type="model")
    snapshot = storage / "snapshots" / commit
    # huggingface_hub reads its chunk size on every transfer: smaller chunks give a live progress bar, a cancel
    # within a second, and at most one chunk lost to a kill -9
    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES

    remotes: list[_Remote] = []
    with hub_errors(settings, repo, listing.revision, None):
        for name in names:
            check_repo_filename(name)
            if (snapshot / name).is_file():
                continue  # complete and linked already (an earlier download of this commit)
            url = hf_hub_url(repo, name, revision=commit, endpoint=endpoint)
            meta = get_hf_file_metadata(url, token=token, library_name=LIBRARY, library_version=__version__)
            etag = str(meta.etag or "")
            if not _ETAG.fullmatch(etag):
                raise HubUnavailableError(f"the Hub at {endpoint} gave no usable etag for '{name}' ({etag[:60]!r})")
            location = str(meta.location or url)
            host = urlsplit(location).hostname or ""
            same = host == urlsplit(url).hostname or host in constants.HF_URL_HOSTS
            if all(r.etag != etag for r in remotes):  # two files with the same content share one blob
                remotes.append(_Remote(name, location, etag, int(meta.size or 0), same))

    def have(r: _Remote) -> int:
        if (blobs / r.etag).is_file():
            return r.size
        partial = blobs / f"{r.etag}.incomplete"
        return min(partial.stat().st_size, r.size) if partial.is_file() else 0

    total = sum(r.size for r in remotes)
    done = sum(have(r) for r in remotes)
    _check_space(settings, repo, total - done)
    meter = _Meter(total, done, len(remotes), report, should_stop)
    blobs.mkdir(parents=True, exist_ok=True)
    locks.mkdir(parents=True, exist_ok=True)
    try:
        with hub_errors(settings, repo, listing.revision, None):
            for index, remote in enumerate(remotes, start=1):
                meter.check_stop()
                _fetch(remote, index, blobs, locks, meter, token, WeakFileLock, build_hf_headers, http_get)
    except _Stopped:
        meter.emit(force=True)
        return DownloadOutcome(True, None, commit, names, meter.fetched)
    meter.emit(force=True)
    if meter.stop_pending or should_stop():
        return DownloadOutcome(True, None, commit, names, meter.fetched)
    linked: Path | None = None
    with hub_errors(settings, repo, listing.revision, None):
        for name in names:
            # the blob is complete: hf_hub_download only links it into snapshots/<commit>/ and writes refs/<revision>
            path = Path(
                hf_hub_download(
                    repo,
                    name,
                    revision=listing.revision,
                    cache_dir=settings.hf_cache_dir,
                    token=token,
                    endpoint=endpoint,
                    library_name=LIBRARY,
                    library_version=__version__,
                )
            )
            linked = storage / "snapshots" / path.relative_to(storage / "snapshots").parts[0]
    final = linked or snapshot
    if final.name != commit:
        log.warning(
            "%s: %s moved to commit %s during the download; the files are from it", repo, listing.revision, final.name
        )
    return DownloadOutcome(False, final, final.name, names, meter.fetched)


def _fetch(
    remote: _Remote,
    index: int,
    blobs: Path,
    locks: Path,
    meter: _Meter,
    token: str | None,
    lock_class: Any,
    build_headers: Callable[..., dict[str, str]],
    http_get: Callable[..., None],
) -> None:
    """One file into ``blobs/<etag>``, appending to ``blobs/<etag>.incomplete`` from where it stopped."""
    blob = blobs / remote.etag
    partial = blobs / f"{remote.etag}.incomplete"
    with lock_class(str(locks / f"{remote.etag}.lock")):  # the lock huggingface_hub takes for the same blob
        if blob.is_file():
            meter.start_file(remote.name, index, remote.size, remote.size)
            return
        have = partial.stat().st_size if partial.is_file() else 0
        if have > remote.size:  # not a prefix of this file: start it over
            partial.unlink()
            meter.done -= remote.size  # counted as complete when the download started
            have = 0
        meter.start_file(remote.name, index, have, remote.size)
        if have < remote.size or remote.size == 0:
            headers = build_headers(token=token, library_name=LIBRARY, library_version=__version__)
            if not remote.same_host:
                headers.pop("authorization", None)  # a CDN's signed URL needs no token and must not get one
            if have:
                log.info("%s: resuming at byte %d of %d", remote.name, have, remote.size)
            with open(partial, "ab") as fh:
                http_get(
                    remote.url,
                    fh,
                    resume_size=have,
                    headers=headers,
                    expected_size=remote.size or None,
                    displayed_filename=remote.name,
                    tqdm_class=meter.bar_class(),
                )
        _verify(partial, remote.etag, remote.name)
        os.replace(partial, blob)


def _check_space(settings: Settings, repo: str, needed: int) -> None:
    folder = settings.hf_cache_dir
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(
            f"not enough free disk space for {repo}: {human_bytes(needed)} more are needed in the Hugging Face "
            f"cache and {human_bytes(free)} are free"
        )
