"""The inference-time safety layer: check a prompt before generation, guard a reply while it streams.

Typical use around one generation::

    safety = SafetyFilter(policy, count_tokens=lambda s: len(tokenizer.encode(s)))
    checked = safety.check_input(user_message, enabled=request.safety)
    if checked.blocked:
        return refuse(checked.reason)            # nothing is generated
    guard = safety.output_guard(enabled=request.safety)
    for event in engine.stream(prompt_with(checked.text)):
        decision = guard.feed(event.text)
        send(decision.emit)                      # may be "" while text is held back
        if decision.stop:
            break                                # a block rule or a length limit fired: stop generating
    send(guard.flush().emit)                     # what was still held back
    result = guard.finish()                      # every finding, the final text, blocked + reason

How the reply is guarded. Text is released only after every rule that can change or stop it has seen it with
some text after it: a word is never released before the character that ends it, and the last
``streaming.hold_chars`` characters are held back, so an e-mail address, a card number or an offensive word
split across tokens is seen whole. Spans that would straddle the release point hold it back until they are
complete. A block rule (word list or PII with action ``block``, toxicity ``block`` on the chunk about to be
released, a length limit with action ``block``) stops the reply at the start of the offending span, which is
never emitted. Masking (PII ``mask``/``redact``, word list ``mask``) is applied to each released chunk.

Cost. Presidio's analyzer (~3-8 ms per call on a short text) runs on the reply only where its result changes
what is shown: with PII ``mask``/``redact``/``block`` on the output, text is analysed and released in chunks of
``streaming.release_chars``; with ``flag`` it runs once, in :meth:`OutputGuard.finish`. The word list is a
compiled regular expression and is checked on every token. Toxicity is scored per released chunk only with
``block``; with ``flag`` once at the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from studio.safety.findings import ActionTaken, Check, Finding, SafetyResult, Where
from studio.safety.pii import Edit, PiiAnalyzer, apply_edits, get_pii_analyzer, non_overlapping_edits
from studio.safety.policy import SafetyPolicyConfig
from studio.safety.toxicity import ToxicityScorer, active_scorer
from studio.safety.words import WORD_TYPE, WordList, load_word_list

TokenCounter = Callable[[str], int]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def approx_token_count(text: str) -> int:
    """A token count without the model's tokenizer: words and punctuation marks (subword tokenizers give at
    least as many for English text, so a limit enforced with it is never looser than the real one by much)."""
    return len(_TOKEN_RE.findall(text))


@dataclass(frozen=True)
class _Hit:
    """A triggered span rule before it becomes a :class:`Finding` (where is added then)."""

    check: Check
    type: str
    start: int
    end: int
    score: float
    action: ActionTaken
    detail: str = ""

    def finding(self, where: Where) -> Finding:
        return Finding(self.check, self.type, self.start, self.end, self.score, self.action, where, self.detail)

    def edit(self, offset: int = 0, lo: int = 0, hi: int | None = None) -> Edit | None:
        """The replacement this hit asks for, clipped to ``[lo, hi)`` and shifted by ``-offset``."""
        kind: Literal["mask", "redact", "stars"]
        if self.action == "mask":
            kind = "stars" if self.check == "word_list" else "mask"
        elif self.action == "redact":
            kind = "redact"
        else:
            return None
        start = max(self.start, lo)
        end = self.end if hi is None else min(self.end, hi)
        if end <= start:
            return None
        return Edit(start - offset, end - offset, self.type, kind, self.score)


@dataclass(frozen=True)
class GuardDecision:
    """What to do after one streamed token.

    ``emit``: text to show now (masked as the policy says; may be empty while text is held back).
    ``held``: characters of the reply received but not shown yet. ``stop``: stop generating now (a block rule
    or a length limit fired; ``reason`` says which when the reply was blocked).
    """

    emit: str
    held: int = 0
    stop: bool = False
    reason: str | None = None


def _describe(hit: _Hit, threshold: float | None = None) -> str:
    if hit.check == "pii":
        return f"personal data ({hit.type}, score {hit.score:.2f})"
    if hit.check == "toxicity":
        return f"toxicity score {hit.score:.2f} ≥ {threshold if threshold is not None else 0:.2f}"
    if hit.check == "word_list":
        return "a word from the offensive-word list"
    return hit.detail or hit.type


class SafetyFilter:
    """A policy made executable: :meth:`check_input` for prompts, :meth:`output_guard` for streamed replies.

    Build one per policy and reuse it; the expensive parts (Presidio's analyzer, the toxicity scorer, the word
    list) are shared per process and loaded on first use — call :meth:`warm_up` at startup to pay that early.
    ``count_tokens`` counts tokens for the token limits (the model's tokenizer); without it the count is
    :func:`approx_token_count`.
    """

    def __init__(self, policy: SafetyPolicyConfig, *, count_tokens: TokenCounter | None = None) -> None:
        self.policy = policy
        self.count_tokens: TokenCounter = count_tokens or approx_token_count
        self._scorer: tuple[ToxicityScorer, str] | None = None

    # -- shared parts, loaded on first use -------------------------------------------------------------------
    def pii_analyzer(self) -> PiiAnalyzer | None:
        """The shared Presidio analyzer, or None when PII detection is off or has no entities."""
        pii = self.policy.pii
        return get_pii_analyzer() if pii.enabled and pii.entities else None

    def word_list(self) -> WordList | None:
        """The compiled word list, or None when the check is off (re-read when the file changes)."""
        wl = self.policy.word_list
        return load_word_list(wl.path()) if wl.enabled else None

    def toxicity_scorer(self) -> tuple[ToxicityScorer, str] | None:
        """The active toxicity scorer and its display name, or None when toxicity scoring is off."""
        if not self.policy.toxicity.enabled:
            return None
        if self._scorer is None:
            self._scorer = active_scorer(self.policy)
        return self._scorer

    @property
    def scorer_name(self) -> str | None:
        """Which toxicity scorer is active (for the UI), or None when toxicity scoring is off."""
        active = self.toxicity_scorer()
        return active[1] if active else None

    @property
    def loaded_scorer_name(self) -> str | None:
        """The toxicity scorer's name if it has been loaded already (never loads it)."""
        return self._scorer[1] if self._scorer else None

    def warm_up(self) -> None:
        """Load everything the policy needs now (the analyzer takes seconds the first time in a process)."""
        analyzer = self.pii_analyzer()
        if analyzer is not None:
            analyzer.analyze("warm up: Jane Doe, jane@example.com", self.policy.pii.entities)
        self.word_list()
        scorer = self.toxicity_scorer()
        if scorer is not None:
            scorer[0].score("warm up")

    # -- rules ----------------------------------------------------------------------------------------------
    def applies(self, check: Literal["pii", "toxicity", "word_list"], where: Where) -> bool:
        """Whether ``check`` is on for the prompt (``input``) or the reply (``output``)."""
        policy = self.policy
        if check == "pii":
            enabled, apply_to = policy.pii.enabled and bool(policy.pii.entities), policy.pii.apply_to
        elif check == "toxicity":
            enabled, apply_to = policy.toxicity.enabled, policy.toxicity.apply_to
        else:
            enabled, apply_to = policy.word_list.enabled, policy.word_list.apply_to
        return enabled and where in apply_to

    def span_hits(
        self, text: str, where: Where, *, start: int = 0, actions: frozenset[str] | None = None
    ) -> list[_Hit]:
        """Word-list and PII hits in ``text[start:]`` (offsets into ``text``), for rules whose action is in
        ``actions`` (all when None)."""
        hits: list[_Hit] = []
        wl = self.policy.word_list
        if self.applies("word_list", where) and (actions is None or wl.action in actions):
            words = self.word_list()
            if words is not None:
                for m in words.find(text, start):
                    hits.append(_Hit("word_list", WORD_TYPE, m.start, m.end, 1.0, wl.action, m.word))
        pii = self.policy.pii
        if self.applies("pii", where) and (actions is None or pii.action in actions):
            analyzer = self.pii_analyzer()
            if analyzer is not None:
                spans = analyzer.analyze(text[start:], pii.entities, pii.score_threshold)
                hits.extend(
                    _Hit("pii", s.entity_type, s.start + start, s.end + start, s.score, pii.action) for s in spans
                )
        return sorted(hits, key=lambda h: (h.start, h.end))

    def toxicity_hit(self, text: str, start: int, end: int) -> _Hit | None:
        """A toxicity hit over ``text[start:end]`` when its score reaches the threshold."""
        active = self.toxicity_scorer()
        if active is None or not text[start:end].strip():
            return None
        scorer = active[0]
        score = scorer.score(text[start:end])
        cfg = self.policy.toxicity
        if score < cfg.threshold:
            return None
        return _Hit("toxicity", "toxicity", start, end, score, cfg.action, scorer.name)

    def reason_for(self, where: Where, hit: _Hit) -> str:
        """The message shown when ``hit`` blocks the prompt or stops the reply."""
        what = "prompt refused" if where == "input" else "reply stopped"
        return f"{what}: {_describe(hit, self.policy.toxicity.threshold)}"

    # -- prompt ---------------------------------------------------------------------------------------------
    def check_input(self, text: str, *, enabled: bool = True) -> SafetyResult:
        """Check a prompt before generation. With ``enabled=False`` the text passes unchanged and unchecked.

        Length limits apply first (a ``block`` returns at once; ``truncate`` cuts the text the other checks
        see). Then every rule runs and every hit is recorded; if any has action ``block`` the result is blocked
        (``text`` is the prompt as given), else ``text`` carries the masks.
        """
        if not enabled:
            return SafetyResult(text=text, checked=False, where="input")
        hits: list[_Hit] = []
        work, length_hit = self._limit_input(text)
        if length_hit is not None:
            hits.append(length_hit)
            if length_hit.action == "block":
                return self._input_result(text, text, hits, length_hit)
        hits.extend(self.span_hits(work, "input"))
        if self.applies("toxicity", "input"):
            tox = self.toxicity_hit(work, 0, len(work))
            if tox is not None:
                hits.append(tox)
        blocker = next((h for h in hits if h.action == "block"), None)
        if blocker is not None:
            return self._input_result(text, text, hits, blocker)
        edits = non_overlapping_edits([e for e in (h.edit() for h in hits) if e is not None])
        out = apply_edits(work, edits) if edits else work
        return self._input_result(text, out, hits, None)

    def _input_result(self, original: str, out: str, hits: list[_Hit], blocker: _Hit | None) -> SafetyResult:
        findings = tuple(h.finding("input") for h in sorted(hits, key=lambda h: (h.start, h.end)))
        return SafetyResult(
            text=out,
            findings=findings,
            blocked=blocker is not None,
            reason=self.reason_for("input", blocker) if blocker is not None else None,
            where="input",
            modified=out != original,
            scorer=self.loaded_scorer_name,
        )

    def _limit_input(self, text: str) -> tuple[str, _Hit | None]:
        cfg = self.policy.length
        if cfg.max_input_chars is not None and len(text) > cfg.max_input_chars:
            cut = cfg.max_input_chars
            detail = f"{len(text)} characters > max_input_chars={cut}"
            return text[:cut], _Hit("length", "max_input_chars", cut, len(text), 1.0, cfg.action, detail)
        if cfg.max_input_tokens is not None:
            n = self.count_tokens(text)
            if n > cfg.max_input_tokens:
                cut = self._token_prefix(text, cfg.max_input_tokens)
                detail = f"{n} tokens > max_input_tokens={cfg.max_input_tokens}"
                return text[:cut], _Hit("length", "max_input_tokens", cut, len(text), 1.0, cfg.action, detail)
        return text, None

    def _token_prefix(self, text: str, max_tokens: int) -> int:
        """Length of the longest prefix of ``text`` with at most ``max_tokens`` tokens (binary search)."""
        lo, hi = 0, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count_tokens(text[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # -- reply ----------------------------------------------------------------------------------------------
    def output_guard(self, *, enabled: bool = True) -> OutputGuard:
        """A guard for one streamed reply (not shared between replies)."""
        return OutputGuard(self, enabled=enabled)

    def check_output(self, text: str, *, enabled: bool = True) -> SafetyResult:
        """Check a complete (non-streamed) reply with the same rules as the streaming guard."""
        guard = self.output_guard(enabled=enabled)
        max_tokens = self.policy.length.max_output_tokens
        if enabled and max_tokens is not None and self.count_tokens(text) > max_tokens:
            cut = self._token_prefix(text, max_tokens)
            guard.feed(text[:cut], n_tokens=max_tokens)
            guard.feed(text[cut:], n_tokens=1)  # one token past the limit: the guard cuts the reply here
        else:
            guard.feed(text, n_tokens=0)
        return guard.finish()


_STREAM_ACTIONS = frozenset({"mask", "redact", "block"})


class OutputGuard:
    """Guards one reply while it streams: feed it each token's text; show what it emits; stop when it says so.

    ``feed(text)`` → :class:`GuardDecision`; ``flush()`` releases what is still held back once generation has
    ended; ``finish()`` → :class:`SafetyResult` with the full shown text and every finding (spans are offsets
    into the reply as generated). With ``enabled=False`` every text is emitted as it comes and nothing is checked.
    """

    def __init__(self, safety: SafetyFilter, *, enabled: bool = True) -> None:
        self.safety = safety
        self.enabled = enabled
        policy = safety.policy
        self._raw = ""
        self._emitted_upto = 0
        self._out: list[str] = []
        self._tokens = 0
        self._stopped = False
        self._flushed = False
        self._blocked = False
        self._reason: str | None = None
        self._findings: dict[tuple[str, str, int, int], Finding] = {}
        self._hold = policy.streaming.hold_chars
        pii_streams = safety.applies("pii", "output") and policy.pii.action in _STREAM_ACTIONS
        self._tox_blocks = safety.applies("toxicity", "output") and policy.toxicity.action == "block"
        self._words = safety.word_list() if enabled and safety.applies("word_list", "output") else None
        self._word_action = policy.word_list.action
        # Presidio or the toxicity model on every token would cost more than the generation; analyse in chunks.
        self._release_min = policy.streaming.release_chars if (pii_streams or self._tox_blocks) else 1

    @property
    def stopped(self) -> bool:
        """True once a block rule or a length limit has ended the reply."""
        return self._stopped

    @property
    def text(self) -> str:
        """The reply as shown so far (masks applied)."""
        return "".join(self._out)

    def feed(self, text: str, n_tokens: int = 1) -> GuardDecision:
        """Take the next piece of the reply (``n_tokens`` tokens' worth of text) and say what to show now."""
        if not self.enabled:
            self._raw += text
            self._out.append(text)
            self._emitted_upto = len(self._raw)
            return GuardDecision(emit=text)
        if self._stopped:
            return GuardDecision(emit="", stop=True, reason=self._reason)
        limits = self.safety.policy.length
        self._tokens += n_tokens
        if limits.max_output_tokens is not None and self._tokens > limits.max_output_tokens:
            detail = f"reply reached max_output_tokens={limits.max_output_tokens}"
            end = len(self._raw) + len(text)
            hit = _Hit("length", "max_output_tokens", len(self._raw), end, 1.0, limits.action, detail)
            return self._limit_stop(hit)
        self._raw += text
        if limits.max_output_chars is not None and len(self._raw) > limits.max_output_chars:
            cut = limits.max_output_chars
            detail = f"reply reached max_output_chars={cut}"
            hit = _Hit("length", "max_output_chars", cut, len(self._raw), 1.0, limits.action, detail)
            self._raw = self._raw[:cut]
            return self._limit_stop(hit)
        blocker = self._word_blocker(final=False)
        if blocker is not None:
            return self._stop_at(blocker)
        return self._step(final=False)

    def flush(self) -> GuardDecision:
        """Release whatever is still held back (call once generation has ended, before :meth:`finish`)."""
        if not self.enabled or self._stopped or self._flushed:
            return GuardDecision(emit="", stop=self._stopped, reason=self._reason)
        self._flushed = True
        blocker = self._word_blocker(final=True)
        if blocker is not None:
            return self._stop_at(blocker)
        return self._step(final=True)

    def finish(self) -> SafetyResult:
        """Every finding and the reply as shown. Runs the ``flag``-only checks over the whole reply."""
        if not self.enabled:
            return SafetyResult(text=self.text, checked=False, where="output")
        self.flush()
        safety, raw = self.safety, self._raw
        flag_only = frozenset({"flag"})
        for hit in safety.span_hits(raw, "output", actions=flag_only):
            self._record(hit)
        if safety.applies("toxicity", "output") and not self._tox_blocks:
            tox = safety.toxicity_hit(raw, 0, len(raw))
            if tox is not None:
                self._record(tox)
        shown = self.text
        findings = tuple(sorted(self._findings.values(), key=lambda f: (f.start, f.end, f.check)))
        return SafetyResult(
            text=shown,
            findings=findings,
            blocked=self._blocked,
            reason=self._reason,
            where="output",
            modified=shown != raw,
            scorer=safety.loaded_scorer_name,
        )

    # -- internals ------------------------------------------------------------------------------------------
    def _record(self, hit: _Hit) -> None:
        key = (hit.check, hit.type, hit.start, hit.end)
        if key in self._findings:
            return
        if hit.check == "pii":
            # The analyser may see the same entity again with more context and a slightly different span.
            for f in self._findings.values():
                if f.check == "pii" and f.type == hit.type and f.start < hit.end and hit.start < f.end:
                    return
        self._findings[key] = hit.finding("output")

    def _word_blocker(self, final: bool) -> _Hit | None:
        """A complete word-list match with action block in the text not yet shown (cheap: one regex)."""
        if self._words is None or self._word_action != "block":
            return None
        start = max(0, self._emitted_upto - self._words.longest)
        n = len(self._raw)
        for m in self._words.find(self._raw, start):
            if m.end > self._emitted_upto and (final or m.end < n):
                return _Hit("word_list", WORD_TYPE, m.start, m.end, 1.0, "block", m.word)
        return None

    def _window_hits(self, end: int, final: bool) -> list[_Hit]:
        """Span hits (mask/redact/block rules) over the unshown text plus some shown text before it."""
        start = self._emitted_upto
        left = max(0, start - max(self._hold, 16))
        space = self._raw.rfind(" ", 0, left + 1)
        left = space + 1 if left > 0 and space >= 0 else left
        text = self._raw[:end]
        hits = self.safety.span_hits(text, "output", start=left, actions=_STREAM_ACTIONS)
        # A word ending right at the end of the text received so far may still grow ("ass" → "assistant").
        return [h for h in hits if final or h.check != "word_list" or h.end < end]

    def _step(self, final: bool) -> GuardDecision:
        raw, start = self._raw, self._emitted_upto
        n = len(raw)
        if start >= n:
            return GuardDecision(emit="", held=0)
        if final:
            boundary = n
        else:
            limit = n - self._hold
            boundary = max((raw.rfind(c, start, limit) for c in (" ", "\n", "\t")), default=-1) + 1
            if limit <= start or boundary <= start or boundary - start < self._release_min:
                return GuardDecision(emit="", held=n - start)
        hits = self._window_hits(n, final)
        blockers = [h for h in hits if h.action == "block" and h.end > start]
        if blockers:
            return self._stop_at(min(blockers, key=lambda h: h.start), hits)
        if not final:
            moved = True
            while moved:  # never release part of a span: hold it back whole
                moved = False
                for h in hits:
                    if h.start < boundary < h.end:
                        boundary, moved = max(start, h.start), True
            if boundary <= start:
                return GuardDecision(emit="", held=n - start)
        if self._tox_blocks:
            tox = self.safety.toxicity_hit(raw, start, boundary)
            if tox is not None:
                return self._stop_at(tox, hits)
        emit = self._release(boundary, hits)
        return GuardDecision(emit=emit, held=n - boundary)

    def _release(self, upto: int, hits: list[_Hit]) -> str:
        """Show ``raw[emitted:upto]`` with the masks of the hits inside it; record those hits."""
        start = self._emitted_upto
        if upto <= start:
            return ""
        inside = [h for h in hits if h.start < upto and h.end > start and h.action != "block"]
        edits = non_overlapping_edits([e for e in (h.edit(start, start, upto) for h in inside) if e is not None])
        chunk = self._raw[start:upto]
        piece = apply_edits(chunk, edits) if edits else chunk
        for h in inside:
            self._record(h)
        self._emitted_upto = upto
        self._out.append(piece)
        return piece

    def _stop_at(self, hit: _Hit, hits: list[_Hit] | None = None) -> GuardDecision:
        """Show the text before ``hit`` (checked), record it, and end the reply as blocked."""
        upto = max(self._emitted_upto, hit.start)
        if hits is None and upto > self._emitted_upto:
            hits = self._window_hits(upto, final=True)
        emit = self._release(upto, [h for h in (hits or []) if h.end <= upto or h.action != "block"])
        self._record(hit)
        self._stopped = True
        self._blocked = True
        self._reason = self.safety.reason_for("output", hit)
        return GuardDecision(emit=emit, held=0, stop=True, reason=self._reason)

    def _limit_stop(self, hit: _Hit) -> GuardDecision:
        """A length limit: show what is held back up to the limit (checked), then stop."""
        blocker = self._word_blocker(final=True)
        if blocker is not None:
            decision = self._stop_at(blocker)
            self._record(hit)
            return decision
        decision = self._step(final=True)
        self._record(hit)
        self._stopped = True
        if decision.stop:
            return decision
        if hit.action == "block":
            self._blocked = True
            self._reason = f"reply stopped: {hit.detail}"
        return GuardDecision(emit=decision.emit, held=0, stop=True, reason=self._reason)
