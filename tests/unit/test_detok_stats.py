"""What text a user sees while streaming (StopTextBuffer) and the speed figures shown after (compute_stats)."""

from __future__ import annotations

import random

import pytest

from studio.inference.base import GenerationEnd, GenerationStart, TokenEvent
from studio.inference.detok import REPLACEMENT_CHAR, StopTextBuffer
from studio.inference.stats import GenerationResult, GenerationStats, compute_stats


def stream(pieces: list[str], stop: list[str], *, flush: bool = True) -> tuple[list[str], StopTextBuffer]:
    """Feed the growing decoded text piece by piece; return what was released at each step (+ flush)."""
    buf = StopTextBuffer(stop)
    full = ""
    out: list[str] = []
    for piece in pieces:
        full += piece
        out.append(buf.update(full))
        if buf.stopped:
            break
    if flush:
        out.append(buf.flush())
    return out, buf


# -- StopTextBuffer ------------------------------------------------------------------------------------------
def test_without_stop_text_is_released_as_it_comes() -> None:
    out, buf = stream(["Hel", "lo", ", ", "world"], [])
    assert out == ["Hel", "lo", ", ", "world", ""]
    assert not buf.stopped


def test_released_pieces_concatenate_to_final_text() -> None:
    pieces = ["The", " answer", " is", " 4", "2", ".", " Done", "."]
    out, _ = stream(pieces, ["###", "\n\n"])
    assert "".join(out) == "".join(pieces)


def test_stop_sequence_is_cut_and_not_included() -> None:
    out, buf = stream(["Hello", " there", "<|end|>", " ignored"], ["<|end|>"])
    assert buf.stopped
    assert "".join(out) == "Hello there"
    assert "<|end|>" not in "".join(out)
    assert "ignored" not in "".join(out)


def test_stop_inside_a_token_keeps_text_before_it() -> None:
    out, buf = stream(["Yes.", " ok\nUser: hi"], ["\nUser:"])
    assert buf.stopped
    assert "".join(out) == "Yes. ok"


def test_stop_split_across_tokens_is_held_back_and_never_leaked() -> None:
    stop = "\nUser:"
    pieces = ["Sure", "!", "\n", "Us", "er", ":", " next"]
    buf = StopTextBuffer([stop])
    full = ""
    released = ""
    for piece in pieces:
        full += piece
        released += buf.update(full)
        # at no point may any prefix of the stop sequence that is still undecided be visible
        assert "\n" not in released, released
        if buf.stopped:
            break
    released += buf.flush()
    assert buf.stopped
    assert released == "Sure!"


def test_updates_after_stop_release_nothing() -> None:
    buf = StopTextBuffer(["END"])
    assert buf.update("abcEND") == "abc"
    assert buf.stopped
    assert buf.update("abcEND more text") == ""
    assert buf.flush() == ""


def test_partial_prefix_released_at_flush_when_no_stop_occurs() -> None:
    buf = StopTextBuffer(["###"])
    assert buf.update("Answer ") == "Answer "
    assert buf.update("Answer #") == ""  # could become "###"
    assert buf.update("Answer ##") == ""
    assert not buf.stopped
    assert buf.flush() == "##"  # generation ended (length): show it after all


def test_partial_prefix_released_once_it_cannot_be_a_stop() -> None:
    buf = StopTextBuffer(["###"])
    assert buf.update("Item #") == "Item "
    assert buf.update("Item #1") == "#1"
    assert buf.flush() == ""


def test_earliest_of_several_stops_wins() -> None:
    buf = StopTextBuffer(["STOP", "\n"])
    assert buf.update("one\ntwo STOP") == "one"
    assert buf.stopped


def test_repeated_prefix_chars_before_stop() -> None:
    # "aab" is the stop; "aaa" must hold back only what could still start it
    buf = StopTextBuffer(["aab"])
    assert buf.update("xaaa") == "xa"
    assert buf.update("xaaab") == ""
    assert buf.stopped
    assert buf.flush() == ""


def test_trailing_replacement_char_is_held_back() -> None:
    buf = StopTextBuffer([])
    # first byte of "é" decoded alone shows as U+FFFD; it must not reach the screen
    assert buf.update("caf" + REPLACEMENT_CHAR) == "caf"
    assert buf.update("café") == "é"
    assert buf.flush() == ""


def test_several_trailing_replacement_chars_are_held_back() -> None:
    buf = StopTextBuffer([])
    assert buf.update("hi " + REPLACEMENT_CHAR * 3) == "hi "
    assert buf.update("hi 🙂") == "🙂"


def test_replacement_char_in_the_middle_is_released() -> None:
    buf = StopTextBuffer([])
    assert buf.update("a" + REPLACEMENT_CHAR + "b") == "a" + REPLACEMENT_CHAR + "b"


