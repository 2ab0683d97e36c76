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
- or a folder holding exactly one ``*.ckpt`` plus those files.

To prepare one on a connected machine: download the release checkpoint, then
``AutoConfig.from_pretrained("bert-base-uncased").save_pretrained(DIR)`` and the same with ``AutoTokenizer``
(the base model named in the checkpoint's ``model_type``), and copy both to the offline machine.
"""

from __future__ import annotations

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


def resolve_detoxify_layout(path: str | Path) -> DetoxifyFiles:
    """Find the ``.ckpt`` file and its config/tokenizer folder for ``path`` (see the module docstring)."""
    target = Path(path).expanduser()
    if target.is_dir():
        ckpts = sorted(target.glob("*.ckpt"))
        if len(ckpts) != 1:
            found = ", ".join(p.name for p in ckpts) or "none"
            raise ValidationError(
                f"Detoxify checkpoint folder {target} must hold exactly one *.ckpt file (found: {found})",
                param=CHECKPOINT_PARAM,
            )
        checkpoint, candidates = ckpts[0], [target]
    elif target.is_file():
        checkpoint, candidates = target, [target.with_suffix(""), target.parent]
    else:
        raise ValidationError(f"Detoxify checkpoint {target} does not exist", param=CHECKPOINT_PARAM)
    for folder in candidates:
        if (folder / "config.json").is_file():
            return DetoxifyFiles(checkpoint, folder)
    looked = " or ".join(str(c) for c in candidates)
    raise ValidationError(
        f"Detoxify checkpoint {checkpoint}: no Hugging Face config.json and tokenizer files in {looked}; "
        "save the base model's config and tokenizer there (AutoConfig/AutoTokenizer .save_pretrained) — "
        "they cannot be downloaded offline",
        param=CHECKPOINT_PARAM,
    )


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Lightning checkpoints pickle their hyper-parameters; the file is one the user pointed us at.
        log.info("%s holds more than tensors; loading it with full unpickling", path)
        return torch.load(path, map_location="cpu", weights_only=False)


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
            loaded = _torch_load(files.checkpoint)
        except Exception as exc:
            raise ValidationError(
                f"Detoxify checkpoint {files.checkpoint}: cannot read it ({exc})", param=CHECKPOINT_PARAM
            ) from None
        try:
            arch = loaded["config"]["arch"]["args"]
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
            state_dict = dict(loaded["state_dict"])
            model_name, tokenizer_name = str(arch["model_name"]), str(arch["tokenizer_name"])
            num_classes = int(arch["num_classes"])
        except (KeyError, TypeError) as exc:
            raise ValidationError(
                f"{files.checkpoint} is not in Detoxify's format: it needs config.arch.args (model_name, "
                f"tokenizer_name, num_classes), config.dataset.args.classes and state_dict (missing {exc})",
                param=CHECKPOINT_PARAM,
            ) from None
        model_cls = getattr(transformers, model_name, None)
        tokenizer_cls = getattr(transformers, tokenizer_name, None) or transformers.AutoTokenizer
        if model_cls is None:
            raise ValidationError(
                f"{files.checkpoint}: model class {model_name!r} is not in transformers", param=CHECKPOINT_PARAM
            )
        config = model_cls.config_class.from_pretrained(files.hf_dir, num_labels=num_classes, local_files_only=True)
        model = model_cls(config)
        if state_dict and all(k.startswith("model.") for k in state_dict):
            state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
        missing, _unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ValidationError(
                f"{files.checkpoint}: the state_dict does not fit {model_name} built from "
                f"{files.hf_dir / 'config.json'} "
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
        return _detoxify_scorer(str(Path(path).expanduser().resolve()), files.checkpoint.stat().st_mtime_ns)


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
            return detox, f"detoxify ({detox.files.checkpoint})"
        except ValidationError as exc:
            if cfg.scorer == "detoxify":
                raise
            log.warning("Detoxify checkpoint not used, falling back to profanity-check: %s", exc)
            fallback = profanity_check_scorer()
            return fallback, f"profanity-check (alt-profanity-check {fallback.version}; Detoxify not used: {exc})"
    scorer = profanity_check_scorer()
    return scorer, f"profanity-check (alt-profanity-check {scorer.version}, offline)"
