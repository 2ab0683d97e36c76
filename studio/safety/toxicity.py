"""Toxicity scorers: Detoxify from a local checkpoint, or the bundled offline alt-profanity-check classifier.

Detoxify's own loader cannot run offline: even with a local checkpoint it fetches the base model's config (and,
without ``huggingface_config_path``, its tokenizer) from the Hugging Face hub. :class:`DetoxifyScorer` reads the
same checkpoint format itself and builds the model with transformers from local files only.

Accepted layout for ``toxicity.detoxify_checkpoint``:

- a ``.ckpt`` file in Detoxify's format — a dict with ``config`` (``config["arch"]["args"]`` holds
  ``model_name`` such as ``BertForSequenceClassification``, ``tokenizer_name`` such as ``BertTokenizer`` and
  ``num_classes``; ``config["dataset"]["args"]["classes"]`` the label names) and ``state_dict`` — with the base
  model's Hugging Face ``config.json`` and tokenizer files either in a folder named like the checkpoint without
  ``.ckpt`` (``toxic_original-c1212f89.ckpt`` + ``toxic_original-c1212f89/``) or in the checkpoint's own folder;
- or a ``.safetensors`` file holding the state_dict, with that ``config`` mapping as JSON either in the file's
  metadata (key ``detoxify_config``) or in a ``.json`` file of the same name next to it, and the Hugging Face
  files placed as for a ``.ckpt``;
- or a folder holding exactly one ``*.ckpt`` or ``*.safetensors`` plus those files.

**No pickle ever**: a ``.ckpt`` is read with ``torch.load(weights_only=True)``, which accepts tensors and plain
data (dicts, lists, strings, numbers) only and never runs code. A checkpoint that also pickles Python objects
(PyTorch Lightning's hyper-parameters, for instance) is refused with a message saying how to convert it once,
on a machine where the file is trusted::

    import json, torch
    from safetensors.torch import save_file
    c = torch.load("toxic.ckpt", weights_only=False)   # only for a file you trust
    torch.save({"config": c["config"], "state_dict": c["state_dict"]}, "toxic-plain.ckpt")
    # or: save_file(c["state_dict"], "toxic.safetensors", metadata={"detoxify_config": json.dumps(c["config"])})

To prepare one on a connected machine: download the release checkpoint, then
``AutoConfig.from_pretrained("bert-base-uncased").save_pretrained(DIR)`` and the same with ``AutoTokenizer``
(the base model named in the checkpoint's ``model_type``), and copy both to the offline machine. Paths from a
policy are confined to the model folders (:class:`studio.safety.store.PolicyStore`) before they reach this module.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from studio.errors import BackendUnavailableError, ValidationError
from studio.safety.policy import SafetyPolicyConfig, ToxicityConfig

log = logging.getLogger(__name__)

CHECKPOINT_PARAM = "toxicity.detoxify_checkpoint"
# Detoxify renames the Jigsaw labels the same way (detoxify.detoxify.load_checkpoint).
CLASS_RENAMES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}


@runtime_checkable
class ToxicityScorer(Protocol):
    """Anything that scores a text's toxicity between 0 (harmless) and 1 (toxic)."""

    name: str

    def score(self, text: str) -> float:
        """Toxicity of ``text``, 0-1."""
        ...


class ProfanityCheckScorer:
    """alt-profanity-check: TF-IDF features and a calibrated linear SVM, bundled with its package (offline).

    The package's model is scikit-learn's ``CalibratedClassifierCV`` over five ``LinearSVC``s with sigmoid
    calibration; its ``predict_proba`` spends ~3 ms in input validation and per-estimator loops. The same
    probability — the mean over the five of ``1 / (1 + exp(a * (w·x + c) + b))`` — is computed here with one
    sparse product (~1 ms including the TF-IDF transform). Any other model shape falls back to ``predict_proba``.
    """

    name = "profanity-check"

    def __init__(self) -> None:
        try:
            import profanity_check.profanity_check as pc
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the offline toxicity scorer needs alt-profanity-check: pip install alt-profanity-check==1.9.1 ({exc})"
            ) from None
        self._vectorizer = pc.vectorizer
        self._model = pc.model
        self.version = metadata.version("alt-profanity-check")
        self._linear = self._flatten(pc.model)

    @staticmethod
    def _flatten(model: Any) -> tuple[Any, Any, Any, Any] | None:
        """``(W, c, a, b)`` of the calibrated linear SVMs, or None if the model is not of that shape."""
        import numpy as np

        try:
            parts = model.calibrated_classifiers_
            if not parts or any(p.method != "sigmoid" or len(p.calibrators) != 1 for p in parts):
                return None
            weights = np.stack([np.asarray(p.estimator.coef_, dtype=np.float64).ravel() for p in parts], axis=1)
            bias = np.array([float(np.ravel(p.estimator.intercept_)[0]) for p in parts])
            a = np.array([float(p.calibrators[0].a_) for p in parts])
            b = np.array([float(p.calibrators[0].b_) for p in parts])
        except (AttributeError, TypeError, ValueError):
            return None
        return weights, bias, a, b

    def score(self, text: str) -> float:
        """Probability that ``text`` is offensive."""
        if not text.strip():
            return 0.0
        features = self._vectorizer.transform([text])
        if self._linear is None:
            return float(self._model.predict_proba(features)[0][1])
        import numpy as np

        weights, bias, a, b = self._linear
        decision = np.asarray(features @ weights).ravel() + bias
        return float(np.mean(1.0 / (1.0 + np.exp(a * decision + b))))

    def score_reference(self, text: str) -> float:
        """The package's own ``predict_proba`` (slower; the tests compare :meth:`score` with it)."""
        return float(self._model.predict_proba(self._vectorizer.transform([text]))[0][1])