def test_empty_stop_strings_are_ignored() -> None:
    out, buf = stream(["abc", "def"], ["", "zzz"])
    assert "".join(out) == "abcdef"
    assert not buf.stopped


def _reference(steps: list[str], stops: list[str]) -> str:
    """The reply a user should get: at the first step where any stop is complete, cut at its earliest start."""
    for cur in steps:
        hits = [cur.find(s) for s in stops if s and s in cur]
        if hits:
            return cur[: min(hits)]
    return steps[-1] if steps else ""


def test_random_streams_match_reference_and_never_show_text_that_is_later_cut() -> None:
    rng = random.Random(1234)
    alphabet = "ab\n#"
    for _ in range(3000):
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 3))]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, len(text) - 1))) if len(text) > 1 else []
        steps = [text[:end] for end in [*cuts, len(text)]]
        expected = _reference(steps, stops)
        buf = StopTextBuffer(stops)
        shown = ""
        for cur in steps:
            shown += buf.update(cur)
            assert expected.startswith(shown), (stops, steps, shown)
            if buf.stopped:
                break
        shown += buf.flush()
        assert shown == expected, (stops, steps)


# -- compute_stats -------------------------------------------------------------------------------------------
def tok(i: int, t: float, text: str = "x") -> TokenEvent:
    return TokenEvent(token_id=i, token=text, text=text, logprob=-1.0, top_logprobs=(), time=t)


def test_ttft_and_tokens_per_second() -> None:
    start = GenerationStart(prompt_tokens=31, started=10.0)
    tokens = [tok(0, 10.2), tok(1, 10.3), tok(2, 10.4), tok(3, 10.6)]
    stats = compute_stats(start, tokens, GenerationEnd("stop", time=10.7))
    assert stats.prompt_tokens == 31
    assert stats.completion_tokens == 4
    assert stats.ttft_s == pytest.approx(0.2)  # first token - start
    assert stats.tokens_per_s == pytest.approx(3 / 0.4)  # (n-1) / (last - first)
    assert stats.total_s == pytest.approx(0.7)
    assert stats.finish_reason == "stop"


def test_zero_tokens_gives_none_speed_figures() -> None:
    stats = compute_stats(GenerationStart(prompt_tokens=3, started=5.0), [], GenerationEnd("cancelled", time=5.5))
    assert stats.completion_tokens == 0
    assert stats.ttft_s is None
    assert stats.tokens_per_s is None
    assert stats.total_s == pytest.approx(0.5)
    assert stats.finish_reason == "cancelled"


def test_one_token_has_ttft_but_no_rate() -> None:
    stats = compute_stats(GenerationStart(prompt_tokens=3, started=1.0), [tok(0, 1.5)], None)
    assert stats.ttft_s == pytest.approx(0.5)
    assert stats.tokens_per_s is None
    assert stats.total_s == pytest.approx(0.5)  # no end yet: up to the last token
    assert stats.finish_reason == "running"


def test_end_without_time_uses_last_token() -> None:
    stats = compute_stats(
        GenerationStart(prompt_tokens=1, started=0.0), [tok(0, 1.0), tok(1, 3.0)], GenerationEnd("length")
    )
    assert stats.total_s == pytest.approx(3.0)
    assert stats.tokens_per_s == pytest.approx(0.5)


def test_no_start_is_an_error() -> None:
    with pytest.raises(ValueError, match="GenerationStart"):
        compute_stats(None, [], None)


def test_summary_mentions_speed_and_ttft() -> None:
    stats = GenerationStats(
        prompt_tokens=31, completion_tokens=8, ttft_s=0.12, tokens_per_s=48.24, total_s=0.3, finish_reason="stop"
    )
    line = stats.summary()
    assert "tok/s" in line
    assert "48.2 tok/s" in line
    assert "TTFT 120 ms" in line
    assert "prompt 31 tok" in line
    assert "completion 8 tok" in line
    assert "stop" in line


def test_summary_with_no_tokens_still_readable() -> None:
    stats = compute_stats(GenerationStart(prompt_tokens=2, started=0.0), [], GenerationEnd("cancelled", time=0.1))
    line = stats.summary()
    assert "tok/s" in line
    assert "None" not in line
    assert "cancelled" in line


def test_generation_result_accumulates_stream() -> None:
    result = GenerationResult()
    assert result.add(GenerationStart(prompt_tokens=4, started=0.0)) == ""
    assert result.add(tok(0, 0.1, "Hi")) == "Hi"
    assert result.add(tok(1, 0.2, "")) == ""
    assert not result.finished
    assert result.add(GenerationEnd("length", tail_text=" #", time=0.3)) == " #"
    assert result.finished
    assert result.text == "Hi #"
    assert result.stats.completion_tokens == 2
    assert result.stats.to_dict()["finish_reason"] == "length"
