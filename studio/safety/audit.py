"""The ``audit`` job kind: a bias & toxicity audit of a model, alias or adapter.

The job sends every prompt of the audit (demographic groups of the chosen categories substituted into the
prompt templates, see :mod:`studio.safety.audit_prompts`) ``samples_per_prompt`` times to the model, scores
each reply (toxicity, refusal, sentiment: :mod:`studio.safety.audit_metrics`) and stores it as an
:class:`~studio.safety.tables.AuditGeneration` row as soon as it is generated. At the end it aggregates the
rows into a **scorecard** — per category: each group's metrics, the disparity of each metric between groups,
and the ids of the worst generations for review — returned as the job's result (``Job.result``) and written
to ``runs/<job>/scorecard.json`` (the job's artifact). Scorecards name the model, alias and adapter, so the
scorecards of two audits (base vs fine-tuned) compare side by side
(:func:`studio.safety.audit_store.compare_scorecards`).

Cancelling stops after the current generation; resuming skips the generations already stored. Sample ``k`` of
a prompt uses seed ``seed + k``, so an audit repeated with the same config and model gives the same replies.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import col, select

from studio.db.engine import Database
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.jobs.kinds import JobKind, register_kind
from studio.safety.audit_metrics import (
    DEFAULT_LEXICON_PATH,
    DEFAULT_REFUSAL_PATH,
    METRICS,
    RefusalDetector,
    ScoredReply,
    SentimentLexicon,
    category_disparities,
    group_scores,
    worst,
)
from studio.safety.audit_prompts import AuditPrompt, expand_prompts, load_demographics, load_templates
from studio.safety.policy import SafetyPolicyConfig, load_policy
from studio.safety.store import PolicyStore, shipped_policy_path
from studio.safety.tables import AuditGeneration
from studio.safety.toxicity import active_scorer
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.jobs.runtime import JobRuntime

log = logging.getLogger(__name__)

KIND = "audit"
SCORECARD_FILE = "scorecard.json"
SCORECARD_VERSION = 1


class AuditConfig(BaseModel):
    """Config of an ``audit`` job (the same schema for the YAML file, the Safety tab's form and the job row)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A name for the audit (shown in the jobs list).")
    model: str = Field(
        "default",
        min_length=1,
        max_length=512,
        description="Model to audit: a user alias, a registry id (HuggingFaceTB/SmolLM2-135M-Instruct), "
        "'default' or a model folder under STUDIO_HOME or STUDIO_MODEL_DIRS.",
    )
    adapter: str | None = Field(
        None,
        max_length=1024,
        description="A PEFT adapter to audit on top of the model (a name under STUDIO_HOME/adapters, or its folder "
        "under STUDIO_HOME or STUDIO_MODEL_DIRS); empty audits the model itself.",
    )
    categories: list[str] = Field(
        default_factory=lambda: ["gender"],
        min_length=1,
        description="Demographic categories to audit: gender, ethnicity, religion, age, nationality "
        "(the categories of the demographics file).",
    )
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Optional: only these groups of a category (e.g. {gender: [man, woman]}); a category left "
        "out uses all its groups.",
    )
    templates: list[str] = Field(
        default_factory=list, description="Template ids to use from the templates file (empty: all)."
    )
    samples_per_prompt: int = Field(3, ge=1, le=50, description="Replies generated for each prompt.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_tokens: int = Field(96, ge=1, le=4096, description="Most tokens per reply.")
    seed: int = Field(0, ge=0, description="Base seed: sample k of every prompt uses seed + k.")
    worst_per_category: int = Field(5, ge=0, le=100, description="How many worst generations to link per category.")
    demographics_file: str = Field(
        "configs/safety/demographics.yaml",
        max_length=1024,
        description="Demographic groups per category (YAML): a file under STUDIO_HOME (relative paths are taken "
        "from it) or the shipped configs/.",
    )
    templates_file: str = Field(
        "configs/safety/audit_templates.yaml",
        max_length=1024,
        description="Prompt templates with {group} / {a_group} slots (YAML): a file under STUDIO_HOME or the "
        "shipped configs/.",
    )
    policy: str = Field(
        "configs/safety/default.yaml",
        max_length=1024,
        description="Safety policy whose toxicity scorer and threshold score the replies: a name under "
        "STUDIO_HOME/safety/ ('default' is the shipped one) or a path in that folder or configs/safety/.",
    )

    @field_validator("categories")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(c.strip() for c in v if c.strip()))

    def prompts(self, settings: Settings | None = None) -> list[AuditPrompt]:
        """Every prompt of this audit (validates categories, groups and templates against the files). The files
        may lie under STUDIO_HOME when ``settings`` are given, else only in the shipped ``configs/``."""
        return expand_prompts(
            load_demographics(self.demographics_file, settings),
            load_templates(self.templates_file, settings),
            self.categories,
            self.groups or None,
            self.templates or None,
        )

    def total_generations(self, settings: Settings | None = None) -> int:
        """How many replies the audit generates."""
        return len(self.prompts(settings)) * self.samples_per_prompt


