"""The ``augment`` job kind: paraphrase a dataset version's rows, or synthesise new rows from seed examples,
with any alias, registry model or deployment, and store the result as a new dataset version.

**Modes.** ``paraphrase`` rewrites, for each of the first ``max_rows`` rows, ``variants`` times, the row's
prompt (the last user message), its response (the final assistant reply; for preference pairs both replies,
for KTO rows the completion) or both, one request per text (:data:`PARAPHRASE_PROMPT`). ``synthesize`` works
self-instruct style on supervised data: each new row shows the model ``seeds`` prompts of the source picked
at random (:data:`INSTRUCTION_PROMPT`), asks for a new instruction in their style, then asks the model to
answer that instruction. Replies are cleaned of quotes and preambles ("Sure! Here is the rewritten text:")
by :func:`clean_reply`.

**Lifecycle.** ``prepare`` (at submit) pins the source version and its content hash and checks the model and
the target dataset. The job writes each generated row, as soon as it exists, as one line of
``runs/<job>/generated.jsonl`` (the checkpoint, registered before the first request): cancelling stops before
the next row, and a resumed job — after a cancel, a worker restart or a model that failed mid-run — reads
that file and requests only the rows still missing. A request that fails (engine error, HTTP error from a
remote server) fails the job; nothing is registered until every planned row exists. Then rows with an empty
reply, exact duplicates of source rows or of each other are dropped, the optional ``filter`` pipeline runs
(with the source rows present, so its near-duplicate step also drops rows too close to the source), and the
new version is created with ``source="augment"``.

**Provenance.** Canonical examples allow no extra keys, so what made each row is stored in the new version's
lineage: ``lineage["provenance"]`` holds one entry per generated row — ``row`` (its index in the new version),
``model`` / ``model_id`` / ``engine``, ``prompt`` (every prompt sent for it, in order), ``seed`` (each
request's seed), ``params`` (the sampling parameters used) and ``source_row`` (paraphrase) or ``seed_rows``
(synthesize): indices in the source version. ``lineage["source"]`` names the source version, which the
lineage graph draws as an edge.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.curation.pipeline import CurationPipeline, TokenCounter, check_size, token_counter
from studio.curation.steps import StepContext, StepReport, run_step
from studio.db.engine import Database
from studio.errors import NotFoundError, ValidationError
from studio.jobs.kinds import JobKind, register_kind
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.datasets.schemas import DatasetVersionPublic
    from studio.datasets.store import DatasetStore
    from studio.db.tables import Job
    from studio.inference.manager import EngineManager
    from studio.jobs.runtime import JobRuntime

log = logging.getLogger(__name__)

KIND = "augment"
CHECKPOINT_FILE = "generated.jsonl"

#: the request that rewrites one text
PARAPHRASE_PROMPT = (
    "Rewrite the following text so it means the same but uses different words. "
    "Reply with the rewritten text only.\n\n{text}"
)
#: the self-instruct request for a new instruction, ``{examples}`` being numbered seed prompts
INSTRUCTION_PROMPT = (
    "Here are some example instructions:\n\n{examples}\n\n"
    "Write one new instruction in the same style but on a different topic. "
    "Reply with the new instruction only."
)
SEED_CHARS = 1000  # a seed prompt longer than this is cut in the instruction request
_SAMPLING = {"temperature", "top_p", "max_tokens", "seed", "include_source"}
#: the config fields a new version's lineage records as the run's parameters, per mode
_RUN_PARAMS = {
    "paraphrase": {"fields", "variants", "max_rows", *_SAMPLING},
    "synthesize": {"seeds", "count", *_SAMPLING},
}


class AugmentConfig(BaseModel):
    """Config of an ``augment`` job (one schema for the YAML file, the UI form and the stored job row)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A name for the job (shown in the jobs list).")
    dataset: str = Field(..., min_length=1, max_length=200, description="The dataset to augment.")
    version: int | None = Field(
        None, ge=1, description="Its version to read (empty: the latest, pinned when the job is submitted)."
    )
    dataset_hash: str = Field(
        "", max_length=64, description="Content hash of the source version (filled in when the job is submitted)."
    )
    model: str = Field(
        "default",
        min_length=1,
        max_length=512,
        description="The model that writes the new text: a user alias, a registry id, 'default', or a deployment's "
        "alias deploy:<name>.",
    )
    mode: Literal["paraphrase", "synthesize"] = Field(
        "paraphrase",
        description="paraphrase: rewrite existing rows; synthesize: write new instructions in the style of seed "
        "examples, then answer them (self-instruct; supervised datasets only).",
    )
    fields: Literal["prompts", "responses", "both"] = Field(
        "prompts", description="paraphrase: rewrite the prompt (last user message), the response(s), or both."
    )
    variants: int = Field(1, ge=1, le=10, description="paraphrase: new rows made from each source row (1-10).")
    max_rows: int | None = Field(
        None, ge=1, le=100_000, description="paraphrase: use only the first this many source rows (empty: all)."
    )
    seeds: int = Field(3, ge=1, le=10, description="synthesize: seed examples shown per request (1-10).")
    count: int = Field(10, ge=1, le=10_000, description="synthesize: new examples to write (1-10000).")
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy, up to 2).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold (above 0, up to 1).")
    max_tokens: int = Field(256, ge=1, le=4096, description="Most new tokens per reply (1-4096).")
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Base seed: request n of the run uses seed + n, so a rerun repeats it."
    )
    filter: CurationPipeline | None = Field(
        None,
        description="A curation pipeline run on the generated rows (the source rows present, so a dedupe step "
        "also drops rows too close to the source); empty and exact-duplicate rows are always dropped.",
    )
    into: str = Field(
        "", max_length=200, description="The dataset that receives the new version (empty: <dataset>-augmented)."
    )
    include_source: bool = Field(
        True, description="The new version holds the source rows and the generated ones (off: generated only)."
    )

    @property
    def target(self) -> str:
        """The dataset the new version goes into."""
        return self.into.strip() or f"{self.dataset}-augmented"


