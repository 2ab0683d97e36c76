"""The offensive-word list: whole-word, case-insensitive matches with their spans.

The list is a plain text file (``configs/safety/offensive_words.txt`` by default): one word or phrase per line,
``#`` starts a comment, blank lines are ignored. Phrases match across any run of whitespace ("son of a" matches
"Son  of\\na"). A word matches only as a whole word: "ass" does not match "class" or "assistant". The file is
re-read when it changes on disk (its modification time or size differ), so edits in the Safety tab apply to the
next message without a restart.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from studio.errors import ValidationError
from studio.files import write_text_atomic

WORD_TYPE = "offensive_word"


@dataclass(frozen=True)
class WordMatch:
    """One match: the list entry that matched and the span of the text it covers."""

    word: str
    start: int
    end: int


class WordList:
    """A compiled list of words and phrases."""

    def __init__(self, words: Iterable[str]) -> None:
        cleaned = sorted({w.strip().lower() for w in words if w.strip()}, key=lambda w: (-len(w), w))
        self.words: tuple[str, ...] = tuple(cleaned)
        self.longest = max((len(w) for w in self.words), default=0)
        if self.words:
            # Longest first so that "son of a bitch" wins over "bitch"; (?<!\w) / (?!\w) make it whole-word.
            alternatives = "|".join(r"\s+".join(re.escape(part) for part in w.split()) for w in self.words)
            self._pattern: re.Pattern[str] | None = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        else:
            self._pattern = None

    def __len__(self) -> int:
        return len(self.words)

    def find(self, text: str, start: int = 0) -> list[WordMatch]:
        """Every whole-word match in ``text`` at or after ``start`` (offsets into ``text``), in order.

        The character before ``start`` still counts for the whole-word test. A match that ends exactly at the end
        of ``text`` is reported; a caller reading a stream must wait for the next character before trusting it.
        """
        if self._pattern is None:
            return []
        return [WordMatch(m.group(0).lower(), m.start(), m.end()) for m in self._pattern.finditer(text, start)]


def parse_word_list(text: str) -> list[str]:
    """The entries of a word-list file's text (comments and blank lines dropped)."""
    out = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry)
    return out


_LOCK = threading.Lock()


@lru_cache(maxsize=16)
def _compiled(path: str, mtime_ns: int, size: int) -> WordList:
    return WordList(parse_word_list(Path(path).read_text(encoding="utf-8")))


def load_word_list(path: str | Path) -> WordList:
    """The word list in ``path``, compiled; cached until the file changes."""
    target = Path(path)
    try:
        st = target.stat()
        with _LOCK:
            return _compiled(str(target.resolve()), st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        raise ValidationError(
            f"word list file {target} does not exist; create it (one word per line) or change word_list.file",
            param="word_list.file",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"word list file {target}: cannot read it ({exc})", param="word_list.file") from None


def read_word_list_text(path: str | Path) -> str:
    """The raw text of a word-list file (for the editor in the Safety tab); empty if it does not exist yet."""
    target = Path(path)
    return target.read_text(encoding="utf-8") if target.exists() else ""


def save_word_list_text(path: str | Path, text: str) -> Path:
    """Write a word-list file atomically; the next check uses it."""
    return write_text_atomic(Path(path), text if text.endswith("\n") or not text else text + "\n")