def audit_policy(config: AuditConfig, settings: Settings | None = None) -> SafetyPolicyConfig:
    """The audit's safety policy, its word list and checkpoint checked (:class:`~studio.safety.store.PolicyStore`).
    Without ``settings`` (a stored audit's scorecard read from the database alone) only the shipped policies in
    ``configs/safety`` can be named."""
    if settings is not None:
        store = PolicyStore(settings)
        return store.resolved(store.load(config.policy)[1])
    return load_policy(shipped_policy_path(config.policy))


def prepare_audit(config: AuditConfig, settings: Settings, db: Database) -> AuditConfig:
    """Submit-time checks: the prompts expand, the policy loads and the model name resolves."""
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.models.registry import ModelRegistry

    config.prompts(settings)
    audit_policy(config, settings)
    AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings)).resolve(config.model)
    return config


def model_label(model: str, adapter: str | None) -> str:
    """How a scorecard names what was audited: ``model`` or ``model + adapter``."""
    return f"{model} + {adapter}" if adapter else model


def _done_keys(db: Database, job_id: str) -> set[tuple[str, str, str, int]]:
    query = select(AuditGeneration).where(col(AuditGeneration.job_id) == job_id)
    with db.session() as session:
        return {(g.category, g.group, g.template_id, g.sample) for g in session.exec(query).all()}


def job_generations(db: Database, job_id: str) -> list[AuditGeneration]:
    """Every stored generation of an audit job, in generation order."""
    query = select(AuditGeneration).where(col(AuditGeneration.job_id) == job_id).order_by(col(AuditGeneration.id))
    with db.session() as session:
        return list(session.exec(query).all())


def build_scorecard(
    config: AuditConfig,
    generations: list[AuditGeneration],
    *,
    scorer: str,
    toxic_threshold: float,
    job_id: str = "",
    stopped: bool = False,
) -> dict[str, Any]:
    """The scorecard of an audit from its stored generations (see the module docstring for its shape)."""
    categories: dict[str, Any] = {}
    for category in config.categories:
        rows = [g for g in generations if g.category == category]
        if not rows:
            continue
        groups = group_scores((ScoredReply(g.group, g.toxicity, g.refusal, g.sentiment) for g in rows), toxic_threshold)
        categories[category] = {
            "groups": groups,
            "disparity": category_disparities(groups),
            "worst": worst([(g.id or 0, g.toxicity, g.sentiment) for g in rows], config.worst_per_category),
        }
    return {
        "version": SCORECARD_VERSION,
        "job_id": job_id,
        "name": config.name,
        "model": config.model,
        "adapter": config.adapter,
        "model_label": model_label(config.model, config.adapter),
        "generations": len(generations),
        "samples_per_prompt": config.samples_per_prompt,
        "params": {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens},
        "seed": config.seed,
        "templates": sorted({g.template_id for g in generations}),
        "toxicity_scorer": scorer,
        "toxic_threshold": toxic_threshold,
        "refusal_detector": f"phrase list {DEFAULT_REFUSAL_PATH.name} (first 300 characters)",
        "sentiment": f"VADER-like lexicon {DEFAULT_LEXICON_PATH.name}",
        "metrics": {name: label for name, (label, _r, _w) in METRICS.items()},
        "stopped": stopped,
        "categories": categories,
    }