# --- replies -----------------------------------------------------------------------------------------------------

_INTERJECTION = re.compile(r"^\s*(?:sure|certainly|of course|okay|ok|absolutely)\b[!.,]*\s*\n", re.I)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|absolutely|here(?:'s| is| are)|rewrit(?:e|ten)|rephrased?|"
    r"paraphrased?|reword(?:ed)?|let's try|new instruction|instruction|answer)\b[^:\n]{0,80}:[ \t]*\n?",
    re.I,
)
_NUMBERED = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}


def clean_reply(text: str) -> str:
    """A model's reply without what is not the text asked for: a leading "Sure!", a preamble ending in a colon
    ("Here is the rewritten text:"), a label ("Rewritten text:") and quotes around the whole reply."""
    out = text.strip()
    for _ in range(3):
        before = out
        out = _INTERJECTION.sub("", out, count=1)
        out = _PREAMBLE.sub("", out, count=1).strip()
        if len(out) >= 2 and _QUOTES.get(out[0]) == out[-1] and out[0] not in out[1:-1]:
            out = out[1:-1].strip()
        if out == before:
            break
    return out


def clean_instruction(text: str) -> str:
    """A reply to :data:`INSTRUCTION_PROMPT` cut to the one instruction it should be: cleaned, its first
    paragraph that is not a lead-in ending in a colon, without a list number, stopping where the model starts
    numbering further instructions."""
    paragraphs = [p.strip() for p in clean_reply(text).split("\n\n")]
    first = next((p for p in paragraphs if p and not p.endswith(":")), "")
    kept: list[str] = []
    for i, line in enumerate(first.splitlines()):
        if i > 0 and _NUMBERED.match(line):
            break
        kept.append(line)
    out = "\n".join(kept)
    while True:  # quotes around a numbered line, or a number inside quotes
        cleaned = clean_reply(_NUMBERED.sub("", out, count=1))
        if cleaned == out:
            return out
        out = cleaned


# --- what to rewrite ---------------------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _last_user(messages: Sequence[Mapping[str, Any]]) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)