@dataclass(frozen=True)
class DetoxifyFiles:
    """Where a Detoxify checkpoint and its Hugging Face config/tokenizer files are."""

    checkpoint: Path
    hf_dir: Path


CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors")
CONVERT_HINT = (
    "convert it once, on a machine where you trust the file: c = torch.load(PATH, weights_only=False); "
    'torch.save({"config": c["config"], "state_dict": c["state_dict"]}, NEW.ckpt) with config holding plain data '
    'only, or safetensors.torch.save_file(c["state_dict"], NEW.safetensors, metadata={"detoxify_config": '
    'json.dumps(c["config"])})'
)


def resolve_detoxify_layout(path: str | Path) -> DetoxifyFiles:
    """Find the checkpoint file and its config/tokenizer folder for ``path`` (see the module docstring).
    Messages name files by their names only (the path came from the user, who knows where it is)."""
    target = Path(path)
    try:
        is_dir, is_file = target.is_dir(), target.is_file()
    except OSError:
        is_dir = is_file = False
    if is_dir:
        ckpts = sorted(p for p in target.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
        if len(ckpts) != 1:
            found = ", ".join(p.name for p in ckpts) or "none"
            raise ValidationError(
                f"Detoxify checkpoint folder {target.name} must hold exactly one *.ckpt or *.safetensors file "
                f"(found: {found})",
                param=CHECKPOINT_PARAM,
            )
        checkpoint, candidates = ckpts[0], [target]
    elif is_file:
        if target.suffix not in CHECKPOINT_SUFFIXES:
            raise ValidationError(
                f"Detoxify checkpoint {target.name}: expected a .ckpt or .safetensors file", param=CHECKPOINT_PARAM
            )
        checkpoint, candidates = target, [target.with_suffix(""), target.parent]
    else:
        raise ValidationError(f"Detoxify checkpoint {target.name} does not exist", param=CHECKPOINT_PARAM)
    for folder in candidates:
        if (folder / "config.json").is_file():
            return DetoxifyFiles(checkpoint, folder)
    looked = " or ".join(f"{c.name}/" for c in candidates)
    raise ValidationError(
        f"Detoxify checkpoint {checkpoint.name}: no Hugging Face config.json and tokenizer files in {looked}; "
        "save the base model's config and tokenizer there (AutoConfig/AutoTokenizer .save_pretrained) — "
        "they cannot be downloaded offline",
        param=CHECKPOINT_PARAM,
    )


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:  # type: ignore[no-untyped-call]
        metadata = fh.metadata() or {}
        state_dict = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    raw = metadata.get("detoxify_config")
    sidecar = path.with_suffix(".json")
    if raw is None and sidecar.is_file():
        raw = sidecar.read_text(encoding="utf-8")
    if raw is None:
        raise ValidationError(
            f"{path.name}: the Detoxify config is missing: put it as JSON in the file's metadata (key "
            f"detoxify_config) or in {sidecar.name} next to it",
            param=CHECKPOINT_PARAM,
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{path.name}: the Detoxify config is not valid JSON ({exc})", param=CHECKPOINT_PARAM
        ) from None
    return {"config": config, "state_dict": state_dict}


def load_checkpoint(path: Path) -> Any:
    """A Detoxify checkpoint's content without ever unpickling Python objects: safetensors, or ``torch.load``
    with ``weights_only=True`` (tensors and plain data only). A checkpoint that needs more is refused with a
    :class:`ValidationError` that says how to convert it."""
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refused a Python object before creating it: nothing of the file ran. Never retry without it.
        log.warning("Detoxify checkpoint %s refused: it pickles Python objects besides tensors", path.name)
        raise ValidationError(
            f"Detoxify checkpoint {path.name} holds pickled Python objects besides tensors and plain data; the "
            f"studio never unpickles those (loading them can run code). To use it, {CONVERT_HINT}",
            param=CHECKPOINT_PARAM,
        ) from None


class DetoxifyScorer:
    """A Detoxify model built from a local checkpoint and local config/tokenizer files (never downloads)."""

    name = "detoxify"

    def __init__(self, checkpoint_path: str | Path) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:  # pragma: no cover - both are core requirements
            raise BackendUnavailableError(f"Detoxify scoring needs torch and transformers ({exc})") from None
        files = resolve_detoxify_layout(checkpoint_path)
        self.files = files
        try:
            loaded = load_checkpoint(files.checkpoint)
        except ValidationError:
            raise
        except Exception as exc:
            raise ValidationError(
                f"Detoxify checkpoint {files.checkpoint.name}: cannot read it ({exc})", param=CHECKPOINT_PARAM
            ) from None
        try:
            arch = loaded["config"]["arch"]["args"]
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
            state_dict = dict(loaded["state_dict"])
            model_name, tokenizer_name = str(arch["model_name"]), str(arch["tokenizer_name"])
            num_classes = int(arch["num_classes"])
        except (KeyError, TypeError) as exc:
            raise ValidationError(
                f"{files.checkpoint.name} is not in Detoxify's format: it needs config.arch.args (model_name, "
                f"tokenizer_name, num_classes), config.dataset.args.classes and state_dict (missing {exc})",
                param=CHECKPOINT_PARAM,
            ) from None
        model_cls = getattr(transformers, model_name, None)
        tokenizer_cls = getattr(transformers, tokenizer_name, None) or transformers.AutoTokenizer
        if model_cls is None:
            raise ValidationError(
                f"{files.checkpoint.name}: model class {model_name!r} is not in transformers", param=CHECKPOINT_PARAM
            )
        config = model_cls.config_class.from_pretrained(files.hf_dir, num_labels=num_classes, local_files_only=True)
        model = model_cls(config)
        if state_dict and all(k.startswith("model.") for k in state_dict):
            state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
        missing, _unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ValidationError(
                f"{files.checkpoint.name}: the state_dict does not fit {model_name} built from "
                f"{files.hf_dir.name}/config.json "
                f"(missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})",
                param=CHECKPOINT_PARAM,
            )
        model.eval()
        self._model = model
        self._tokenizer = tokenizer_cls.from_pretrained(files.hf_dir, local_files_only=True)
        positions = int(getattr(config, "max_position_embeddings", 512) or 512)
        self._max_length = min(int(getattr(self._tokenizer, "model_max_length", positions) or positions), positions)
        self.class_names = [CLASS_RENAMES.get(c, c) for c in classes]
        self._torch = torch
        self._lock = threading.Lock()

    def scores(self, text: str) -> dict[str, float]:
        """Every class's probability (sigmoid of the logits), by Detoxify's class names."""
        with self._lock, self._torch.inference_mode():
            inputs = self._tokenizer(text, return_tensors="pt", truncation=True, max_length=self._max_length)
            logits = self._model(**inputs).logits[0]
            probs = self._torch.sigmoid(logits).tolist()
        return {name: float(p) for name, p in zip(self.class_names, probs, strict=False)}

    def score(self, text: str) -> float:
        """The ``toxicity`` class's probability (the highest class when the checkpoint has no such class)."""
        if not text.strip():
            return 0.0
        all_scores = self.scores(text)
        return all_scores.get("toxicity", max(all_scores.values(), default=0.0))


@lru_cache(maxsize=1)
def _profanity_scorer() -> ProfanityCheckScorer:
    return ProfanityCheckScorer()


@lru_cache(maxsize=2)
def _detoxify_scorer(path: str, mtime_ns: int) -> DetoxifyScorer:
    return DetoxifyScorer(path)


_LOCK = threading.Lock()


def load_detoxify_scorer(path: str | Path) -> DetoxifyScorer:
    """The Detoxify scorer for ``path``, built once per process (again if the checkpoint file changes)."""
    files = resolve_detoxify_layout(path)
    with _LOCK:
        return _detoxify_scorer(str(Path(path).resolve()), files.checkpoint.stat().st_mtime_ns)


def profanity_check_scorer() -> ProfanityCheckScorer:
    """The process-wide alt-profanity-check scorer."""
    with _LOCK:
        return _profanity_scorer()


def active_scorer(policy: SafetyPolicyConfig | ToxicityConfig) -> tuple[ToxicityScorer, str]:
    """The scorer the policy selects and a line naming it for the UI, e.g. ``detoxify (/models/tox.ckpt)``.

    ``auto`` uses Detoxify when ``detoxify_checkpoint`` points at a usable checkpoint, else alt-profanity-check
    (the name then says why Detoxify was not used). ``detoxify`` raises a :class:`ValidationError` naming
    ``toxicity.detoxify_checkpoint`` when the checkpoint cannot be used.
    """
    cfg = policy.toxicity if isinstance(policy, SafetyPolicyConfig) else policy
    if cfg.scorer in ("auto", "detoxify") and cfg.detoxify_checkpoint:
        try:
            detox = load_detoxify_scorer(cfg.detoxify_checkpoint)
            return detox, f"detoxify ({detox.files.checkpoint.name})"
        except ValidationError as exc:
            if cfg.scorer == "detoxify":
                raise
            log.warning("Detoxify checkpoint not used, falling back to profanity-check: %s", exc)
            fallback = profanity_check_scorer()
            return fallback, f"profanity-check (alt-profanity-check {fallback.version}; Detoxify not used: {exc})"
    scorer = profanity_check_scorer()
    return scorer, f"profanity-check (alt-profanity-check {scorer.version}, offline)"
