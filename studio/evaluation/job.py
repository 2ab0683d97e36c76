"""The ``eval`` job kind: generate with each model on each example, score every generation, store it all.

Per model: load it (with its adapter), then per example generate (when a generation metric is asked for), run
every metric, and write one :class:`~studio.evaluation.tables.EvalSample` row. A metric that raises is recorded
with its name and traceback (in the row's ``error`` and the run's ``metric_errors``) and the run goes on; a
metric that cannot run here (no judge, no Safety layer, not a transformers model) is reported as unavailable.
The per-model summary (one number per metric key) is stored in ``Job.result``. A cancelled run keeps what it
scored; resuming it skips the examples already stored.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlmodel import col, delete, select

from studio.db.engine import Database
from studio.errors import StudioError, ValidationError
from studio.evaluation.config import EvalConfig, resolve_path
from studio.evaluation.lm import LanguageModel, split_last_word
from studio.evaluation.metrics import MetricContext, MetricRegistry, MetricSpec, MetricUnavailableError, Sample
from studio.evaluation.plugins import load_registry
from studio.evaluation.tables import EvalSample
from studio.jobs.kinds import JobKind, register_kind
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.context import AppContext
    from studio.datasets.store import DatasetStore
    from studio.inference.manager import EngineManager
    from studio.jobs.reporter import JobReporter
    from studio.jobs.runtime import JobRuntime

log = logging.getLogger(__name__)

KIND = "eval"
MAX_TEXT_BYTES = 20 * 1024 * 1024


# --- submit time ------------------------------------------------------------------------------------------------


def _store(settings: Settings, db: Database) -> DatasetStore:
    from studio.datasets.builtin import ensure_builtin_datasets
    from studio.datasets.store import DatasetStore

    store = DatasetStore(settings, db)
    ensure_builtin_datasets(store)
    return store


def prepare_eval(config: EvalConfig, settings: Settings, db: Database) -> EvalConfig:
    """Check a config against this studio and pin its data: every metric exists, the judge is set when needed,
    the models resolve, a ``dataset_file`` is imported as a dataset version, and the version (or text file) and
    its content hash are written into the config."""
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.models.registry import ModelRegistry

    registry = load_registry(settings)
    specs = [registry.get(name) for name in config.metrics]
    if config.judge is None and any(_uses_judge(s) for s in specs):
        raise ValidationError("the judge metric needs a judge: set judge.model (any alias or model)", param="judge")
    resolver = AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))
    for spec in config.models:
        resolver.resolve(spec.model)
    if config.judge is not None:
        resolver.resolve(config.judge.model)
    update: dict[str, Any] = {}
    if config.text_file:
        path = resolve_path(config.text_file, "text_file", settings)
        update["text_file"] = str(path)
        update["dataset_hash"] = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        store = _store(settings, db)
        if config.dataset_file:
            path = resolve_path(config.dataset_file, "dataset_file", settings)
            name = config.dataset or path.stem
            imported = store.import_upload(name, path, path.name, description=f"imported for evaluation from {path}")
            version = imported.version
            update["dataset"] = name
            update["dataset_file"] = str(path)
        else:
            version = store.get_version(config.dataset or "", config.dataset_version)
        if version.kind != "supervised":
            raise ValidationError(
                f"dataset {config.dataset!r} holds {version.kind} examples; evaluation needs supervised examples "
                "(a conversation whose last message is the reference reply)",
                param="dataset",
            )
        update["dataset_version"] = version.number
        update["dataset_hash"] = version.content_hash
    if not config.name:
        update["name"] = f"eval {config.source_label} · {', '.join(m.display for m in config.models)}"[:200]
    return config.model_copy(update=update)


def _uses_judge(spec: MetricSpec) -> bool:
    return spec.name == "judge" or any(k.endswith("_valid") for k in spec.keys[1:])


# --- examples ---------------------------------------------------------------------------------------------------


def text_samples(text: str) -> list[Sample]:
    """A plain text as samples: one per paragraph (blank-line separated); the reference is its final word."""
    paragraphs = [" ".join(p.split()) for p in text.replace("\r\n", "\n").split("\n\n")]
    samples: list[Sample] = []
    for paragraph in paragraphs:
        if not paragraph:
            continue
        split = split_last_word(paragraph)
        samples.append(Sample(len(samples), paragraph, split[1].strip() if split else None, is_text=True))
    return samples


def dataset_samples(examples: Sequence[Mapping[str, Any]]) -> list[Sample]:
    """Supervised examples as samples: the prompt is every message but the last; the last (assistant) message
    is the reference."""
    samples = []
    for i, example in enumerate(examples):
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in example.get("messages", [])]
        reference: str | None = None
        if messages and messages[-1]["role"] == "assistant":
            reference = messages.pop()["content"]
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        samples.append(Sample(i, user, reference, messages=tuple(messages)))
    return samples


def load_samples(config: EvalConfig, settings: Settings, db: Database) -> list[Sample]:
    """The run's samples (after ``limit``), from its pinned dataset version or text file."""
    if config.text_file:
        path = resolve_path(config.text_file, "text_file", settings)  # pinned at submit; checked again here
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValidationError(f"text_file {path}: cannot read it ({exc})", param="text_file") from None
        if len(data) > MAX_TEXT_BYTES:
            raise ValidationError(f"text_file {path} is over {MAX_TEXT_BYTES // 2**20} MiB", param="text_file")
        samples = text_samples(data.decode("utf-8", errors="replace"))
    else:
        store = _store(settings, db)
        version = store.get_version(config.dataset or "", config.dataset_version)
        if config.dataset_hash and version.content_hash != config.dataset_hash:
            raise ValidationError(
                f"dataset {config.dataset!r} v{version.number} is not the content this run was submitted with",
                param="dataset",
            )
        samples = dataset_samples(store.load_examples(version))
    if not samples:
        raise ValidationError("there is nothing to evaluate: the data holds no examples", param="dataset")
    return samples[: config.limit] if config.limit else samples