def text_targets(example: Mapping[str, Any], fields: str) -> list[Path_]:
    """Where the texts to paraphrase lie in a canonical example (paths of keys and indices): the last user
    message for ``prompts``; the final assistant reply (not a tool call), both preference replies, or a KTO
    completion for ``responses``; empty texts are left out."""
    prompts: list[Path_] = []
    responses: list[Path_] = []
    if "messages" in example:
        messages = example["messages"]
        user = _last_user(messages)
        if user is not None:
            prompts.append(("messages", user, "content"))
        last = messages[-1] if messages else {}
        if last.get("role") == "assistant" and not last.get("tool_calls"):
            responses.append(("messages", len(messages) - 1, "content"))
    else:
        user = _last_user(example.get("prompt") or [])
        if user is not None:
            prompts.append(("prompt", user, "content"))
        responses.extend([("chosen",), ("rejected",)] if "chosen" in example else [("completion",)])
    chosen = {"prompts": prompts, "responses": responses, "both": prompts + responses}[fields]
    return [p for p in chosen if str(_get(example, p)).strip()]


def _get(example: Any, path: Path_) -> Any:
    for key in path:
        example = example[key]
    return example


def _set(example: Any, path: Path_, value: str) -> None:
    for key in path[:-1]:
        example = example[key]
    example[path[-1]] = value


# --- planning ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One row to generate: its checkpoint key, the source row it rewrites (paraphrase) or its number
    (synthesize), and the ordinal its requests' seeds are counted from."""

    key: str
    index: int
    variant: int
    ordinal: int


def plan(config: AugmentConfig, examples: Sequence[Mapping[str, Any]]) -> list[Unit]:
    """Every row the run generates, in the order they go into the new version."""
    if config.mode == "synthesize":
        return [Unit(f"s{i}", i, 0, 2 * i) for i in range(config.count)]
    rows = examples[: config.max_rows] if config.max_rows else examples
    units = []
    for r, example in enumerate(rows):
        if text_targets(example, config.fields):
            for v in range(config.variants):
                units.append(Unit(f"r{r}v{v}", r, v, 4 * (r * config.variants + v)))
    return units


