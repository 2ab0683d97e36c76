"""Datasets on disk and in the database: import, version, list, preview, token statistics, language mix, delete.

A dataset is a ``Dataset`` row and immutable ``DatasetVersion`` rows. Each version's canonical examples (see
``studio.datasets.formats``) are stored as JSONL at ``STUDIO_HOME/datasets/<dataset_id>/<content_hash>.jsonl``,
where ``content_hash`` is the sha256 of exactly those bytes. Writing the same content again finds the existing
version (``created=False``); new content becomes version ``latest + 1`` and the dataset's latest version.

Nothing is half-imported: the file is written to a temporary name and moved into place, the rows are written in
one transaction, and if the transaction fails the new file is removed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, func, select

from studio.datasets.formats import (
    FORMAT_LABELS,
    ColumnMapping,
    DatasetKind,
    RowProblem,
    check_canonical,
    kind_of,
)
from studio.datasets.parse import MAX_UPLOAD_BYTES, parse_file
from studio.datasets.schemas import (
    KIND_BADGES,
    DatasetCard,
    DatasetPreview,
    DatasetPublic,
    DatasetVersionPublic,
    ImportResult,
    examples_label,
    size_label,
)
from studio.datasets.stats import LanguageMix, TokenStats, compute_language_mix, compute_token_stats
from studio.datasets.validate import (
    ChatTokenizer,
    OnInvalid,
    ValidationReport,
    apply_policy,
    canonical_json,
    count_tokens,
    validate_records,
)
from studio.db.engine import Database
from studio.db.tables import Dataset, DatasetVersion, new_id, utcnow
from studio.errors import ConflictError, NotFoundError, ServerError, ValidationError
from studio.settings import Settings
from studio.users.acting import current_user_id
from studio.users.ownership import check_owner, user_names, visible

log = logging.getLogger(__name__)

MAX_NAME = 200
SOURCES: tuple[str, ...] = ("upload", "edit", "conversations", "feedback", "builtin", "curate", "augment")
PREVIEW_CHARS = 300


# -- small helpers -----------------------------------------------------------------------------------------------
def content_bytes(examples: Iterable[Mapping[str, Any]]) -> bytes:
    """The canonical JSONL bytes of examples: one sorted-key, compact JSON object per line."""
    return "".join(canonical_json(e) + "\n" for e in examples).encode("utf-8")


def content_hash(data: bytes) -> str:
    """The sha256 hex digest that identifies a version."""
    return hashlib.sha256(data).hexdigest()


def _check_name(name: str) -> str:
    text = (name or "").strip()
    if not text:
        raise ValidationError("a dataset needs a name", param="name")
    if len(text) > MAX_NAME:
        raise ValidationError(
            f"the dataset name is {len(text)} characters; at most {MAX_NAME} are allowed", param="name"
        )
    if any(ch in text for ch in "\x00\n\r\t"):
        raise ValidationError("the dataset name must be one line without control characters", param="name")
    return text


def _write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temporary file in the same folder; True if the file is new."""
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return not existed


