"""The alias list as people see it: rows, search, filter, grouping by model family, sorting, usage figures."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func
from sqlmodel import select

from studio.aliases.resolve import AliasView
from studio.db import Database, RequestLog

TABLE_COLUMNS = ["Name", "Source", "Repository", "Filename", "Quant", "Chat template", "Key params", "Requests 24h"]
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

    def summary(self) -> str:
        top = f"{self.most_used} ({self.most_used_count})" if self.most_used else "none yet"
        return (
            f"**{self.total}** aliases · **{self.user}** user · **{self.model}** model · "
            f"**{self.requests_24h}** requests in the last 24 h · most used: **{top}**"
        )


def alias_stats(views: list[AliasView], usage: dict[str, int]) -> AliasStats:
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
) -> list[list[str | int]]:
    """Table rows (``TABLE_COLUMNS``) after search (name, repo, filename, template), source filter and sort.
    With ``group_by_family`` rows are ordered by model family first and a family column leads each row."""
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

    rows: list[list[str | int]] = []
    for v in sorted(picked, key=sort_key):
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
        ]
        if group_by_family:
            row.insert(0, model_family(c.repo))
        rows.append(row)
    return rows


def _quant(filename: str | None) -> str | None:
    if not filename:
        return None
    m = _QUANT_RE.search(filename)
    return m.group(1).upper() if m else None