def seed_pool(examples: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of the source rows that can serve as seeds (a supervised row with a non-empty user message)."""
    pool = []
    for i, example in enumerate(examples):
        messages = example.get("messages") or []
        user = _last_user(messages)
        if user is not None and str(messages[user]["content"]).strip():
            pool.append(i)
    return pool


def _seed_rows(config: AugmentConfig, pool: Sequence[int], i: int) -> list[int]:
    rng = random.Random(f"{config.seed}:{i}")  # the same seeds for row i on every run and every resume
    return sorted(rng.sample(list(pool), min(config.seeds, len(pool))))


def instruction_prompt(seed_texts: Sequence[str]) -> str:
    """The self-instruct request showing ``seed_texts`` as numbered examples."""
    shown = [" ".join(t.split())[:SEED_CHARS] for t in seed_texts]
    return INSTRUCTION_PROMPT.format(examples="\n".join(f"{n}. {t}" for n, t in enumerate(shown, start=1)))


# --- submit time -------------------------------------------------------------------------------------------------


def _store(settings: Settings, db: Database) -> DatasetStore:
    from studio.datasets.store import DatasetStore

    return DatasetStore(settings, db)


def _source_version(store: DatasetStore, config: AugmentConfig) -> DatasetVersionPublic:
    """The source version (``NotFoundError`` names ``dataset`` or ``version``), refused when over the size limit."""
    try:
        version = store.get_version(config.dataset, config.version)
    except NotFoundError as exc:
        raise NotFoundError(exc.message, param="dataset" if exc.param == "name" else exc.param) from None
    check_size(store.settings, config.dataset, version)
    return version


def _filter_tokens(settings: Settings, pipeline: CurationPipeline | None) -> TokenCounter | None:
    """The token counter the filter's length-in-tokens steps need (None when none does)."""
    if pipeline is None or not pipeline.needs_tokens():
        return None
    _check_filter(pipeline)
    return token_counter(settings, pipeline.tokenizer_model or "")


def _check_filter(pipeline: CurationPipeline | None) -> None:
    if pipeline is not None and pipeline.needs_tokens() and not pipeline.tokenizer_model:
        raise ValidationError(
            "the filter limits length in tokens: set filter.tokenizer_model (an alias or model whose tokenizer "
            "counts them)",
            param="filter.tokenizer_model",
        )
    if pipeline is not None and pipeline.needs_judge():
        i = pipeline.judge_steps()[0]
        raise ValidationError(
            f"filter.steps[{i}].judge_model: the filter after generation cannot ask a judge; curate the new version "
            "with the judge instead",
            param=f"filter.steps[{i}].judge_model",
        )


def prepare_augment(config: AugmentConfig, settings: Settings, db: Database) -> AugmentConfig:
    """Submit-time checks and pins: the source version exists (its number and content hash are written into the
    config), synthesis has supervised rows to seed from, the model resolves, ``max_tokens`` is within the
    studio's limit, and the target dataset (if it exists) holds the same kind of rows and may be changed."""
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.models.registry import ModelRegistry
    from studio.users.ownership import check_owner

    store = _store(settings, db)
    version = _source_version(store, config)
    if config.version is not None and config.dataset_hash and config.dataset_hash != version.content_hash:
        raise ValidationError(
            f"dataset {config.dataset!r} v{version.number} does not have the content hash given", param="dataset_hash"
        )
    if config.mode == "synthesize":
        if version.kind != "supervised":
            raise ValidationError(
                f"synthesize writes supervised examples; dataset {config.dataset!r} holds {version.kind} examples "
                "(paraphrase works on every kind)",
                param="mode",
            )
        if not seed_pool(store.load_examples(version)):
            raise ValidationError(f"dataset {config.dataset!r} has no user message to seed from", param="dataset")
    elif not plan(config, store.load_examples(version)):
        raise ValidationError(
            f"dataset {config.dataset!r} v{version.number} has no non-empty {config.fields} to paraphrase",
            param="fields",
        )
    if config.max_tokens > settings.max_tokens_limit:
        raise ValidationError(
            f"max_tokens is {config.max_tokens}; this studio allows at most {settings.max_tokens_limit} "
            "(STUDIO_MAX_TOKENS_LIMIT)",
            param="max_tokens",
        )
    AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings)).resolve(config.model)
    _check_filter(config.filter)
    try:
        target = store.get(config.target)
    except NotFoundError:
        pass
    else:
        if target.kind != version.kind:
            raise ValidationError(
                f"dataset {config.target!r} holds {target.kind} examples and the new rows are {version.kind}; "
                "choose another name in 'into'",
                param="into",
            )
        check_owner(f"dataset {config.target!r}", target.owner_id, db)
    update: dict[str, Any] = {"version": version.number, "dataset_hash": version.content_hash}
    update["into"] = config.target
    if not config.name:
        update["name"] = f"augment {config.dataset} v{version.number} · {config.mode} · {config.model}"[:200]
    return config.model_copy(update=update)


def submit_augment(db: Database, settings: Settings, config: AugmentConfig | Mapping[str, Any]) -> Job:
    """Queue an ``augment`` job (validated, its source version pinned); what the UI, CLI and REST call."""
    from studio.jobs import queue

    data = config.model_dump(mode="json") if isinstance(config, AugmentConfig) else dict(config)
    return queue.submit(db, KIND, data, settings=settings)


# --- the checkpoint ----------------------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> dict[str, dict[str, Any]]:
    """The generated rows stored so far, by key (a line cut short by a crash is ignored: that row is redone)."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            done[record["key"]] = record
    return done


def _append(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line, written whole with one ``write`` on an O_APPEND file and synced."""
    data = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- running -----------------------------------------------------------------------------------------------------


