"""What a model's own files say about it: format, parameter count, where its chat template comes from, and the
languages and licence of its model card (a GGUF's own ``general.languages`` first; a folder whose card names no
language falls back to a ``language`` key in its ``config.json``). Read from headers only (a GGUF's metadata and
tensor table, the safetensors headers, README.md's front matter, tokenizer_config.json, config.json), so listing
every model stays fast.

``gguf.GGUFReader`` maps the whole file and builds arrays for every metadata value (13 s for the bundled 98 MB
model on these machines), so :func:`read_gguf_header` walks the header itself, keeping only the keys shown here and
skipping the tokenizer's vocabulary arrays. Results are cached per file (path, size, modification time) in a
:class:`DetailsCache` the caller owns.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from studio.models.registry import ModelEntry

log = logging.getLogger(__name__)

NO_TEMPLATE = "none (give an alias a chat_template)"
#: GGUF metadata keys worth keeping (everything under ``general.`` is kept too)
_KEEP = {"tokenizer.chat_template"}
_MAX_HEADER = 100 * 1024 * 1024  # a safetensors header or GGUF string larger than this is not a real one

# GGUF value types (ggml's gguf.h): type id -> struct format of one value
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GgufHeader:
    """The kept metadata of a GGUF file and the parameter count of its tensors."""

    version: int
    metadata: dict[str, Any]
    parameters: int


@dataclass(frozen=True)
class ModelDetails:
    """What the Models tab shows about one model beside the registry's facts."""

    format: str  # "safetensors", "pytorch .bin", "GGUF Q4_K_M", "remote"
    parameters: int | None
    chat_template: str  # where the template comes from: "tokenizer_config.json", "embedded in the GGUF", ...
    languages: list[str] = field(default_factory=list)
    license: str | None = None


