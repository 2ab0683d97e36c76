"""Models from the Hugging Face Hub: list a repo's files and pick the ones a model needs; :mod:`studio.models.fetch`
downloads them into the standard Hugging Face cache (``STUDIO_HF_CACHE`` / ``HF_HUB_CACHE``), where transformers,
llama.cpp tools and ``hf`` see them too. Every Hub call goes through ``huggingface_hub`` (``HF_ENDPOINT``, proxies,
offline mode and tokens work as they do for every other tool).

Lifecycle of one download (the ``download`` job kind in :mod:`studio.models.download` drives it):

1. **list** (:func:`list_hub_files`): the repo's files with their sizes, its commit, whether it is gated, its
   licence and languages; :func:`select_files` picks what a model needs (config, tokenizer, card and one weight
   format; for a GGUF repo one file or quant). A gated repo is asked for the first file's metadata at once, so a
   missing token is a 401 before anything is queued.
2. **fetch** (:func:`studio.models.fetch.download_files`): each file goes to ``blobs/<etag>.incomplete`` in the
   cache, appended to with ``Range`` requests, so a download stopped by a cancel, a shutdown or ``kill -9`` goes on
   from the bytes already on disk; then it is checked (sha256 for LFS files, the git blob id for the others) and
   renamed to ``blobs/<etag>``.
3. **link**: only when every file of the model is complete, ``hf_hub_download`` links them into
   ``snapshots/<commit>/`` and writes ``refs/<revision>``. Until then the snapshot does not exist, so neither the
   registry nor another tool sees half a model.

The token comes from ``STUDIO_HF_TOKEN`` (settings) or ``huggingface_hub``'s own (``HF_TOKEN``, ``hf auth login``);
it is sent to the Hub only and appears in no message, log line or job row. ``HF_HUB_OFFLINE=1`` or an unreachable
Hub is a :class:`~studio.errors.HubUnavailableError` that says which. Repo ids are checked with
``validate_repo_id``; revisions, file names and etags are checked before any of them becomes part of a path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio import __version__
from studio.errors import (
    AuthenticationError,
    ForbiddenError,
    HubUnavailableError,
    NotFoundError,
    StudioError,
    ValidationError,
)
from studio.models.registry import gguf_quant
from studio.settings import Settings

log = logging.getLogger(__name__)

LIBRARY = "whetstone-studio"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}")
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


def hub_token(settings: Settings) -> str | None:
    """``STUDIO_HF_TOKEN``, or None: then ``huggingface_hub`` finds its own (HF_TOKEN, or the one `hf auth login`
    saved). Never logged."""
    return settings.hf_token or None


def _has_token(settings: Settings) -> bool:
    from huggingface_hub import get_token

    return bool(hub_token(settings) or get_token())


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
    token = hub_token(settings)
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


# -- showing sizes ------------------------------------------------------------------------------------------------


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
