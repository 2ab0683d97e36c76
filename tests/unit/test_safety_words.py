"""The offensive-word list: whole words, any case, spans; the file is re-read when it changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studio.errors import ValidationError
from studio.safety.words import WordList, load_word_list, parse_word_list


def test_whole_word_case_insensitive_with_spans() -> None:
    words = WordList(["idiot", "ass", "son of a bitch"])
    text = "You IDIOT, the class assistant said: son  of\na bitch! ass."
    found = [(m.word, m.start, m.end, text[m.start : m.end]) for m in words.find(text)]
    assert found == [
        ("idiot", 4, 9, "IDIOT"),
        ("son  of\na bitch", 37, 52, "son  of\na bitch"),
        ("ass", 54, 57, "ass"),
    ]


def test_find_from_an_offset_still_checks_the_character_before() -> None:
    words = WordList(["ass"])
    assert words.find("bass ass", 1) == [words.find("bass ass")[0]]
    assert [m.start for m in words.find("bass ass", 1)] == [5]


def test_file_format_comments_and_blank_lines() -> None:
    assert parse_word_list("# header\nfoo\n\n  bar baz  # trailing comment\n#only\n") == ["foo", "bar baz"]


def test_file_is_reloaded_when_edited(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("alpha\n", encoding="utf-8")
    assert [m.word for m in load_word_list(path).find("alpha beta")] == ["alpha"]
    path.write_text("alpha\nbeta\n", encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert [m.word for m in load_word_list(path).find("alpha beta")] == ["alpha", "beta"]


def test_missing_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        load_word_list(tmp_path / "nope.txt")
    assert err.value.param == "word_list.file"


def test_shipped_list_matches_common_profanity_but_not_innocent_words() -> None:
    from studio.safety.policy import WordListConfig

    words = load_word_list(WordListConfig().path())
    assert len(words) > 50
    assert [m.word for m in words.find("What the fuck, you idiot")] == ["fuck", "idiot"]
    assert words.find("The assistant passed the class; Scunthorpe is a town; cockpit, grass.") == []