def run_audit(config: AuditConfig, runtime: JobRuntime) -> dict[str, Any]:
    """The job body: generate, score and store every reply, then write the scorecard."""
    from studio.context import AppContext  # heavy (engines); only in the job's process

    prompts = config.prompts(runtime.settings)
    policy = audit_policy(config, runtime.settings)
    scorer, scorer_name = active_scorer(policy)
    refusals = RefusalDetector.from_file()
    lexicon = SentimentLexicon.from_file()
    total = len(prompts) * config.samples_per_prompt
    done = _done_keys(runtime.db, runtime.job.id)
    runtime.log(
        f"auditing {model_label(config.model, config.adapter)}: {len(prompts)} prompts x "
        f"{config.samples_per_prompt} samples; toxicity by {scorer_name}"
        + (f"; {len(done)} generations already stored (resuming)" if done else "")
    )
    ctx = AppContext.create(runtime.settings)
    stopped = False
    try:
        engine = ctx.engines.load(config.model, adapter=config.adapter)
        adapter_name: str | None = getattr(engine, "active_adapter", None) if config.adapter else None
        step = len(done)
        runtime.progress(step, total, message="generating")
        for prompt in prompts:
            for sample in range(config.samples_per_prompt):
                if (prompt.category, prompt.group, prompt.template_id, sample) in done:
                    continue
                if runtime.should_stop():
                    stopped = True
                    break
                params = make_sampling_params(
                    temperature=config.temperature,
                    top_p=config.top_p,
                    max_tokens=config.max_tokens,
                    seed=config.seed + sample,
                )
                messages = [ChatMessage("user", prompt.text)]
                started = time.perf_counter()
                result = ctx.engines.start_chat(
                    config.model, messages, params, endpoint="safety.audit", adapter=adapter_name
                ).wait()
                text = result.text
                row = AuditGeneration(
                    job_id=runtime.job.id,
                    category=prompt.category,
                    group=prompt.group,
                    template_id=prompt.template_id,
                    sample=sample,
                    prompt=prompt.text,
                    response=text,
                    finish_reason=result.end.finish_reason if result.end is not None else "",
                    toxicity=scorer.score(text) if text.strip() else 0.0,
                    refusal_phrase=refusals.find(text),
                    sentiment=lexicon.score(text),
                )
                row.refusal = row.refusal_phrase is not None
                with runtime.db.session() as session:
                    session.add(row)
                step += 1
                runtime.progress(
                    step, total, message=f"{prompt.category}/{prompt.group}/{prompt.template_id} #{sample + 1}"
                )
                runtime.metrics(step, None, {"toxicity": row.toxicity, "sentiment": row.sentiment})
                log.debug("generation %d/%d in %.2fs", step, total, time.perf_counter() - started)
            if stopped:
                break
    finally:
        ctx.close()
    generations = job_generations(runtime.db, runtime.job.id)
    scorecard = build_scorecard(
        config,
        generations,
        scorer=scorer_name,
        toxic_threshold=policy.toxicity.threshold,
        job_id=runtime.job.id,
        stopped=stopped,
    )
    path = write_scorecard(runtime.run_dir, scorecard)
    if stopped:
        # the generations stored so far are the checkpoint: a resumed job skips them
        runtime.checkpoint_saved(path)
        runtime.log(f"stopped after {len(generations)} of {total} generations")
    else:
        runtime.log(f"scorecard written to {path}")
    return {**scorecard, "artifact_path": str(path)}


def write_scorecard(run_dir: Path, scorecard: dict[str, Any]) -> Path:
    """Write ``runs/<job>/scorecard.json``."""
    path = run_dir / SCORECARD_FILE
    path.write_text(json.dumps(scorecard, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


AUDIT_KIND = register_kind(
    JobKind(
        KIND,
        AuditConfig,
        run_audit,
        "Bias & toxicity audit: demographic prompt templates, toxicity / refusal / sentiment per group, "
        "disparities and a scorecard per category.",
        prepare=lambda config, settings, db: prepare_audit(config, settings, db),
    )
)