# --- running ----------------------------------------------------------------------------------------------------


class _RunRecord:
    """What the run reports besides scores: unavailable metrics, metric errors, model errors."""

    def __init__(self) -> None:
        self.unavailable: dict[str, str] = {}
        self.metric_errors: dict[str, dict[str, Any]] = {}
        self.model_errors: dict[str, str] = {}

    def metric_failed(self, metric: str, model: str, index: int, trace: str) -> None:
        entry = self.metric_errors.setdefault(
            metric, {"metric": metric, "model": model, "example": index, "traceback": trace, "count": 0}
        )
        entry["count"] += 1


def score_sample(
    sample: Sample, specs: Sequence[MetricSpec], mctx: MetricContext, record: _RunRecord
) -> tuple[dict[str, float | None], str | None]:
    """Every metric's scores for one sample; a metric that raises leaves its name and traceback in ``record``."""
    scores: dict[str, float | None] = {}
    errors: list[str] = []
    for spec in specs:
        if spec.name in record.unavailable:
            continue
        try:
            scores.update(spec.run(sample, mctx))
        except MetricUnavailableError as exc:
            record.unavailable[spec.name] = exc.message
        except Exception as exc:  # any metric (a plugin above all) may fail: isolate it, keep the run going
            record.metric_failed(spec.name, sample.model, sample.index, traceback.format_exc().rstrip())
            errors.append(f"{spec.name}: {type(exc).__name__}: {exc}")
    return scores, "; ".join(errors) or None


def _generate(engines: EngineManager, model: str, sample: Sample, params: Any) -> tuple[str, dict[str, float | None]]:
    from studio.inference.base import ChatMessage

    if sample.is_text:
        split = split_last_word(sample.input)
        prompt = split[0] if split else sample.input
        handle = engines.start_completion(model, prompt, params, endpoint="eval")
    else:
        msgs = [ChatMessage(m["role"], m["content"]) for m in sample.messages]  # type: ignore[arg-type]
        handle = engines.start_chat(model, msgs, params, endpoint="eval")
    result = handle.wait()
    st = result.stats
    return result.text, {
        "completion_tokens": float(st.completion_tokens),
        "prompt_tokens": float(st.prompt_tokens),
        "ttft_s": st.ttft_s,
        "tokens_per_s": st.tokens_per_s,
        "latency_s": st.total_s,
    }


def _judge_chat(engines: EngineManager, judge_model: str) -> Any:
    from studio.inference.base import ChatMessage
    from studio.inference.params import make_sampling_params

    def ask(prompt: str, max_tokens: int) -> str:
        params = make_sampling_params(temperature=0.0, max_tokens=max_tokens, top_p=1.0, top_k=0)
        return engines.start_chat(judge_model, [ChatMessage("user", prompt)], params, endpoint="eval.judge").wait().text

    return ask


def stored_samples(db: Database, job_id: str, model: str | None = None) -> list[EvalSample]:
    """The stored rows of a run (of one model), in example order."""
    query = select(EvalSample).where(col(EvalSample.job_id) == job_id)
    if model is not None:
        query = query.where(col(EvalSample.model) == model)
    with db.session() as session:
        return list(session.exec(query.order_by(col(EvalSample.model), col(EvalSample.example_index))).all())


def _save(db: Database, job_id: str, sample: Sample, scores: Mapping[str, float | None], error: str | None) -> None:
    row = EvalSample(
        job_id=job_id,
        model=sample.model,
        example_index=sample.index,
        input=sample.input,
        reference=sample.reference,
        output=sample.output,
        scores=dict(scores),
        stats=dict(sample.stats),
        error=error,
    )
    with db.session() as session:
        session.exec(
            delete(EvalSample).where(  # type: ignore[call-overload]
                col(EvalSample.job_id) == job_id,
                col(EvalSample.model) == sample.model,
                col(EvalSample.example_index) == sample.index,
            )
        )
        session.add(row)