class _Writer:
    """Sends the run's requests to one model and makes one generated row per :class:`Unit`."""

    def __init__(
        self, config: AugmentConfig, engines: EngineManager, examples: Sequence[Mapping[str, Any]], engine_name: str
    ) -> None:
        self.config = config
        self.engines = engines
        self.examples = examples
        self.model_id = engines.resolve(config.model).entry.id
        self.engine_name = engine_name
        self.pool = seed_pool(examples) if config.mode == "synthesize" else []
        self.requests = 0

    def _ask(self, prompt: str, seed: int, system: str | None = None) -> tuple[str, dict[str, Any]]:
        from studio.inference.base import ChatMessage

        c = self.config
        params = self.engines.params_for(
            c.model, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, seed=seed
        )
        messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]
        self.requests += 1
        reply = self.engines.start_chat(c.model, messages, params, endpoint="curation.augment").wait().text
        used = {k: getattr(params, k) for k in ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty")}
        if params.stop:
            used["stop"] = list(params.stop)
        return reply, used

    def make(self, unit: Unit) -> dict[str, Any]:
        """The checkpoint record of ``unit``: its new row (None when a reply came back empty) and provenance."""
        prompts: list[str] = []
        seeds: list[int] = []
        params: dict[str, Any] = {}
        row: dict[str, Any] | None
        where: dict[str, Any]
        if self.config.mode == "paraphrase":
            source = self.examples[unit.index]
            row = copy.deepcopy(dict(source))
            where = {"source_row": unit.index, "variant": unit.variant}
            for n, path in enumerate(text_targets(source, self.config.fields)):
                prompts.append(PARAPHRASE_PROMPT.format(text=str(_get(source, path))))
                seeds.append(self.config.seed + unit.ordinal + n)
                reply, params = self._ask(prompts[-1], seeds[-1])
                text = clean_reply(reply)
                if not text:
                    row = None
                    break
                _set(row, path, text)
        else:
            seed_rows = _seed_rows(self.config, self.pool, unit.index)
            seed_msgs = [self.examples[i]["messages"] for i in seed_rows]
            first = seed_msgs[0]
            system = str(first[0]["content"]) if first and first[0]["role"] == "system" else None
            where = {"seed_rows": seed_rows}
            prompts.append(instruction_prompt([str(m[_last_user(m) or 0]["content"]) for m in seed_msgs]))
            seeds.append(self.config.seed + unit.ordinal)
            reply, params = self._ask(prompts[-1], seeds[-1])
            instruction = clean_instruction(reply)
            row = None
            if instruction:
                prompts.append(instruction)
                seeds.append(self.config.seed + unit.ordinal + 1)
                reply, params = self._ask(instruction, seeds[-1], system)
                answer = clean_reply(reply)
                if answer:
                    messages = [{"role": "system", "content": system}] if system else []
                    messages += [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}]
                    row = {"messages": messages}
        provenance = {
            "model": self.config.model,
            "model_id": self.model_id,
            "engine": self.engine_name,
            "prompt": prompts,
            "seed": seeds,
            "params": params,
            **where,
        }
        return {"key": unit.key, "row": row, "provenance": provenance}


def _job_principal(db: Database, job: Job) -> Any:
    """Who the job acts as when it writes the dataset: its owner (None when users are not in use)."""
    if job.owner_id is None:
        return None
    from studio.auth import Principal
    from studio.users.tables import User

    with db.session() as session:
        user = session.get(User, job.owner_id)
        if user is None:
            return None
        return Principal(name=user.name, via="job", role=user.role, user_id=user.id)


@contextmanager
def _acting_for(db: Database, job: Job) -> Iterator[None]:
    from studio.users.acting import acting_as

    with acting_as(_job_principal(db, job)):
        yield


Pair = tuple[dict[str, Any], dict[str, Any]]  # a generated row and its provenance


