"""Backend-independent text release: hold back text that may still become a stop sequence or is an
incomplete UTF-8 character, cut at the first stop sequence, and release everything else as it comes."""

from __future__ import annotations

REPLACEMENT_CHAR = "\ufffd"


class StopTextBuffer:
    """Feed it the full decoded text of the generated tokens after each token; it returns what may be shown.

    The concatenation of every ``update()`` result and ``flush()`` is the final reply text: the text up to
    (not including) the first stop sequence, or all of it if none appeared.
    """

    def __init__(self, stop: list[str]) -> None:
        self._stop = [s for s in stop if s]
        self._released = 0
        self._text = ""
        self.stopped = False

    def update(self, full_text: str) -> str:
        """Return newly releasable text; sets ``stopped`` once a stop sequence appears."""
        if self.stopped:
            return ""
        self._text = full_text
        hit = self._first_stop(full_text)
        if hit is not None:
            self.stopped = True
            out = full_text[self._released : hit] if hit > self._released else ""
            self._released = max(self._released, hit)
            self._text = full_text[:hit]
            return out
        safe = len(full_text)
        while safe > self._released and full_text[safe - 1] == REPLACEMENT_CHAR:
            safe -= 1
        safe -= self._partial_stop_len(full_text[:safe])
        if safe <= self._released:
            return ""
        out = full_text[self._released : safe]
        self._released = safe
        return out

    def flush(self) -> str:
        """Release what was held back (called when generation ends for another reason than a stop)."""
        out = self._text[self._released :]
        self._released = len(self._text)
        return out

    def _first_stop(self, text: str) -> int | None:
        best: int | None = None
        for s in self._stop:
            # A stop sequence can only newly appear in the part not yet released (plus its overlap).
            idx = text.find(s, max(0, self._released - len(s) + 1))
            if idx != -1 and (best is None or idx < best):
                best = idx
        return best

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop sequence."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if n > longest and text.endswith(s[:n]):
                    longest = n
                    break
        return longest
