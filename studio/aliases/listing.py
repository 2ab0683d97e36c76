"""The alias list as people see it: rows, search, filter, grouping by model family, sorting, usage figures; broken
alias files as rows of their own with their error; and the model objects ``/v1/models`` answers with."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func
from sqlmodel import select

from studio.aliases.resolve import AliasView, ResolvedModel
from studio.aliases.store import BrokenAliasFile
from studio.db import Database, RequestLog
from studio.models.registry import ModelEntry
from studio.paths import display_path
from studio.settings import Settings

TABLE_COLUMNS = [
    "Name",
    "Source",
    "Repository",
    "Filename",
    "Quant",
    "Chat template",
    "Key params",
    "Requests 24h",
    "Problem",
]
SortKey = Literal["name", "source", "repository", "requests"]
_QUANT_RE = re.compile(r"[.-](I?Q\d[A-Z0-9_]*|F16|F32|BF16)\.gguf$", re.IGNORECASE)


def model_family(repo: str) -> str:
    """``HuggingFaceTB/SmolLM2-135M-Instruct`` → ``SmolLM2``; ``/models/llama-3-8b`` → ``llama``."""
    name = repo.rstrip("/").split("/")[-1]
    name = name.split(":")[0]
    head = re.split(r"[-_.]", name, maxsplit=1)[0]
    return head or name


def usage_since(db: Database, since: datetime) -> dict[str, int]:
    """Requests served per alias (user alias name, or model id for model aliases) since ``since``."""
    with db.session() as s:
        rows = s.exec(
            select(RequestLog.alias, func.count())
            .where(RequestLog.created_at >= since)
            .where(RequestLog.alias.is_not(None))  # type: ignore[union-attr]
            .group_by(RequestLog.alias)
        ).all()
    return {str(alias): int(n) for alias, n in rows}


def usage_last_24h(db: Database) -> dict[str, int]:
    return usage_since(db, datetime.now(UTC) - timedelta(hours=24))


@dataclass(frozen=True)
class AliasStats:
    total: int
    user: int
    model: int
    requests_24h: int
    most_used: str | None
    most_used_count: int
    broken: int = 0  # alias files that cannot be read

    def summary(self) -> str:
        top = f"{self.most_used} ({self.most_used_count})" if self.most_used else "none yet"
        text = (
            f"**{self.total}** aliases · **{self.user}** user · **{self.model}** model · "
            f"**{self.requests_24h}** requests in the last 24 h · most used: **{top}**"
        )
        if self.broken:
            files = "file" if self.broken == 1 else "files"
            text += f" · **{self.broken}** broken alias {files} (see Problem)"
        return text


def alias_stats(views: list[AliasView], usage: dict[str, int], *, broken: int = 0) -> AliasStats:
    names = {v.config.alias for v in views}
    counts = Counter({k: v for k, v in usage.items() if k in names})
    top = counts.most_common(1)
    return AliasStats(
        total=len(views),
        user=sum(v.source == "user" for v in views),
        model=sum(v.source == "model" for v in views),
        requests_24h=sum(counts.values()),
        most_used=top[0][0] if top else None,
        most_used_count=top[0][1] if top else 0,
        broken=broken,
    )


def key_params(view: AliasView) -> str:
    rp = view.config.request_params.model_dump(exclude_none=True, exclude={"stop", "user"})
    cp = view.config.context_params.model_dump(exclude_none=True)
    return ", ".join(f"{k}={v}" for k, v in {**rp, **cp}.items())


def alias_rows(
    views: list[AliasView],
    usage: dict[str, int],
    *,
    query: str = "",
    source: str = "all",
    sort: SortKey = "name",
    group_by_family: bool = False,
    broken: list[BrokenAliasFile] | None = None,
) -> list[list[str | int]]:
    """Table rows (``TABLE_COLUMNS``) after search (name, repo, filename, template), source filter and sort.
    With ``group_by_family`` rows are ordered by model family first and a family column leads each row.
    ``broken`` files are rows with source ``broken`` and their error under Problem (they are user alias files: the
    ``user`` filter keeps them); search looks in their name, file name and error."""
    q = query.strip().lower()
    picked = [
        v
        for v in views
        if (source in ("all", "") or v.source == source)
        and (
            not q
            or any(
                q in (field or "").lower()
                for field in (v.config.alias, v.config.repo, v.config.filename, v.config.chat_template)
            )
        )
    ]

    def sort_key(v: AliasView) -> tuple:
        if sort == "requests":
            primary: tuple = (-usage.get(v.config.alias, 0), v.config.alias.lower())
        elif sort == "source":
            primary = (v.source, v.config.alias.lower())
        elif sort == "repository":
            primary = (v.config.repo.lower(), v.config.alias.lower())
        else:
            primary = (v.config.alias.lower(),)
        return ((model_family(v.config.repo).lower(),) if group_by_family else ()) + primary

    keyed: list[tuple[tuple, list[str | int]]] = []
    for v in picked:
        c = v.config
        quant = (v.entry.quant if v.entry else None) or _quant(c.filename)
        row: list[str | int] = [
            c.alias,
            v.source,
            c.repo,
            c.filename or "",
            quant or "",
            c.chat_template or "(model's own)",
            key_params(v),
            usage.get(c.alias, 0),
            "",
        ]
        if group_by_family:
            row.insert(0, model_family(c.repo))
        keyed.append((sort_key(v), row))
    if source in ("all", "", "user", "broken"):
        for b in broken or []:
            name = b.name or b.path.name
            if q and not any(q in text.lower() for text in (name, b.path.name, b.error)):
                continue
            keys = {"requests": (0, name.lower()), "source": ("broken", name.lower()), "repository": ("", name.lower())}
            key = (("",) if group_by_family else ()) + keys.get(sort, (name.lower(),))
            cells: list[str | int] = [name, "broken", "", "", "", "", "", 0, b.error]
            if group_by_family:
                cells.insert(0, "")
            keyed.append((key, cells))
    return [row for _key, row in sorted(keyed, key=lambda item: item[0])]


def _root(entry: ModelEntry | None, settings: Settings) -> str | None:
    """The model behind a name, by its id; a model named by its path as ``$STUDIO_HOME/...`` (or just its folder
    name outside STUDIO_HOME), never by an absolute path."""
    if entry is None:
        return None
    return display_path(entry.path, settings) if entry.id == str(entry.path) else entry.id


def model_card(name: str, resolved: ResolvedModel, settings: Settings, *, created: int) -> dict[str, Any]:
    """``GET /v1/models/{name}``: the name as asked, and what it resolves to (see :func:`model_cards`)."""
    user = resolved.source == "user"
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "alias" if user else resolved.entry.source,
        "source": resolved.source or "model",
        "root": _root(resolved.entry, settings),
    }


def model_cards(views: list[AliasView], settings: Settings, *, created: int) -> list[dict[str, Any]]:
    """``/v1/models``: user aliases first (``owned_by`` "alias"), then one model alias per model (``owned_by`` its
    registry source: bundled, local, hf_cache); ``source`` says which (``user``/``model``), ``root`` names the model
    that serves it (None when it is not on this machine). A model alias a user alias of the same name shadows is not
    listed: requests for that name get the user alias."""
    cards: list[dict[str, Any]] = []
    seen: set[str] = set()
    for v in views:
        name = v.config.alias
        if name in seen:
            continue
        seen.add(name)
        owner = "alias" if v.source == "user" else (v.entry.source if v.entry else "model")
        root = _root(v.entry, settings)
        cards.append(
            {"id": name, "object": "model", "created": created, "owned_by": owner, "source": v.source, "root": root}
        )
    return cards


def _quant(filename: str | None) -> str | None:
    if not filename:
        return None
    m = _QUANT_RE.search(filename)
    return m.group(1).upper() if m else None
