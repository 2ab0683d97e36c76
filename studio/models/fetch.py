"""Fetching a listed model's files into the Hugging Face cache, resumable byte for byte (step 2 and 3 of the
lifecycle in :mod:`studio.models.hub`).

Each file goes to ``blobs/<etag>.incomplete``, appended to with ``Range`` requests through ``huggingface_hub``'s
``http_get`` (``huggingface_hub`` itself writes to a per-process temporary file and drops it on failure, so a
download stopped by a cancel, a shutdown or ``kill -9`` would start that file over), checked (sha256 for LFS files,
the git blob id for the others) and renamed to ``blobs/<etag>``, under the same file lock ``huggingface_hub`` takes
for that blob. Only when every file is complete does ``hf_hub_download`` link them into ``snapshots/<commit>/`` and
write ``refs/<revision>``: until then no snapshot exists that the registry or another tool could take for a model.

Progress (bytes, speed over the last seconds, time left, file) goes to a callback at most every
``PROGRESS_EVERY_S``; a stop callback is asked after every chunk (``CHUNK_BYTES``), and a stop keeps every byte that
reached the disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from studio import __version__
from studio.errors import HubUnavailableError, ServerError, UserError
from studio.models.hub import (
    LIBRARY,
    HubListing,
    check_repo_filename,
    ensure_online,
    hub_endpoint,
    hub_errors,
    hub_token,
    human_bytes,
    human_duration,
)
from studio.settings import Settings

log = logging.getLogger(__name__)

#: bytes per read while downloading: progress, cancel checks and what a kill -9 can lose (huggingface_hub's
#: default is 10 MiB, coarse for a progress bar and for resuming)
CHUNK_BYTES = 1024 * 1024
PROGRESS_EVERY_S = 0.25
SPEED_WINDOW_S = 5.0
_ETAG = re.compile(r"[A-Za-z0-9_-]{1,128}")


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
    token = hub_token(settings)
    endpoint = hub_endpoint()
    storage = _storage(settings, repo)
    blobs = storage / "blobs"
    locks = settings.hf_cache_dir / ".locks" / repo_folder_name(repo_id=repo, repo_type="model")
    snapshot = storage / "snapshots" / commit
    # huggingface_hub reads its chunk size on every transfer: smaller chunks give a live progress bar, a cancel
    # within a second, and at most one chunk lost to a kill -9
    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES

    remotes: list[_Remote] = []
    linked_bytes = 0  # bytes of files complete and linked already: part of the total and of what is done
    with hub_errors(settings, repo, listing.revision, None):
        for name in names:
            check_repo_filename(name)
            if (snapshot / name).is_file():
                linked_bytes += (snapshot / name).stat().st_size
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

    total = linked_bytes + sum(r.size for r in remotes)
    done = linked_bytes + sum(have(r) for r in remotes)
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