def apply_filter(
    pipeline: CurationPipeline | None,
    source: Sequence[Mapping[str, Any]],
    generated: Sequence[Pair],
    count_tokens: TokenCounter | None = None,
) -> tuple[list[Pair], list[StepReport]]:
    """The generated (row, provenance) pairs that survive ``pipeline`` (as its steps left them: a cleaning step
    may have changed a row), in their order, and each step's report.

    The steps run on the source rows followed by the generated ones, so that a near-duplicate step keeps a source
    row over a generated row close to it; each row is followed through the steps by where it came from, so a
    changed row is still known as the generated row it was. The reports count the source rows too."""
    if pipeline is None or not generated:
        return list(generated), []
    current: list[dict[str, Any]] = [*(dict(r) for r in source), *(dict(r) for r, _p in generated)]
    origin = list(range(len(current)))
    context = StepContext(count_tokens=count_tokens)
    reports: list[StepReport] = []
    for index, step in enumerate(pipeline.steps):
        if not step.enabled:
            reports.append(StepReport(step.step, step.params(), len(current), len(current), skipped=True))
            continue
        context.index = index
        outcome = run_step(current, step, context)
        origin = [origin[i] for i in outcome.kept]
        current = outcome.rows
        reports.append(outcome.report)
    first = len(source)
    survivors = sorted((o, row) for o, row in zip(origin, current, strict=True) if o >= first)
    return [(row, generated[o - first][1]) for o, row in survivors], reports


