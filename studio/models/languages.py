"""Which languages each model declares, and the model pickers' language filter (Playground, Compare, the Fine-Tune
wizard).

A model's languages are what its own files say (:mod:`studio.models.details`: the model card's ``language``, a
GGUF's ``general.languages``, a ``config.json`` ``language`` key), normalised to ISO 639-1 codes the way the dataset
language identifier (:mod:`studio.curation.language`) answers them, so a dataset's ``hi`` and a model's ``hi`` are
the same thing. Nothing is guessed: a model whose files name no language declares none, and the filter lists it
only under :data:`ANY` (a model we know nothing about is not claimed to speak Hindi, nor hidden from "any").

A picker offers names, not models: user aliases, model aliases (registry ids), ``default``, and in Compare
``"<model> + <adapter>"``. :func:`model_languages` maps every such name to its model's languages once per call (the
registry and alias files are read once; a :class:`~studio.models.details.DetailsCache` keeps the header reads), and
an adapter contender speaks its base model's languages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from studio.errors import ValidationError
from studio.models.details import DetailsCache, model_details
from studio.models.registry import ModelEntry

if TYPE_CHECKING:
    from studio.aliases.resolve import AliasResolver

#: the filter value that keeps every model, including those that declare no language
ANY = "any"
#: an adapter contender in Compare: ``"<model> + <adapter>"`` (studio.compare.stream.ADAPTER_SEPARATOR)
_ADAPTER_SEPARATOR = "+"

#: language code -> English name: every code the dataset identifier (py3langid 0.4) answers (ISO 639-1 where there
#: is one, else ISO 639-3: ``yue``, ``arz``), ``nb`` (model cards use it), and ``und`` for text too short to tell
LANGUAGE_NAMES: dict[str, str] = {
    "ace": "Acehnese", "af": "Afrikaans", "am": "Amharic", "an": "Aragonese", "ar": "Arabic",
    "ary": "Moroccan Arabic", "arz": "Egyptian Arabic", "as": "Assamese", "az": "Azerbaijani", "ba": "Bashkir",
    "bcl": "Central Bikol", "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "br": "Breton", "bs": "Bosnian",
    "ca": "Catalan", "crh": "Crimean Tatar", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German",
    "dz": "Dzongkha", "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish", "et": "Estonian",
    "eu": "Basque", "ext": "Extremaduran", "fa": "Persian", "fi": "Finnish", "fo": "Faroese", "fr": "French",
    "fuv": "Nigerian Fulfulde", "fy": "Western Frisian", "ga": "Irish", "gcf": "Guadeloupean Creole",
    "gcr": "Guianese Creole", "gd": "Scottish Gaelic", "gl": "Galician", "gom": "Goan Konkani",
    "grc": "Ancient Greek", "gu": "Gujarati", "gug": "Paraguayan Guaraní", "guw": "Gun", "ha": "Hausa",
    "hbo": "Ancient Hebrew", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole",
    "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian", "ig": "Igbo", "is": "Icelandic", "it": "Italian",
    "ja": "Japanese", "jv": "Javanese", "ka": "Georgian", "kab": "Kabyle", "kik": "Kikuyu", "kk": "Kazakh",
    "km": "Khmer", "kn": "Kannada", "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz", "la": "Latin",
    "lb": "Luxembourgish", "lg": "Ganda", "lij": "Ligurian", "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian",
    "ltg": "Latgalian", "lv": "Latvian", "mg": "Malagasy", "mk": "Macedonian", "ml": "Malayalam", "mn": "Mongolian",
    "mr": "Marathi", "ms": "Malay", "mt": "Maltese", "my": "Burmese", "nb": "Norwegian Bokmål", "ne": "Nepali",
    "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian", "nso": "Northern Sotho", "oc": "Occitan",
    "om": "Oromo", "or": "Odia", "pa": "Punjabi", "pcm": "Nigerian Pidgin", "pl": "Polish", "ps": "Pashto",
    "pt": "Portuguese", "qu": "Quechua", "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "sa": "Sanskrit",
    "sdh": "Southern Kurdish", "se": "Northern Sami", "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian",
    "sn": "Shona", "so": "Somali", "sq": "Albanian", "sr": "Serbian", "st": "Southern Sotho", "sv": "Swedish",
    "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tl": "Tagalog",
    "tr": "Turkish", "tt": "Tatar", "ug": "Uyghur", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek",
    "uzs": "Southern Uzbek", "vec": "Venetian", "vi": "Vietnamese", "vo": "Volapük", "wa": "Walloon",
    "wuu": "Wu Chinese", "xh": "Xhosa", "yo": "Yoruba", "yue": "Cantonese", "zh": "Chinese", "zu": "Zulu",
    "zxx": "no linguistic content",
    "und": "undetermined",
}  # fmt: skip

#: ISO 639-2/3 codes that model cards use instead of the two-letter ones (the common cases, not the whole standard)
_THREE_LETTER = {
    "eng": "en", "hin": "hi", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "spa": "es", "por": "pt",
    "ita": "it", "nld": "nl", "dut": "nl", "rus": "ru", "ukr": "uk", "pol": "pl", "ces": "cs", "cze": "cs",
    "tur": "tr", "ara": "ar", "heb": "he", "fas": "fa", "per": "fa", "zho": "zh", "chi": "zh", "cmn": "zh",
    "jpn": "ja", "kor": "ko", "vie": "vi", "tha": "th", "ind": "id", "msa": "ms", "may": "ms", "ben": "bn",
    "urd": "ur", "tam": "ta", "tel": "te", "mar": "mr", "guj": "gu", "kan": "kn", "mal": "ml", "pan": "pa",
    "nep": "ne", "swa": "sw", "swe": "sv", "dan": "da", "fin": "fi", "nor": "no", "ell": "el", "gre": "el",
    "ron": "ro", "rum": "ro", "hun": "hu", "bul": "bg", "cat": "ca", "eus": "eu", "baq": "eu", "glg": "gl",
}  # fmt: skip
_BY_NAME = {name.lower(): code for code, name in LANGUAGE_NAMES.items()}
_TAG = re.compile(r"[a-z]{2,3}")


def normalise_language(value: str) -> str:
    """A declared language as the ISO 639-1 code the dataset identifier uses: ``"EN"``, ``"en-US"``, ``"en_GB"``,
    ``"eng"`` and ``"English"`` are all ``"en"``. A tag we cannot map (``"multilingual"``, a rare ISO 639-3 code)
    stays as written, in lower case; an empty one is ``""``."""
    text = value.strip().lower()
    if not text:
        return ""
    if text in _BY_NAME:
        return _BY_NAME[text]
    primary = re.split(r"[-_]", text, maxsplit=1)[0]
    if _TAG.fullmatch(primary):
        return _THREE_LETTER.get(primary, primary)
    return text


def language_label(code: str) -> str:
    """``"hi"`` -> ``"hi — Hindi"``; a code without a known name is shown as it is."""
    name = LANGUAGE_NAMES.get(code)
    return f"{code} — {name}" if name else code


def declared_languages(entry: ModelEntry, cache: DetailsCache | None = None) -> list[str]:
    """The languages ``entry``'s files declare, normalised and without repeats, in the order they are written."""
    out: list[str] = []
    for value in model_details(entry, cache).languages:
        code = normalise_language(value)
        if code and code not in out:
            out.append(code)
    return out


