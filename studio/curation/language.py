"""Offline language identification for dataset rows and model pickers.

``py3langid`` (a maintained fork of langid.py) ships its model inside the wheel, so it works with no network;
its model is an npz archive read with ``allow_pickle=False``; it answers 140 language codes, ISO 639-1 where
there is one (``en``, ``hi``, ``fr`` ...). Texts too short to say anything about (fewer than ``MIN_LETTERS``
letters) are ``und`` (undetermined) rather than a guess. English with a few words of another script can come
out as a neighbour of that script (``sa`` for Devanagari) at a probability near 0.6.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

UNDETERMINED = "und"
MIN_LETTERS = 3

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)  # npz in LZMA, loaded without pickle


def identify(text: str) -> tuple[str, float]:
    """The language of ``text`` as (ISO 639-1 code, probability 0..1); ``("und", 0.0)`` when it has too few
    letters to tell."""
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return UNDETERMINED, 0.0
    with _lock:  # the identifier keeps scratch arrays: one caller at a time
        code, prob = _identifier().classify(text)
    return str(code), float(prob)


def language_mix(texts: Iterable[str]) -> dict[str, int]:
    """How many of ``texts`` are in each language, most common first (``und`` for those too short to tell)."""
    counts = Counter(identify(text)[0] for text in texts)
    return dict(counts.most_common())