def _drop_duplicates(pairs: Sequence[Pair], source_keys: set[str], dropped: dict[str, int]) -> list[Pair]:
    """``pairs`` without rows equal to a source row or to an earlier generated row (counted in ``dropped``)."""
    from studio.datasets.validate import canonical_json

    seen: set[str] = set()
    out = []
    for row, prov in pairs:
        key = canonical_json(row)
        if key in source_keys:
            dropped["duplicate_of_source"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            out.append((row, prov))
    return out


def _generate(
    config: AugmentConfig,
    runtime: JobRuntime,
    examples: Sequence[Mapping[str, Any]],
    units: Sequence[Unit],
    checkpoint: Path,
    done: dict[str, dict[str, Any]],
) -> int | None:
    """Generate the units not in ``done`` yet, appending each record to ``checkpoint`` as soon as it exists;
    returns how many requests were sent, or None when the job was asked to stop first."""
    from studio.context import AppContext  # heavy (engines); only in the job's process

    missing = [u for u in units if u.key not in done]
    step = len(units) - len(missing)
    runtime.progress(step, len(units), message=f"{step}/{len(units)} rows generated")
    if not missing:
        return 0
    ctx = AppContext.create(runtime.settings)
    try:
        engine = ctx.engines.load(config.model)
        writer = _Writer(config, ctx.engines, examples, engine.backend)
        for unit in missing:
            if runtime.should_stop():
                runtime.log(f"stopped after {step} of {len(units)} rows; resuming continues from {checkpoint}")
                return None
            record = writer.make(unit)
            _append(checkpoint, record)
            done[unit.key] = record
            step += 1
            runtime.progress(step, len(units), message=f"{step}/{len(units)} rows generated")
        return writer.requests
    finally:
        ctx.close()


def _valid_rows(
    units: Sequence[Unit], done: Mapping[str, Mapping[str, Any]], kind: Any, dropped: dict[str, int]
) -> list[Pair]:
    """The generated rows in plan order, without those that came back empty or are not canonical."""
    from studio.datasets.formats import RowProblem, check_canonical

    pairs: list[Pair] = []
    for unit in units:
        record = done[unit.key]
        row = record.get("row")
        if not row:
            dropped["empty"] += 1
            continue
        try:
            check_canonical(row, kind)
        except RowProblem:
            dropped["invalid"] += 1
            continue
        pairs.append((row, record["provenance"]))
    return pairs


def run_augment(config: AugmentConfig, runtime: JobRuntime) -> dict[str, Any]:
    """The job body: generate every planned row (checkpointed one by one), filter, register the new version."""
    from studio.datasets.validate import canonical_json

    store = _store(runtime.settings, runtime.db)
    version = _source_version(store, config)
    if config.dataset_hash and version.content_hash != config.dataset_hash:
        raise ValidationError(
            f"dataset {config.dataset!r} v{version.number} is not the content this job was submitted with",
            param="dataset",
        )
    examples = store.load_examples(version)
    units = plan(config, examples)
    checkpoint = runtime.run_dir / CHECKPOINT_FILE
    done = read_checkpoint(checkpoint)
    checkpoint.touch()
    if runtime.resume_from is None:
        runtime.checkpoint_saved(checkpoint)  # from now on a failed or cancelled run can resume
    total = len(units)
    resumed = sum(1 for u in units if u.key in done)
    runtime.log(
        f"augmenting {config.dataset} v{version.number} ({len(examples)} rows): {config.mode}, {total} new rows "
        f"with {config.model}" + (f"; {resumed} already generated (resuming)" if resumed else "")
    )
    requests = _generate(config, runtime, examples, units, checkpoint, done)
    if requests is None:
        return {"stopped": True, "generated": len(done), "total": total, "checkpoint": str(checkpoint)}

    dropped = {"empty": 0, "invalid": 0, "duplicate_of_source": 0, "duplicate": 0, "filter": 0}
    source_keys = {canonical_json(e) for e in examples}
    generated = _drop_duplicates(_valid_rows(units, done, version.kind, dropped), source_keys, dropped)
    filtered, reports = apply_filter(
        config.filter, examples, generated, _filter_tokens(runtime.settings, config.filter)
    )
    dropped["filter"] = len(generated) - len(filtered)
    kept = _drop_duplicates(filtered, source_keys, dropped)  # a cleaning step may have made two rows alike
    if not kept:
        raise ValidationError(
            f"no generated row is left to store: {total} generated, dropped "
            + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in dropped.items() if n),
            param="filter" if dropped["filter"] else "model",
        )
    rows = [*examples, *(r for r, _p in kept)] if config.include_source else [r for r, _p in kept]
    offset = len(examples) if config.include_source else 0
    lineage = {
        "source": {
            "dataset": config.dataset,
            "version": version.number,
            "version_id": version.id,
            "content_hash": version.content_hash,
        },
        "job": runtime.job.id,
        "mode": config.mode,
        "model": config.model,
        "model_id": kept[0][1]["model_id"],
        "engine": kept[0][1]["engine"],
        "params": config.model_dump(mode="json", include=_RUN_PARAMS[config.mode]),
        "prompts": {"paraphrase": PARAPHRASE_PROMPT, "instruction": INSTRUCTION_PROMPT},
        "filter": config.filter.model_dump(mode="json") if config.filter is not None else None,
        "filter_steps": [r.counts() for r in reports],
        "rows": {"source": len(examples), "generated": total, "kept": len(kept), "dropped": dropped},
        "provenance": [{"row": offset + i, **prov} for i, (_r, prov) in enumerate(kept)],
    }
    target = config.target
    with _acting_for(runtime.db, runtime.job):
        try:
            store.get(target)
            description = ""
        except NotFoundError:
            description = f"{config.mode} of {config.dataset} v{version.number} by {config.model}"
        created = store.create_version(
            target,
            rows,
            source="augment",
            parent_version_id=version.id if target == config.dataset else None,
            lineage=lineage,
            kind=version.kind,
            description=description,
        )
    new = created.version
    runtime.log(
        f"{'stored' if created.created else 'same content as'} {target} v{new.number}: {len(kept)} of {total} "
        f"generated rows kept (dropped: {dropped})"
    )
    return {
        "dataset": target,
        "version": new.number,
        "version_id": new.id,
        "created": created.created,
        "source": {"dataset": config.dataset, "version": version.number},
        "rows": new.num_examples,
        "generated": total,
        "kept": len(kept),
        "dropped": dropped,
        "filter_reports": [r.to_dict() for r in reports],
        "requests": requests,
        "artifact_path": str(store.path_of(new)),
    }


register_kind(
    JobKind(
        name=KIND,
        config_model=AugmentConfig,
        run=run_augment,
        description="Augment a dataset: paraphrase its rows or synthesise new ones (self-instruct) with any model; "
        "every generated row's model, prompt and parameters are kept in the new version's lineage.",
        prepare=prepare_augment,
    )
)