def model_languages(resolver: AliasResolver, cache: DetailsCache | None = None) -> dict[str, list[str]]:
    """Every name a model picker may offer -> the languages its model declares: each user alias whose model is
    here, each registry model (model aliases), and ``default`` (the configured default model)."""
    out: dict[str, list[str]] = {}
    for view in resolver.list_aliases():
        if view.entry is not None and view.config.alias not in out:
            out[view.config.alias] = declared_languages(view.entry, cache)
    if "default" not in out:
        try:
            out["default"] = declared_languages(resolver.registry.resolve("default"), cache)
        except Exception:  # no default model here: "default" declares nothing (the picker says why elsewhere)
            out["default"] = []
    return out


def _languages_for(name: str, languages: Mapping[str, Sequence[str]]) -> Sequence[str]:
    """The languages of a picker name; ``"model + adapter"`` speaks its base model's."""
    if name in languages:
        return languages[name]
    base, sep, _adapter = name.rpartition(_ADAPTER_SEPARATOR)
    if sep and base.strip() in languages:
        return languages[base.strip()]
    return ()


def languages_of(resolver: AliasResolver, name: str, cache: DetailsCache | None = None) -> list[str]:
    """The languages the model behind ``name`` (an alias, a model id, ``default`` or ``"model + adapter"``)
    declares; ``[]`` when it declares none or is not here."""
    return list(_languages_for(name.strip(), model_languages(resolver, cache)))


def check_language(language: str | None) -> str:
    """The filter value as a code (:data:`ANY` for none); ValidationError on ``language`` for text that is not a
    language code or name."""
    text = (language or "").strip()
    if not text or text.lower() == ANY:
        return ANY
    if "—" in text:  # a label ("hi — Hindi") typed back in
        text = text.split("—", 1)[0].strip()
    code = normalise_language(text)
    if not re.fullmatch(r"[a-z]{2,3}|[a-z][a-z-]{1,30}", code):
        raise ValidationError(
            f"language must be '{ANY}' or a language code such as en, hi or fr (ISO 639-1), not {language!r}",
            param="language",
        )
    return code


def filter_by_language(names: Sequence[str], language: str | None, languages: Mapping[str, Sequence[str]]) -> list[str]:
    """The ``names`` whose model declares ``language``, in their order. ``"any"`` (or empty) keeps every name,
    including models that declare no language; a specific language never lists those. ``languages`` is
    :func:`model_languages`'s map; a ``"model + adapter"`` name follows its base model."""
    code = check_language(language)
    if code == ANY:
        return list(names)
    return [n for n in names if code in _languages_for(n, languages)]


def language_choices(names: Sequence[str], languages: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """The language filter's ``(label, value)`` choices for a picker offering ``names``: ``("any", "any")``, then
    every language those models declare, by code (``("hi — Hindi", "hi")``)."""
    codes = sorted({code for n in names for code in _languages_for(n, languages)})
    return [(ANY, ANY), *((language_label(c), c) for c in codes)]