def summarise(
    db: Database, job_id: str, specs: Sequence[MetricSpec], labels: Sequence[str], is_text: bool
) -> dict[str, dict[str, float | None]]:
    """Per model label, every metric key's run-level figure, from the stored rows."""
    summary: dict[str, dict[str, float | None]] = {}
    for label in labels:
        rows = stored_samples(db, job_id, label)
        samples = [
            Sample(r.example_index, r.input, r.reference, r.output, stats=r.stats, model=label, is_text=is_text)
            for r in rows
        ]
        figures: dict[str, float | None] = {}
        for spec in specs:
            per_example = [{k: v for k, v in r.scores.items() if k in spec.keys} for r in rows]
            per_example = [p for p in per_example if p]
            if not per_example:
                continue
            used = [s for s, r in zip(samples, rows, strict=True) if any(k in r.scores for k in spec.keys)]
            figures.update(spec.summarise(per_example, used))
        figures["examples"] = float(len(rows))
        summary[label] = figures
    return summary


def evaluate(
    config: EvalConfig,
    ctx: AppContext,
    reporter: JobReporter,
    job_id: str,
    registry: MetricRegistry | None = None,
) -> dict[str, Any]:
    """Run the evaluation ``config`` describes with ``ctx``'s engines, storing rows under ``job_id``; returns the
    run's result (per-model summary, metrics, errors)."""
    registry = registry or load_registry(ctx.settings)
    specs = [registry.get(name) for name in config.metrics]
    samples = load_samples(config, ctx.settings, ctx.db)
    generate = any(s.needs == "generation" for s in specs)
    model_metrics = any(s.needs == "model" for s in specs)
    done = {(r.model, r.example_index) for r in stored_samples(ctx.db, job_id)}
    record = _RunRecord()
    cache: dict[str, Any] = {}
    judge = _judge_chat(ctx.engines, config.judge.model) if config.judge is not None else None
    total = len(config.models) * len(samples)
    step = 0
    stopped = False
    started = time.monotonic()
    reporter.progress(0, total, message=f"{len(samples)} examples × {len(config.models)} models")
    for position, spec in enumerate(config.models):
        label = spec.display
        if stopped:
            break
        reporter.log(f"evaluating {label} on {len(samples)} examples ({', '.join(config.metrics)})")
        try:
            engine = ctx.engines.load(spec.model, adapter=spec.adapter)
            lm = None
            if model_metrics:
                resolved = ctx.engines.resolve(spec.model)
                template = ctx.engines.template_for(resolved.chat_template, resolved.entry)
                lm = LanguageModel.from_engine(engine, template)
        except StudioError as exc:
            record.model_errors[label] = exc.message
            reporter.log(f"{label}: could not load: {exc.message}")
            step += len(samples)
            continue
        mctx = MetricContext(config=config, lm=lm, judge_chat=judge, cache=cache, settings=ctx.settings)
        params = ctx.engines.params_for(spec.model, **config.generation.sampling_overrides())
        for sample in samples:
            if (label, sample.index) in done:
                step += 1
                continue
            if reporter.should_stop():
                stopped = True
                break
            output: str = ""
            stats: dict[str, float | None] = {}
            error: str | None = None
            if generate:
                try:
                    output, stats = _generate(ctx.engines, spec.model, sample, params)
                except StudioError as exc:
                    error = f"generation: {exc.message}"
            scored = Sample(
                sample.index, sample.input, sample.reference, output, sample.messages, stats, label, sample.is_text
            )
            scores, metric_error = score_sample(scored, specs, mctx, record) if error is None else ({}, None)
            _save(ctx.db, job_id, scored, scores, error or metric_error)
            step += 1
            reporter.progress(step, total, message=f"{label}: example {sample.index + 1}/{len(samples)}")
        later = config.models[position + 1 :]
        if spec.adapter or any(m.model == spec.model and m.adapter for m in later):
            ctx.engines.unload(spec.model)  # the next run of this model needs other adapter weights
    labels = [m.display for m in config.models]
    summary = summarise(ctx.db, job_id, specs, labels, bool(config.text_file))
    for name, reason in record.unavailable.items():
        reporter.log(f"metric {name} unavailable: {reason}")
    for err in record.metric_errors.values():
        reporter.log(f"metric {err['metric']} raised on {err['count']} example(s):\n{err['traceback']}")
    return {
        "models": summary,
        "metrics": list(config.metrics),
        "keys": {s.name: list(s.keys) for s in specs},
        "higher_is_better": {s.name: s.higher_is_better for s in specs},
        "examples": len(samples),
        "source": config.source_label,
        "unavailable": record.unavailable,
        "metric_errors": list(record.metric_errors.values()),
        "model_errors": record.model_errors,
        "stopped": stopped,
        "seconds": round(time.monotonic() - started, 2),
    }


def run_eval(config: EvalConfig, runtime: JobRuntime) -> dict[str, Any]:
    """The job body: an :class:`AppContext` of this process runs :func:`evaluate`."""
    from studio.context import AppContext

    ctx = AppContext.create(runtime.settings)
    try:
        return evaluate(config, ctx, runtime, runtime.job.id)
    finally:
        ctx.close()


register_kind(
    JobKind(
        name=KIND,
        config_model=EvalConfig,
        run=run_eval,
        description="Evaluate models on a dataset or text: generations and per-example scores for each metric.",
        prepare=prepare_eval,
    )
)
