"""What a bias audit asks: demographic groups (``configs/safety/demographics.yaml``) substituted into prompt
templates (``configs/safety/audit_templates.yaml``).

Templates carry two slots: ``{group}`` (the group as written, "elderly person") and ``{a_group}`` (with its
indefinite article, "an elderly person"; "an" before a vowel letter, which is right for every shipped group).
A template may list ``categories`` it applies to; without them it applies to all. Every prompt of an audit is
one (category, group, template) triple; each is sent ``samples_per_prompt`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from studio.errors import ValidationError
from studio.paths import describe_roots, find_user_path
from studio.safety.policy import PROJECT_DIR, SAFETY_CONFIG_DIR
from studio.settings import CONFIG_DIR, Settings

DEFAULT_DEMOGRAPHICS_PATH = SAFETY_CONFIG_DIR / "demographics.yaml"
DEFAULT_TEMPLATES_PATH = SAFETY_CONFIG_DIR / "audit_templates.yaml"
CATEGORIES: tuple[str, ...] = ("gender", "ethnicity", "religion", "age", "nationality")


class AuditTemplateSpec(BaseModel):
    """One prompt template with demographic slots."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Unique template id.")
    prompt: str = Field(min_length=1, description="The prompt, with {group} or {a_group} where the group goes.")
    description: str = Field("", description="What the template probes.")
    categories: list[str] | None = Field(None, description="Categories it applies to (empty: every category).")

    @field_validator("prompt")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{group}" not in v and "{a_group}" not in v:
            raise ValueError("a template prompt needs a {group} or {a_group} slot")
        try:
            v.format(group="x", a_group="a x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"only {{group}} and {{a_group}} slots are known ({exc!r}); write {{{{ for a brace"
            ) from None
        return v


class AuditTemplatesSpec(BaseModel):
    """The templates file."""

    model_config = ConfigDict(extra="forbid")

    templates: list[AuditTemplateSpec] = Field(min_length=1)

    @field_validator("templates")
    @classmethod
    def _unique_ids(cls, v: list[AuditTemplateSpec]) -> list[AuditTemplateSpec]:
        seen: set[str] = set()
        for t in v:
            if t.id in seen:
                raise ValueError(f"template id {t.id!r} is used twice")
            seen.add(t.id)
        return v


@dataclass(frozen=True)
class AuditPrompt:
    """One prompt of an audit: which category, group and template it comes from, and its text."""

    category: str
    group: str
    template_id: str
    text: str


def resolve_config_path(path: str | Path, param: str = "file", settings: Settings | None = None) -> Path:
    """An audit's YAML file (demographics, templates) as an absolute path: absolute, or relative to STUDIO_HOME
    and then to the project folder (for the shipped ``configs/safety/...``). It must lie in STUDIO_HOME or
    ``configs/`` (only ``configs/`` without ``settings``) and be a ``.yaml``/``.yml`` file."""
    roots = [settings.home, CONFIG_DIR] if settings is not None else [CONFIG_DIR]
    bases = [settings.home, PROJECT_DIR] if settings is not None else [PROJECT_DIR]
    where = describe_roots(roots, settings) if settings is not None else "configs"
    return find_user_path(path, roots, param=param, bases=bases, where=where, suffixes=(".yaml", ".yml"))


def _read_yaml(path: Path, param: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"{path.name}: no such file", param=param) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path.name}: cannot read it ({type(exc).__name__})", param=param) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path.name}: not valid YAML ({exc})", param=param) from None


def load_demographics(
    path: str | Path = DEFAULT_DEMOGRAPHICS_PATH, settings: Settings | None = None
) -> dict[str, list[str]]:
    """Category -> its groups, in file order. Every category needs at least two distinct groups. ``path`` is
    confined as :func:`resolve_config_path` says."""
    target = resolve_config_path(path, "demographics_file", settings)
    data = _read_yaml(target, "demographics_file")
    if not isinstance(data, dict) or not data:
        raise ValidationError(
            f"{target.name}: expected a mapping of category -> list of groups", param="demographics_file"
        )
    out: dict[str, list[str]] = {}
    for category, groups in data.items():
        if not isinstance(groups, list) or len({str(g).strip() for g in groups if str(g).strip()}) < 2:
            raise ValidationError(
                f"{target.name}: category {category!r} needs a list of at least two groups", param="demographics_file"
            )
        out[str(category)] = list(dict.fromkeys(str(g).strip() for g in groups if str(g).strip()))
    return out


def load_templates(
    path: str | Path = DEFAULT_TEMPLATES_PATH, settings: Settings | None = None
) -> list[AuditTemplateSpec]:
    """The prompt templates in ``path`` (confined as :func:`resolve_config_path` says); errors name the file and
    the field."""
    target = resolve_config_path(path, "templates_file", settings)
    data = _read_yaml(target, "templates_file")
    try:
        return AuditTemplatesSpec.model_validate(data).templates
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValidationError(f"{target.name}: {where}: {err['msg']}", param="templates_file") from None


def with_article(group: str) -> str:
    """``group`` with "a" or "an" in front ("an" before a vowel letter)."""
    return f"{'an' if group[:1].lower() in 'aeiou' else 'a'} {group}"


def fill_template(template: AuditTemplateSpec, group: str) -> str:
    """The template's prompt for one group."""
    return template.prompt.format(group=group, a_group=with_article(group))


def expand_prompts(
    demographics: dict[str, list[str]],
    templates: list[AuditTemplateSpec],
    categories: list[str],
    groups: dict[str, list[str]] | None = None,
    template_ids: list[str] | None = None,
) -> list[AuditPrompt]:
    """Every (category, group, template) prompt of an audit, in a stable order.

    ``groups`` restricts a category to some of its groups (each must be in the demographics file);
    ``template_ids`` picks templates by id. Raises ``ValidationError`` naming the field for an unknown
    category, group or template, or when a category ends up with fewer than two groups or no template.
    """
    chosen_templates = templates
    if template_ids:
        known = {t.id: t for t in templates}
        missing = [t for t in template_ids if t not in known]
        if missing:
            raise ValidationError(
                f"unknown template(s) {', '.join(missing)}; known: {', '.join(known)}", param="templates"
            )
        chosen_templates = [known[t] for t in dict.fromkeys(template_ids)]
    prompts: list[AuditPrompt] = []
    for category in dict.fromkeys(categories):
        if category not in demographics:
            raise ValidationError(
                f"unknown category {category!r}; the demographics file has {', '.join(demographics)}",
                param="categories",
            )
        members = demographics[category]
        wanted = (groups or {}).get(category)
        if wanted:
            unknown = [g for g in wanted if g not in members]
            if unknown:
                raise ValidationError(
                    f"group(s) {', '.join(unknown)} are not in category {category!r} ({', '.join(members)})",
                    param=f"groups.{category}",
                )
            members = list(dict.fromkeys(wanted))
        if len(members) < 2:
            raise ValidationError(f"category {category!r} needs at least two groups to compare", param="groups")
        applicable = [t for t in chosen_templates if not t.categories or category in t.categories]
        if not applicable:
            raise ValidationError(f"no template applies to category {category!r}", param="templates")
        for template in applicable:
            for group in members:
                prompts.append(AuditPrompt(category, group, template.id, fill_template(template, group)))
    return prompts


def parse_groups_text(text: str) -> dict[str, list[str]]:
    """Groups typed as ``category: group, group; category: group, group`` (one category per line or per
    ``;``) → ``{category: [groups]}``; empty text → ``{}`` (every group)."""
    out: dict[str, list[str]] = {}
    for part in text.replace("\n", ";").split(";"):
        if not part.strip():
            continue
        category, sep, groups = part.partition(":")
        if not sep or not category.strip():
            raise ValidationError(f"groups: write 'category: group, group' (got {part.strip()!r})", param="groups")
        out[category.strip()] = [g.strip() for g in groups.split(",") if g.strip()]
    return out
