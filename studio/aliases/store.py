"""User aliases as YAML files in ``STUDIO_HOME/aliases/`` (one file per alias, name sanitised), written
atomically: a temporary file in the same folder, then a rename, so a failed save never leaves half a file.

Every request that names a model looks through the user aliases, so the store keeps each file parsed and
re-reads only what changed: each look lists the folder (new and deleted files) and compares every file's
(inode, size, mtime) with what it read. A file modified within the file system's time-stamp granularity of
being read (an edit in place, same size, in the same tick) could keep its stamp, so a file younger than
``SETTLE_NS`` when read is read again next time and re-parsed only if its text changed. A broken file is
logged when its content changes, not on every request.

A broken file is never left out silently: :meth:`AliasStore.load_all` reports it with its error, and it keeps the
alias name it declares (its ``alias:`` line, even when the YAML around it does not parse; else its file name, as
the store would have named it) so that a request for that name can say the file is broken and why instead of
"not found". Errors name a file by the store's ``label`` (``$STUDIO_HOME/aliases`` for the server), never by an
absolute path, when one is given.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError

from studio.aliases.schema import AliasConfig
from studio.errors import ConflictError, NotFoundError, ValidationError
from studio.files import write_text_atomic
from studio.inference.params import validation_error_from_pydantic
from studio.models.registry import safe_name
from studio.users.ownership import acting_user_name, can_see_named, check_owner_named

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenAliasFile:
    """An alias file that cannot be used: ``error`` names the file (by the store's label) and says why; ``name`` is
    the alias it declares when that much can be read."""

    path: Path
    error: str
    name: str | None = None


_ALIAS_LINE_RE = re.compile(r"""^alias:[ \t]*(?:'([^']*)'|"([^"]*)"|([^#\n]*?))[ \t]*(?:#.*)?$""", re.MULTILINE)


def declared_name(text: str | None) -> str | None:
    """The alias name a file declares, read as leniently as possible: the top-level ``alias`` of a YAML mapping,
    else a top-level ``alias:`` line (the YAML further down may be what is broken)."""
    if text is None:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        value = data.get("alias")
        return (value.strip() or None) if isinstance(value, str) else None
    m = _ALIAS_LINE_RE.search(text)
    if m is None:
        return None
    return next((g for g in m.groups() if g is not None), "").strip() or None


SETTLE_NS = 2_000_000_000  # a file older than this when read keeps its time stamp until it changes again

FileStamp = tuple[int, int, int]  # (inode, size, mtime_ns): an atomic save changes the inode


@dataclass(frozen=True)
class _ParsedFile:
    path: Path
    stamp: FileStamp
    settled: bool  # the file was older than SETTLE_NS when read: an unchanged stamp means unchanged content
    text: str | None
    config: AliasConfig | None
    broken: BrokenAliasFile | None


def alias_filename(name: str) -> str:
    """``llama3:instruct`` → ``llama3--instruct.yaml``."""
    return f"{safe_name(name)}.yaml"