class _Reader:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise ValueError("the file ends inside its header")
        return struct.unpack(fmt, data)[0]

    def string(self, keep: bool = True) -> str:
        n = self.unpack("<Q")
        if n > _MAX_HEADER:
            raise ValueError(f"a {n}-byte string in the header")
        if not keep:
            self.fh.seek(n, 1)
            return ""
        data = self.fh.read(n)
        if len(data) != n:
            raise ValueError("the file ends inside its header")
        return data.decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALARS:
            fmt = _SCALARS[kind]
            if keep:
                return self.unpack(fmt)
            self.fh.seek(struct.calcsize(fmt), 1)
            return None
        if kind == _STRING:
            return self.string(keep)
        if kind == _ARRAY:
            item, count = self.unpack("<I"), self.unpack("<Q")
            if item in _SCALARS and not keep:
                self.fh.seek(struct.calcsize(_SCALARS[item]) * count, 1)
                return None
            values = [self.value(item, keep) for _ in range(count)]
            return values if keep else None
        raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_header(path: Path) -> GgufHeader:
    """The ``general.*`` metadata, the chat template and the parameter count (the sum of every tensor's element
    count) of the GGUF file at ``path``. Raises ``ValueError`` for a file that is not GGUF v2 or v3."""
    with open(path, "rb", buffering=1024 * 1024) as fh:
        r = _Reader(fh)
        if fh.read(4) != b"GGUF":
            raise ValueError("not a GGUF file (no GGUF magic)")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 and 3 are)")
        tensors, kvs = r.unpack("<Q"), r.unpack("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(kvs):
            key = r.string()
            kind = r.unpack("<I")
            keep = key.startswith("general.") or key in _KEEP
            value = r.value(kind, keep)
            if keep:
                metadata[key] = value
        parameters = 0
        for _ in range(tensors):
            r.string(keep=False)
            dims = r.unpack("<I")
            count = 1
            for _ in range(dims):
                count *= r.unpack("<Q")
            r.unpack("<I")  # ggml type
            r.unpack("<Q")  # data offset
            parameters += count
    return GgufHeader(version, metadata, parameters)


def safetensors_parameters(folder: Path) -> int | None:
    """The number of parameters in the ``*.safetensors`` files of ``folder`` (from their headers), or None when it
    has none (or one cannot be read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            with open(path, "rb") as fh:
                raw = fh.read(8)
                if len(raw) != 8:
                    return None
                (size,) = struct.unpack("<Q", raw)
                if size > _MAX_HEADER:
                    return None
                header = json.loads(fh.read(size))
            for name, info in header.items():
                if name == "__metadata__" or not isinstance(info, dict):
                    continue
                count = 1
                for d in info.get("shape", []):
                    count *= int(d)
                total += count
    except (OSError, ValueError, TypeError):
        return None
    return total


def _card(folder: Path) -> tuple[str | None, list[str]]:
    """Licence and languages from ``folder/README.md``'s YAML front matter (the model card), when it has them."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None, []
    try:
        from huggingface_hub.repocard import metadata_load

        data = metadata_load(readme) or {}
    except Exception:  # a card whose front matter is not YAML is a card without metadata, not an error
        log.debug("unreadable model card %s", readme, exc_info=True)
        return None, []
    license_ = data.get("license")
    return (str(license_) if license_ else None), _languages(data.get("language"))


def _languages(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if v]
    return []


def _config_languages(folder: Path) -> list[str]:
    """Languages a ``config.json`` names (``language`` or ``languages``: a few architectures, such as translation and
    speech models, record them there) for a folder whose card names none."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    return _languages(data.get("languages")) or _languages(data.get("language"))


def _template_source(folder: Path) -> str:
    if (folder / "chat_template.jinja").is_file():
        return "chat_template.jinja"
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("chat_template"):
                return "tokenizer_config.json"
        except (OSError, ValueError, AttributeError):
            pass
    return NO_TEMPLATE


def _details(entry: ModelEntry) -> ModelDetails:
    if entry.format == "remote":
        return ModelDetails("remote (OpenAI-compatible)", None, "the server's")
    if entry.format == "gguf":
        fmt = f"GGUF {entry.quant}" if entry.quant else "GGUF"
        try:
            header = read_gguf_header(entry.path)
        except (OSError, ValueError) as exc:
            log.info("cannot read the GGUF header of %s: %s", entry.path.name, exc)
            return ModelDetails(fmt, None, NO_TEMPLATE)
        meta = header.metadata
        license_, languages = _card(entry.path.parent)  # a Hub snapshot's card, beside the file
        if meta.get("general.license"):
            license_ = str(meta["general.license"])
        languages = _languages(meta.get("general.languages")) or languages
        template = "embedded in the GGUF" if meta.get("tokenizer.chat_template") else NO_TEMPLATE
        return ModelDetails(fmt, header.parameters, template, languages, license_)
    if entry.format == "onnx":
        license_, languages = _card(entry.path)
        languages = languages or _config_languages(entry.path)
        return ModelDetails("ONNX", None, _template_source(entry.path), languages, license_)
    fmt = "safetensors" if any(entry.path.glob("*.safetensors")) else "pytorch .bin"
    license_, languages = _card(entry.path)
    languages = languages or _config_languages(entry.path)
    return ModelDetails(fmt, safetensors_parameters(entry.path), _template_source(entry.path), languages, license_)


class DetailsCache:
    """Details per model file or folder, read again when its size or modification time changes."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], ModelDetails]] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> ModelDetails:
        """The details of ``entry`` (cached)."""
        if entry.format == "remote":
            return _details(entry)
        try:
            st = entry.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            return _details(entry)
        with self._lock:
            hit = self._cache.get(entry.path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        details = _details(entry)
        with self._lock:
            self._cache[entry.path] = (stamp, details)
        return details


def model_details(entry: ModelEntry, cache: DetailsCache | None = None) -> ModelDetails:
    """Format, parameters, chat template source, languages and licence of ``entry`` (read from its files)."""
    return cache.get(entry) if cache is not None else _details(entry)
