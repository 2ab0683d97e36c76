"""Forward passes on a transformers causal LM for the model metrics: sliding-window log-likelihood (perplexity)
and greedy last-word prediction (LAMBADA-style accuracy).

Works on any ``model``/``tokenizer`` pair: the loaded ``TransformersEngine``'s (adapters included) or one built
with ``AutoModelForCausalLM.from_pretrained``. Log-softmax is taken in float32 whatever the model's dtype.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: a final word: letters/digits (with inner apostrophes or hyphens), then optional closing punctuation
_LAST_WORD = re.compile(r"(\w[\w'’-]*)([\W_]*)$", re.UNICODE)


def split_last_word(text: str) -> tuple[str, str] | None:
    """``(context, target)``: the text before its final word, and the final word with its leading space
    (``"... the cat sat on the mat."`` → ``("... the cat sat on the", " mat")``). None when there is no word."""
    stripped = text.rstrip()
    match = _LAST_WORD.search(stripped)
    if match is None:
        return None
    start = match.start(1)
    context = stripped[:start]
    if not context.strip():
        return None
    trimmed = context.rstrip()
    return trimmed, context[len(trimmed) :] + match.group(1)


@dataclass
class LanguageModel:
    """A causal LM and its tokenizer; ``render_prompt(messages)`` is the chat prompt text (generation prompt
    appended) that the model under evaluation sees."""

    model: Any
    tokenizer: Any
    render_prompt: Callable[[Sequence[Mapping[str, str]]], str] | None = None

    @classmethod
    def from_engine(cls, engine: Any, chat_template: Any = None) -> LanguageModel | None:
        """The engine's model when it exposes transformers weights (``model`` + ``tokenizer``), else None.
        ``chat_template`` (a ``ChatTemplateSpec``, e.g. an alias's) replaces the model's own template."""
        model = getattr(engine, "model", None)
        tokenizer = getattr(engine, "tokenizer", None)
        if model is None or tokenizer is None or not hasattr(model, "forward"):
            return None
        render = getattr(engine, "render_chat", None)

        def prompt(messages: Sequence[Mapping[str, str]]) -> str:
            from studio.inference.base import ChatMessage

            msgs = [ChatMessage(m["role"], m["content"]) for m in messages]  # type: ignore[arg-type]
            return str(render(msgs, chat_template)) if render is not None else _template_prompt(tokenizer, messages)

        return cls(model, tokenizer, prompt)

    # -- tokens ------------------------------------------------------------------------------------------------
    def _ids(self, text: str, special: bool) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=special)["input_ids"]]

    def _prompt_text(self, messages: Sequence[Mapping[str, str]]) -> str:
        if self.render_prompt is not None:
            return self.render_prompt(messages)
        return _template_prompt(self.tokenizer, messages)

    def reply_ids(self, messages: Sequence[Mapping[str, str]], reply: str) -> tuple[list[int], int]:
        """Token ids of prompt + reply, and where the reply starts (the reply ends with the end-of-turn token
        the template would put there, when the tokenizer has one)."""
        prompt_ids = self._ids(self._prompt_text(messages), special=False)
        reply_ids = self._ids(reply, special=False)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            reply_ids.append(eos)
        return prompt_ids + reply_ids, len(prompt_ids)

    # -- perplexity --------------------------------------------------------------------------------------------
    def nll(
        self, ids: Sequence[int], *, score_from: int = 1, window: int = 512, stride: int = 256
    ) -> tuple[float, int]:
        """Summed negative log-likelihood (nats) of ``ids[score_from:]`` and how many tokens that is.

        A window of at most ``window`` tokens moves ``stride`` tokens at a time; each token is scored once, in
        the first window that contains it at a position other than the window's first (so with context), as in
        the Hugging Face perplexity guide. ``stride == window`` gives disjoint chunks.
        """
        from studio.inference.torch_setup import import_torch

        torch = import_torch()
        n = len(ids)
        score_from = max(1, score_from)
        if n <= score_from:
            return 0.0, 0
        device = next(self.model.parameters()).device
        total = 0.0
        count = 0
        scored_until = 0  # tokens before this absolute position have been scored (or are not to be)
        begin = 0
        with torch.inference_mode():
            while True:
                end = min(begin + window, n)
                first = max(begin + 1, scored_until, score_from)  # absolute positions [first, end) are scored now
                if first < end:
                    chunk = torch.tensor([list(ids[begin:end])], device=device)
                    logits = self.model(input_ids=chunk).logits[0].float()
                    logp = torch.log_softmax(logits[:-1], dim=-1)
                    targets = chunk[0, 1:]
                    token_logp = logp.gather(1, targets.unsqueeze(1)).squeeze(1)  # position j predicts j+1
                    rel = first - begin - 1
                    total -= float(token_logp[rel:].sum())
                    count += end - first
                scored_until = end
                if end >= n:
                    break
                begin += stride
        return total, count

    def text_nll(self, text: str, *, window: int = 512, stride: int = 256) -> tuple[float, int]:
        """NLL of a whole text (tokenized as the model's tokenizer does by default, special tokens included)."""
        return self.nll(self._ids(text, special=True), window=window, stride=stride)

    def reply_nll(
        self, messages: Sequence[Mapping[str, str]], reply: str, *, window: int = 512, stride: int = 256
    ) -> tuple[float, int]:
        """NLL of the reference reply's tokens given the chat prompt."""
        ids, start = self.reply_ids(messages, reply)
        return self.nll(ids, score_from=start, window=window, stride=stride)

    # -- LAMBADA-style -----------------------------------------------------------------------------------------
    def last_word_correct(self, messages: Sequence[Mapping[str, str]] | None, text: str) -> bool | None:
        """Whether greedy decoding from everything before ``text``'s final word produces exactly that word's tokens.

        ``messages`` (a chat prompt) precede ``text`` when given; else ``text`` is a plain passage. None when the
        text has no final word to predict.
        """
        from studio.inference.torch_setup import import_torch

        split = split_last_word(text)
        if split is None:
            return None
        context, target = split
        if messages is not None:
            prefix_ids = self._ids(self._prompt_text(messages), special=False) + self._ids(context, special=False)
        else:
            prefix_ids = self._ids(context, special=True)
        target_ids = self._ids(target, special=False)
        if not prefix_ids or not target_ids:
            return None
        torch = import_torch()
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            chunk = torch.tensor([prefix_ids + target_ids], device=device)
            logits = self.model(input_ids=chunk).logits[0]
            start = len(prefix_ids) - 1
            predicted = logits[start : start + len(target_ids)].argmax(dim=-1).tolist()
        return [int(p) for p in predicted] == target_ids


def _template_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
        )
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