def parse_alias_yaml(text: str, source: str = "<text>") -> AliasConfig:
    """Parse one alias document. Errors name the source and, for YAML syntax, the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ValidationError(f"{where}: not valid YAML ({exc.problem})", param="yaml") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML ({exc})", param="yaml") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{source}: an alias file must be a mapping with 'alias' and 'repo'", param="yaml")
    return alias_from_dict(data, source)


def alias_from_dict(data: dict[str, Any], source: str = "alias") -> AliasConfig:
    try:
        return AliasConfig.model_validate(data)
    except PydanticValidationError as exc:
        err = validation_error_from_pydantic(exc, model=AliasConfig)
        raise ValidationError(
            f"{source}: {err.message}", param=err.param, user_message=f"{source}: {err.user_message}"
        ) from None


def dump_alias_yaml(cfg: AliasConfig) -> str:
    return yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False)


class AliasStore:
    """The folder of user alias files."""

    def __init__(self, folder: Path, *, label: str | None = None) -> None:
        """``label``: how messages name the folder (``$STUDIO_HOME/aliases``); by default its path."""
        self.folder = folder
        self.label = label
        self._files: dict[Path, _ParsedFile] = {}
        self._lock = threading.Lock()  # one store serves every request thread of the server

    def path_for(self, name: str) -> Path:
        return self.folder / alias_filename(name)

    def display(self, path: Path) -> str:
        """A file of the folder as messages name it."""
        return str(path) if self.label is None else f"{self.label}/{path.name}"

    def _scan(self) -> list[_ParsedFile]:
        """Every alias file in the folder, in file-name order, parsed only if new or changed since last time."""
        with self._lock:
            if not self.folder.is_dir():
                self._files = {}
                return []
            now = time.time_ns()
            current: dict[Path, _ParsedFile] = {}
            for path in sorted(self.folder.glob("*.y*ml")):
                try:
                    st = path.stat()
                except OSError:  # deleted since the listing
                    continue
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                known = self._files.get(path)
                if known is None or known.stamp != stamp or not known.settled:
                    known = self._read(path, self.display(path), stamp, now, known)
                current[path] = known
            self._files = current
            return list(current.values())

    @staticmethod
    def _read(path: Path, source: str, stamp: FileStamp, now: int, known: _ParsedFile | None) -> _ParsedFile:
        settled = now - stamp[2] > SETTLE_NS
        error = ""
        try:
            text: str | None = path.read_text(encoding="utf-8")
        except OSError as exc:
            text, error = None, f"{source}: cannot be read ({exc.strerror})"  # str(exc) holds the absolute path
        except UnicodeDecodeError as exc:
            text, error = None, f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        if known is not None and known.text == text:
            return _ParsedFile(path, stamp, settled, text, known.config, known.broken)  # touched, not changed
        config: AliasConfig | None = None
        if text is not None:
            try:
                config = parse_alias_yaml(text, source)
            except ValidationError as exc:
                error = str(exc)
        if config is not None:
            return _ParsedFile(path, stamp, settled, text, config, None)
        log.warning("skipping alias file %s: %s", path, error)
        return _ParsedFile(path, stamp, settled, text, None, BrokenAliasFile(path, error, declared_name(text)))

    def load_all(self, *, anyones: bool = False) -> tuple[list[AliasConfig], list[BrokenAliasFile]]:
        """Every alias file in the folder (hand-written ones too); broken files are reported, not fatal. Another
        user's private alias is left out unless ``anyones``."""
        files = self._scan()
        aliases = [f.config for f in files if f.config is not None]
        if not anyones:
            aliases = [a for a in aliases if can_see_named(a.owner, a.private)]
        broken = [f.broken for f in files if f.broken is not None]
        return aliases, broken

    def _any(self, name: str) -> AliasConfig | None:
        return next((c for c in self.load_all(anyones=True)[0] if c.alias == name), None)

    def set_private(self, name: str, private: bool) -> AliasConfig:
        """Hide an alias from the rest of the team (its owner and admins still see and use it), or share it."""
        cfg = self.require(name)
        check_owner_named(f"alias '{name}'", cfg.owner)
        updated = cfg.model_copy(update={"private": bool(private)})
        write_text_atomic(self.file_of(name) or self.path_for(name), dump_alias_yaml(updated))
        return updated

    def _index(self) -> dict[str, Path]:
        """Alias name → the file it was read from (hand-written files may have any name)."""
        index: dict[str, Path] = {}
        for parsed in self._scan():
            if parsed.config is not None:
                index.setdefault(parsed.config.alias, parsed.path)
        return index

    def file_of(self, name: str) -> Path | None:
        return self._index().get(name)

    def alias_in_file(self, path: Path) -> str | None:
        """The alias the store reads from ``path`` (None when the file is not in the folder, is broken, or declares
        a name an earlier file already holds): validating that file is editing that alias, not adding a second."""
        wanted = os.path.normcase(os.path.realpath(path))
        for name, file in self._index().items():
            if os.path.normcase(os.path.realpath(file)) == wanted:
                return name
        return None

    def broken_named(self, name: str) -> BrokenAliasFile | None:
        """The broken file that would hold alias ``name`` (by the name it declares, else by its file name: the one
        the store would give ``name``, or ``name`` itself as the Aliases tab and ``alias list`` show such a file),
        when no readable file does."""
        files = self._scan()
        if any(f.config is not None and f.config.alias == name for f in files):
            return None
        canonical = alias_filename(name)
        for broken in (f.broken for f in files if f.broken is not None):
            if broken.name == name or (broken.name is None and broken.path.name in (name, canonical)):
                return broken
        return None

    def get(self, name: str) -> AliasConfig | None:
        for cfg in self.load_all()[0]:
            if cfg.alias == name:
                return cfg
        return None

    def require(self, name: str) -> AliasConfig:
        cfg = self.get(name)
        if cfg is None:
            known = ", ".join(a.alias for a in self.load_all()[0]) or "none"
            raise NotFoundError(f"user alias '{name}' not found; user aliases: {known}", param="alias")
        return cfg

    def save(self, cfg: AliasConfig, *, replace: str | None = None) -> Path:
        """Write ``cfg``. ``replace`` names the alias being edited (it may be renamed); without it an existing
        alias of the same name is a conflict. With users, an edited alias keeps its owner (only they or an admin may
        edit it) and its privacy unless ``cfg`` sets it; a new one belongs to the signed-in user."""
        edited = self._any(replace) if replace else None
        if edited is not None:
            check_owner_named(f"alias '{edited.alias}'", edited.owner)
            keep: dict[str, object] = {"owner": edited.owner}
            if "private" not in cfg.model_fields_set:
                keep["private"] = edited.private
            cfg = cfg.model_copy(update=keep)
        elif acting_user_name() is not None:
            cfg = cfg.model_copy(update={"owner": acting_user_name()})
        existing = self.get(cfg.alias)
        if existing is not None and replace != cfg.alias:
            raise ConflictError(f"an alias named '{cfg.alias}' already exists; pick another name", param="alias")
        target = self.path_for(cfg.alias)
        if target.exists() and existing is None and replace != cfg.alias:
            # another alias whose name sanitises to the same file name
            raise ConflictError(
                f"alias '{cfg.alias}' would be stored as {target.name}, which another alias already uses",
                param="alias",
            )
        old_file = self.file_of(replace) if replace else None
        write_text_atomic(target, dump_alias_yaml(cfg))
        if old_file is not None and old_file != target:
            old_file.unlink(missing_ok=True)  # renamed, or a hand-written file now stored under its canonical name
        return target

    def delete(self, name: str) -> Path:
        """Delete alias ``name``'s file; a broken file is deleted by the name it declares too."""
        broken = self.broken_named(name)
        if broken is not None:
            broken.path.unlink(missing_ok=True)
            return broken.path
        check_owner_named(f"alias '{name}'", self.require(name).owner)
        path = self.file_of(name) or self.path_for(name)
        path.unlink()
        return path