def _cut(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reply_text(message: Mapping[str, Any]) -> str:
    """An assistant message as the preview shows it: its text, then ``→ name(arguments)`` per tool call."""
    calls = [
        f"→ {c['function']['name']}({json.dumps(c['function']['arguments'], ensure_ascii=False)})"
        for c in message.get("tool_calls") or ()
    ]
    return " ".join(p for p in (str(message["content"]), *calls) if p)


def _initial_stats(examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The statistics a new version starts with: its language mix. A failing identifier costs only the figure
    (:meth:`DatasetStore.language_mix` tries again later), never the import."""
    try:
        return {"languages": compute_language_mix(examples).model_dump()}
    except Exception:
        log.warning("could not identify the languages of a new dataset version", exc_info=True)
        return {}


class DatasetStore:
    """Every dataset operation of the studio; UI, CLI, REST and jobs call these methods."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    @property
    def root(self) -> Path:
        """``STUDIO_HOME/datasets``."""
        return self.settings.home / "datasets"

    # -- reading uploads -----------------------------------------------------------------------------------------
    def inspect_upload(
        self,
        data: bytes | Path,
        filename: str | None = None,
        mapping: ColumnMapping | None = None,
        *,
        tokenizer: ChatTokenizer | None = None,
        max_length: int | None = None,
        max_bytes: int = MAX_UPLOAD_BYTES,
    ) -> ValidationReport:
        """Parse and validate an upload without importing it: the report shown before the user accepts.

        The detected (or given) column mapping is in ``report.mapping``. Raises ``ValidationError`` only for a
        file that cannot be read at all (size, encoding, malformed JSON, unknown format).
        """
        parsed = parse_file(data, filename, max_bytes)
        validated = validate_records(
            parsed.records,
            mapping,
            lines=parsed.lines,
            columns=parsed.columns,
            tokenizer=tokenizer,
            max_length=max_length,
        )
        return validated.report

    def import_upload(
        self,
        name: str,
        data: bytes | Path,
        filename: str | None = None,
        mapping: ColumnMapping | None = None,
        on_invalid: OnInvalid = "reject",
        description: str = "",
        *,
        tokenizer: ChatTokenizer | None = None,
        max_length: int | None = None,
        source: str = "upload",
        max_bytes: int = MAX_UPLOAD_BYTES,
    ) -> ImportResult:
        """Import an uploaded file as a new dataset, or as a new version of the dataset called ``name``.

        ``mapping`` None detects the format. ``on_invalid="reject"`` refuses a file with any invalid row;
        ``"drop"`` imports the valid rows and counts the others in ``report.dropped_rows``. Exact duplicates are
        imported once. At least ``MIN_EXAMPLES`` unique valid examples are needed. Identical content to an
        existing version returns that version with ``created=False``.
        """
        name = _check_name(name)
        parsed = parse_file(data, filename, max_bytes)
        validated = validate_records(
            parsed.records,
            mapping,
            lines=parsed.lines,
            columns=parsed.columns,
            tokenizer=tokenizer,
            max_length=max_length,
        )
        accepted = apply_policy(validated, on_invalid)
        report = accepted.report
        lineage: dict[str, Any] = {"filename": filename or (data.name if isinstance(data, Path) else None)}
        lineage["file_type"] = parsed.file_type
        lineage["mapping"] = report.mapping.model_dump(exclude_defaults=True)
        lineage["rows"] = {
            "total": report.total_rows,
            "dropped_invalid": report.dropped_rows,
            "duplicates": report.duplicate_rows,
        }
        if report.unused_columns:
            lineage["unused_columns"] = report.unused_columns
        dataset, version, created = self._commit(
            name,
            kind=report.kind,
            fmt=report.format,
            examples=accepted.examples,
            source=source,
            parent_version_id=None,
            lineage=lineage,
            description=description,
        )
        return ImportResult(dataset=dataset, version=version, created=created, report=report)

    # -- writing versions ----------------------------------------------------------------------------------------
    def create_version(
        self,
        name: str,
        examples: Sequence[Mapping[str, Any]],
        source: str = "edit",
        parent_version_id: str | None = None,
        lineage: Mapping[str, Any] | None = None,
        *,
        kind: DatasetKind | None = None,
        description: str = "",
        min_examples: int = 1,
    ) -> ImportResult:
        """Store canonical ``examples`` as a new version of ``name`` (the dataset is created if absent).

        Used by edits, conversation imports and other producers. Every example must already be canonical
        (``ValidationError`` names the first that is not); ``parent_version_id`` defaults to the dataset's
        latest version. Identical content returns the existing version with ``created=False``.
        """
        name = _check_name(name)
        if source not in SOURCES:
            raise ValidationError(f"source must be one of {', '.join(SOURCES)}, not {source!r}", param="source")
        if not examples:
            raise ValidationError("a dataset version needs at least one example", param="examples")
        kind = kind or kind_of(examples[0])
        problems: list[str] = []
        bad = 0
        for i, example in enumerate(examples, start=1):
            try:
                check_canonical(example, kind)
            except RowProblem as exc:
                bad += 1
                if len(problems) < 5:
                    problems.append(f"example {i}: {exc.message}")
        if problems:
            raise ValidationError(
                f"{bad} example(s) are not valid {kind} examples — {'; '.join(problems)}", param="examples"
            )
        unique = list({canonical_json(e): dict(e) for e in examples}.values())
        if len(unique) < min_examples:
            raise ValidationError(
                f"{len(unique)} distinct example(s); at least {min_examples} are needed", param="examples"
            )
        if parent_version_id is not None:
            parent = self.version_by_id(parent_version_id)
            existing = self._find(name)
            if existing is None or parent.dataset_id != existing.id:
                raise ValidationError(
                    f"parent version {parent_version_id} does not belong to dataset {name!r}", param="parent_version_id"
                )
        dataset, version, created = self._commit(
            name,
            kind=kind,
            fmt={"supervised": "messages", "preference": "preference", "kto": "prompt_completion"}[kind],
            examples=unique,
            source=source,
            parent_version_id=parent_version_id,
            lineage=dict(lineage or {}),
            description=description,
        )
        return ImportResult(dataset=dataset, version=version, created=created)

    def from_conversations(
        self, conversation_ids: Sequence[str], name: str, description: str = "", on_invalid: OnInvalid = "reject"
    ) -> ImportResult:
        """A supervised dataset from saved Playground conversations; see ``studio.datasets.conversations``."""
        from studio.datasets.conversations import from_conversations

        return from_conversations(self, conversation_ids, name, description, on_invalid)

    def _find(self, name: str, session: Session | None = None, *, anyones: bool = False) -> Dataset | None:
        """The dataset called ``name`` if the current user may see it (``anyones``: even another's private one)."""
        stmt = select(Dataset).where(col(Dataset.name) == name)
        if not anyones:
            stmt = visible(stmt, Dataset.owner_id, Dataset.private)
        if session is None:
            with self.db.session() as own:
                return own.exec(stmt).first()
        return session.exec(stmt).first()

    def _commit(
        self,
        name: str,
        *,
        kind: DatasetKind,
        fmt: str,
        examples: Sequence[Mapping[str, Any]],
        source: str,
        parent_version_id: str | None,
        lineage: dict[str, Any],
        description: str,
    ) -> tuple[DatasetPublic, DatasetVersionPublic, bool]:
        data = content_bytes(examples)
        digest = content_hash(data)
        with self.db.session() as session:
            found = self._find(name, session, anyones=True)
            if found is not None:
                self._check_kind(found, kind)
                same = self._by_hash(session, found.id, digest)
                if same is not None:
                    return DatasetPublic.model_validate(found), DatasetVersionPublic.model_validate(same), False
                check_owner(f"dataset {name!r}", found.owner_id, self.db)  # before any file is written
            dataset_id = found.id if found is not None else new_id()
        stats = _initial_stats(examples)
        folder = self.root / dataset_id
        folder_existed = folder.exists()
        path = folder / f"{digest}.jsonl"
        created_file = _write_atomic(path, data)
        try:
            with self.db.session() as session:
                dataset = self._find(name, session, anyones=True)
                if dataset is None:
                    if found is not None:
                        raise ConflictError(f"dataset {name!r} was deleted while this version was being written")
                    dataset = Dataset(
                        id=dataset_id,
                        name=name,
                        description=description.strip(),
                        kind=kind,
                        owner_id=current_user_id(),
                    )
                    session.add(dataset)
                    session.flush()
                elif dataset.id != dataset_id:
                    raise ConflictError(
                        f"dataset {name!r} was created by another import at the same moment; import again to add "
                        "a version to it",
                        param="name",
                    )
                else:
                    self._check_kind(dataset, kind)
                    check_owner(f"dataset {name!r}", dataset.owner_id, self.db)  # a new version changes it
                    same = self._by_hash(session, dataset.id, digest)
                    if same is not None:  # written by a concurrent import meanwhile: same bytes, same file
                        created_file = False
                        return DatasetPublic.model_validate(dataset), DatasetVersionPublic.model_validate(same), False
                latest = session.exec(
                    select(func.max(DatasetVersion.number)).where(col(DatasetVersion.dataset_id) == dataset.id)
                ).one()
                version = DatasetVersion(
                    dataset_id=dataset.id,
                    number=int(latest or 0) + 1,
                    content_hash=digest,
                    format=fmt,
                    kind=kind,
                    num_examples=len(examples),
                    size_bytes=len(data),
                    path=str(path.relative_to(self.settings.home)),
                    source=source,
                    parent_version_id=parent_version_id or dataset.latest_version_id,
                    lineage=lineage,
                    stats=stats,
                )
                session.add(version)
                dataset.latest_version_id = version.id
                dataset.updated_at = utcnow()
                if description.strip():
                    dataset.description = description.strip()
                session.add(dataset)
                session.flush()
                public = DatasetPublic.model_validate(dataset), DatasetVersionPublic.model_validate(version)
        except IntegrityError:
            self._discard(path, created_file, folder, folder_existed)
            raise ConflictError(
                f"dataset {name!r} changed while this version was being written; try again", param="name"
            ) from None
        except BaseException:
            self._discard(path, created_file, folder, folder_existed)
            raise
        log.info("dataset %r: version %d (%s, %d examples)", name, public[1].number, digest[:12], len(examples))
        return public[0], public[1], True

    @staticmethod
    def _discard(path: Path, created_file: bool, folder: Path, folder_existed: bool) -> None:
        if created_file:
            path.unlink(missing_ok=True)
        if not folder_existed:
            with contextlib.suppress(OSError):  # not empty: another writer's files live there
                folder.rmdir()

    @staticmethod
    def _check_kind(dataset: Dataset, kind: str) -> None:
        if dataset.kind != kind:
            raise ConflictError(
                f"dataset {dataset.name!r} holds {dataset.kind} examples and this content is {kind}; "
                "a dataset keeps one kind — choose another name",
                param="name",
            )

    @staticmethod
    def _by_hash(session: Session, dataset_id: str, digest: str) -> DatasetVersion | None:
        return session.exec(
            select(DatasetVersion).where(
                col(DatasetVersion.dataset_id) == dataset_id, col(DatasetVersion.content_hash) == digest
            )
        ).first()

    # -- reading -------------------------------------------------------------------------------------------------
    def _not_found(self, session: Session, name: str) -> NotFoundError:
        names = session.exec(select(Dataset.name).order_by(col(Dataset.name)).limit(20)).all()
        known = ", ".join(names) if names else "none yet"
        return NotFoundError(f"dataset {name!r} not found; known datasets: {known}", param="name")

    def get(self, name: str) -> DatasetPublic:
        """The dataset called ``name``; ``NotFoundError`` lists the known names."""
        with self.db.session() as session:
            dataset = self._find(name, session)
            if dataset is None:
                raise self._not_found(session, name)
            return DatasetPublic.model_validate(dataset)

    def versions(self, name: str) -> list[DatasetVersionPublic]:
        """Every version of ``name``, newest first."""
        dataset = self.get(name)
        with self.db.session() as session:
            rows = session.exec(
                select(DatasetVersion)
                .where(col(DatasetVersion.dataset_id) == dataset.id)
                .order_by(col(DatasetVersion.number).desc())
            ).all()
            return [DatasetVersionPublic.model_validate(v) for v in rows]

    def get_version(self, name: str, number: int | None = None) -> DatasetVersionPublic:
        """Version ``number`` of ``name`` (the latest when None); ``NotFoundError`` lists the numbers there are."""
        dataset = self.get(name)
        with self.db.session() as session:
            stmt = select(DatasetVersion).where(col(DatasetVersion.dataset_id) == dataset.id)
            if number is None:
                stmt = stmt.where(col(DatasetVersion.id) == dataset.latest_version_id)
            else:
                stmt = stmt.where(col(DatasetVersion.number) == number)
            version = session.exec(stmt).first()
            if version is None:
                numbers = session.exec(
                    select(DatasetVersion.number)
                    .where(col(DatasetVersion.dataset_id) == dataset.id)
                    .order_by(col(DatasetVersion.number))
                ).all()
                raise NotFoundError(
                    f"dataset {name!r} has no version {number}; its versions are "
                    f"{', '.join(str(n) for n in numbers) or 'none'}",
                    param="version",
                )
            return DatasetVersionPublic.model_validate(version)

    def version_by_id(self, version_id: str) -> DatasetVersionPublic:
        """A version by its id (as jobs and lineage refer to it)."""
        with self.db.session() as session:
            version = session.get(DatasetVersion, version_id)
            if version is None:
                raise NotFoundError(f"dataset version {version_id!r} not found", param="version_id")
            return DatasetVersionPublic.model_validate(version)

    def _resolve(self, version: DatasetVersionPublic | str) -> DatasetVersionPublic:
        return self.version_by_id(version) if isinstance(version, str) else version

    def path_of(self, version: DatasetVersionPublic | str) -> Path:
        """The absolute path of a version's JSONL file."""
        return self.settings.home / self._resolve(version).path

    def load_examples(self, version: DatasetVersionPublic | str) -> list[dict[str, Any]]:
        """A version's canonical examples, after checking the file still has the version's hash."""
        resolved = self._resolve(version)
        path = self.settings.home / resolved.path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ServerError(f"the file of dataset version {resolved.number} is missing: {path}") from None
        if content_hash(data) != resolved.content_hash:
            raise ServerError(f"the file of dataset version {resolved.number} was changed on disk: {path}")
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]

    def preview(self, version: DatasetVersionPublic | str, n: int = 20) -> DatasetPreview:
        """The first ``n`` examples as table rows: ``#, system, user, assistant, turns`` for supervised data,
        ``#, prompt, chosen, rejected`` for preference pairs, ``#, prompt, completion, label`` for KTO examples (the
        last user message stands for the prompt; an assistant tool call shows as ``→ name(arguments)``)."""
        if n < 1:
            raise ValidationError(f"n must be at least 1, not {n}", param="n")
        resolved = self._resolve(version)
        examples = self.load_examples(resolved)
        rows: list[list[str | int]] = []
        for i, example in enumerate(examples[:n], start=1):
            if resolved.kind == "supervised":
                messages = example["messages"]
                system = messages[0]["content"] if messages[0]["role"] == "system" else ""
                user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                rows.append([i, _cut(system), _cut(user), _cut(_reply_text(messages[-1])), len(messages)])
            elif resolved.kind == "kto":
                prompt = next(m["content"] for m in reversed(example["prompt"]) if m["role"] == "user")
                label = "desirable" if example["label"] else "undesirable"
                rows.append([i, _cut(prompt), _cut(example["completion"]), label])
            else:
                prompt = next(m["content"] for m in reversed(example["prompt"]) if m["role"] == "user")
                rows.append([i, _cut(prompt), _cut(example["chosen"]), _cut(example["rejected"])])
        headers = {
            "supervised": ["#", "system", "user", "assistant", "turns"],
            "kto": ["#", "prompt", "completion", "label"],
        }.get(resolved.kind, ["#", "prompt", "chosen", "rejected"])
        return DatasetPreview(headers=headers, rows=rows, total=len(examples))

    def token_stats(
        self,
        version: DatasetVersionPublic | str,
        tokenizer: ChatTokenizer,
        max_length: int | None = None,
        *,
        refresh: bool = False,
    ) -> TokenStats:
        """Token lengths of a version with ``tokenizer``'s chat template (preference pairs: the longer reply):
        min/mean/p50/p95/max and a histogram, saved in ``DatasetVersion.stats["tokens"]`` and reused for the
        same tokenizer and ``max_length`` unless ``refresh``."""
        resolved = self._resolve(version)
        name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        cached = resolved.stats.get("tokens")
        if not refresh and cached and cached.get("tokenizer") == name and cached.get("max_length") == max_length:
            return TokenStats.model_validate(cached)
        lengths = [count_tokens(e, tokenizer) for e in self.load_examples(resolved)]
        stats = compute_token_stats(lengths, name, max_length)
        with self.db.session() as session:
            row = session.get(DatasetVersion, resolved.id)
            if row is None:
                raise NotFoundError(f"dataset version {resolved.id!r} was deleted", param="version_id")
            row.stats = {**row.stats, "tokens": stats.model_dump()}  # a new dict: JSON columns track assignment
            session.add(row)
        return stats

    def language_mix(self, version: DatasetVersionPublic | str, *, refresh: bool = False) -> LanguageMix:
        """How many of a version's examples are in each language (:class:`LanguageMix`). Worked out when the
        version is written and kept in ``DatasetVersion.stats["languages"]``; a version written before that (or
        with ``refresh``) is identified now and the result saved."""
        resolved = self._resolve(version)
        cached = resolved.stats.get("languages")
        if cached and not refresh:
            return LanguageMix.model_validate(cached)
        mix = compute_language_mix(self.load_examples(resolved))
        with self.db.session() as session:
            row = session.get(DatasetVersion, resolved.id)
            if row is None:
                raise NotFoundError(f"dataset version {resolved.id!r} was deleted", param="version_id")
            row.stats = {**row.stats, "languages": mix.model_dump()}  # a new dict: JSON columns track assignment
            session.add(row)
        return mix

    def list_cards(self) -> list[DatasetCard]:
        """A card per dataset (its latest version), most recently updated first."""
        with self.db.session() as session:
            counts = dict(
                session.exec(
                    select(DatasetVersion.dataset_id, func.count(col(DatasetVersion.id))).group_by(
                        col(DatasetVersion.dataset_id)
                    )
                ).all()
            )
            rows = session.exec(
                visible(select(Dataset, DatasetVersion), Dataset.owner_id, Dataset.private)
                .join(DatasetVersion, col(DatasetVersion.id) == col(Dataset.latest_version_id))
                .order_by(col(Dataset.updated_at).desc())
            ).all()
            owners = user_names(self.db) if any(d.owner_id for d, _v in rows) else {}
            cards: list[DatasetCard] = []
            for dataset, version in rows:
                tokens = version.stats.get("tokens")
                cards.append(
                    DatasetCard(
                        name=dataset.name,
                        description=dataset.description,
                        kind=dataset.kind,  # type: ignore[arg-type]
                        badge=KIND_BADGES.get(dataset.kind, dataset.kind.title()),
                        format=version.format,
                        format_label=FORMAT_LABELS.get(version.format, version.format),
                        num_examples=version.num_examples,
                        examples_label=examples_label(dataset.kind, version.num_examples),
                        size_bytes=version.size_bytes,
                        size_label=size_label(version.size_bytes),
                        version=version.number,
                        versions=int(counts.get(dataset.id, 0)),
                        version_id=version.id,
                        created_at=dataset.created_at,
                        updated_at=dataset.updated_at,
                        token_stats=TokenStats.model_validate(tokens) if tokens else None,
                        languages=LanguageMix.model_validate(mix) if (mix := version.stats.get("languages")) else None,
                        owner=owners.get(dataset.owner_id or "", ""),
                        private=dataset.private,
                    )
                )
            return cards

    def set_private(self, name: str, private: bool) -> DatasetPublic:
        """Hide a dataset from the rest of the team (its owner and admins still see it), or share it again."""
        with self.db.session() as session:
            dataset = self._find(name, session)
            if dataset is None:
                raise self._not_found(session, name)
            check_owner(f"dataset {name!r}", dataset.owner_id, self.db)
            dataset.private = bool(private)
            session.add(dataset)
            session.flush()
            return DatasetPublic.model_validate(dataset)

    def names(self) -> list[str]:
        """Every dataset name, sorted (for pickers)."""
        with self.db.session() as session:
            stmt = visible(select(Dataset.name), Dataset.owner_id, Dataset.private)
            return list(session.exec(stmt.order_by(col(Dataset.name))).all())

    def delete(self, name: str) -> None:
        """Delete a dataset, all its versions and their files."""
        with self.db.session() as session:
            dataset = self._find(name, session)
            if dataset is None:
                raise self._not_found(session, name)
            check_owner(f"dataset {name!r}", dataset.owner_id, self.db)
            dataset_id = dataset.id
            session.exec(delete(DatasetVersion).where(col(DatasetVersion.dataset_id) == dataset_id))
            session.delete(dataset)
        # after the commit: a failed delete leaves files that still belong to rows, never rows without files
        shutil.rmtree(self.root / dataset_id, ignore_errors=True)
        log.info("deleted dataset %r", name)
