"""Chat templates, exact: for every built-in template the token ids the studio feeds a model equal the ids the
model family's official template gives through the family's tokenizer, BOS/EOS included, for conversations with
and without a system message, several turns, whitespace at the edges of the contents, and with the generation
prompt on and off.

The references are in ``tests/fixtures/chat_templates/*.json``; each says where its text came from:

* ``jinja``: a model's published ``chat_template``, applied with transformers' ``apply_chat_template(tokenize=True)``
  (which tokenizes without adding special tokens: the template writes BOS where the family wants one);
* ``fastchat``: Vicuna's prompt as FastChat builds it (``Conversation.get_prompt``, ported below), tokenized the
  way FastChat does, ``tokenizer(prompt)``, so the tokenizer adds BOS;
* ``llama.cpp``: llama.cpp's own formatting (through llama-cpp-python), tokenized with BOS added, as llama.cpp does.

No hub here, so the tokenizers are built offline: the SentencePiece models that mistral-common ships (Mistral's v1
vocabulary, the Llama 2 kind, converted the legacy way Llama 2's ``tokenizer.json`` behaves or the non-legacy way
Mistral's does; the v3 one with its ``[INST]`` control tokens) and a small byte-level BPE for the GPT-style
families, each with the family's special tokens, BOS/EOS and whether it adds BOS by itself. Parity is about the
text and where BOS comes from, so a stand-in vocabulary with the real special tokens tells the same story.

The studio side is the real path: an alias file naming the template, resolved by the EngineManager, a tiny model
with the family's tokenizer loaded by the transformers engine, and the ids its ``stream_chat`` hands to generation.
The Mistral templates are also checked token for token against mistral-common, Mistral's reference tokenizer.
"""

from __future__ import annotations

import ctypes
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from studio.aliases.templates import render_chat_template
from studio.inference.base import ChatMessage
from studio.inference.manager import EngineManager
from studio.inference.params import SamplingParams
from studio.models.registry import ModelRegistry
from studio.settings import Settings

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates"
FIXTURES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(FIXTURES_DIR.glob("*.json"))}

Conversation = list[dict[str, str]]
CONVERSATIONS: dict[str, Conversation] = {
    "system and two user turns": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ],
    "no system": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ],
    "one user turn": [{"role": "user", "content": "What is the capital of France?"}],
    "whitespace at the edges": [
        {"role": "system", "content": "  Be brief.  "},
        {"role": "user", "content": "  Hi  "},
        {"role": "assistant", "content": "  Hello!  "},
        {"role": "user", "content": " Bye\n"},
    ],
    "newlines and tabs": [
        {"role": "user", "content": "\nLine one\nLine two\n\n"},
        {"role": "assistant", "content": "\tindented\n"},
        {"role": "user", "content": "   "},
    ],
    "non-ASCII": [
        {"role": "system", "content": "Réponds en français."},
        {"role": "user", "content": "Привет 👋 — 你好"},
        {"role": "assistant", "content": "Ça va ? ✓"},
        {"role": "user", "content": "Merci"},
    ],
    "ends with the assistant": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ],
    "an empty reply": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Again"},
    ],
}

# Text the byte-level BPE is trained on: enough for real merges, deterministic, built in well under a second.
BPE_CORPUS = [
    " ".join(m["content"] for conversation in CONVERSATIONS.values() for m in conversation),
    "system user assistant model User: Assistant: GPT4 Correct USER ASSISTANT [INST] [/INST] <<SYS>>",
    "You are a helpful assistant. The capital of France is Paris. " * 4,
]


# -- the family's tokenizer ---------------------------------------------------------------------------------------
def _byte_level_bpe() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(BPE_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def _sentencepiece(model_file: str, legacy: bool, directory: Path) -> Any:
    import mistral_common
    from transformers import AutoTokenizer

    shutil.copy(Path(mistral_common.__file__).parent / "data" / model_file, directory / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "legacy": legacy,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(directory))


def build_family_tokenizer(spec: dict[str, Any], directory: Path) -> Any:
    """The stand-in for a family's tokenizer, saved in ``directory``: vocabulary, special tokens, BOS/EOS and
    whether the tokenizer adds BOS itself."""
    from transformers import AutoTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "sentencepiece":
        tokenizer = _sentencepiece(spec["model"], spec["legacy"], directory)
    else:
        tokenizer = _byte_level_bpe()
    special: dict[str, Any] = {"eos_token": spec["eos_token"]}
    if spec["bos_token"] is not None:
        special["bos_token"] = spec["bos_token"]
    if spec["special_tokens"]:
        special["additional_special_tokens"] = spec["special_tokens"]
    tokenizer.add_special_tokens(special)
    tokenizer.add_bos_token = spec["adds_bos"] and spec["bos_token"] is not None
    tokenizer.add_eos_token = False
    tokenizer.save_pretrained(str(directory))
    if spec["kind"] == "sentencepiece":
        # transformers does not save ``legacy``, and reloading a LlamaTokenizer without it rebuilds the pre-tokenizer
        # the non-legacy way; a Llama 2 kind of tokenizer must keep starting text after a special token with "▁"
        config_file = directory / "tokenizer_config.json"
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        config_file.write_text(json.dumps({**saved, "legacy": spec["legacy"]}), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(directory))  # what a model folder gives back, as the engine loads it


def make_tiny_model(directory: Path, vocab_size: int) -> None:
    """A 1-layer Llama with the tokenizer's vocabulary: the engine needs weights, the ids do not depend on them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    )
    LlamaForCausalLM(config).save_pretrained(str(directory))


# -- the references -----------------------------------------------------------------------------------------------
def fastchat_prompt(reference: dict[str, Any], conversation: Conversation, add_generation_prompt: bool) -> str:
    """FastChat's ``Conversation.get_prompt`` for ``SeparatorStyle.ADD_COLON_TWO`` (lm-sys/FastChat
    fastchat/conversation.py), fed the way its OpenAI server feeds it: a system message replaces the default one,
    user/assistant turns are appended in order, and an empty assistant turn asks for the reply."""
    system = reference["system_message"]
    messages: list[tuple[str, str | None]] = []
    for message in conversation:
        if message["role"] == "system":
            system = message["content"]
        else:
            messages.append((reference["roles"][message["role"] == "assistant"], message["content"]))
    if add_generation_prompt:
        messages.append((reference["roles"][1], None))
    seps = [reference["sep"], reference["sep2"]]
    ret = system + seps[0]
    for i, (role, text) in enumerate(messages):
        if text:
            ret += role + ": " + text + seps[i % 2]
        else:
            ret += role + ":"
    return ret


def llama_cpp_prompt(name: str, conversation: Conversation, add_generation_prompt: bool) -> str:
    """llama.cpp's built-in formatting ``name`` (``llama_chat_apply_template``, no model needed)."""
    import llama_cpp

    chat = (llama_cpp.llama_chat_message * len(conversation))(
        *[llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in conversation]
    )
    size = 1 << 16
    buffer = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(conversation), add_generation_prompt, buffer, size)
    assert 0 <= n < size, f"llama.cpp does not know the chat template '{name}'"
    return buffer.raw[:n].decode("utf-8")


def official_ids(fixture: dict[str, Any], tokenizer: Any, conversation: Conversation, generation: bool) -> list[int]:
    """The family's own ids; raises ``jinja2.TemplateError`` when the official template refuses the conversation."""
    reference = fixture["reference"]
    if reference["kind"] == "jinja":
        out = tokenizer.apply_chat_template(
            conversation, chat_template=reference["chat_template"], tokenize=True, add_generation_prompt=generation
        )
        return list(out["input_ids"])
    if reference["kind"] == "fastchat":
        prompt = fastchat_prompt(reference, conversation, generation)
    else:
        prompt = llama_cpp_prompt(reference["name"], conversation, generation)
    return list(tokenizer(prompt)["input_ids"])  # as FastChat and llama.cpp tokenize: the tokenizer adds BOS


# -- the studio side ------------------------------------------------------------------------------------------------
class Family:
    """One fixture's tiny model, loaded through an alias by the studio's EngineManager."""

    def __init__(self, manager: EngineManager, alias: str, fixture: dict[str, Any]) -> None:
        self.manager = manager
        self.alias = alias
        self.fixture = fixture
        self.engine: Any = manager.load(alias)
        self.tokenizer: Any = self.engine.tokenizer

    def studio_ids(self, conversation: Conversation, generation: bool, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        resolved = self.manager.resolve(self.alias)
        template = self.manager.template_for(resolved.chat_template, resolved.entry)
        assert template is not None
        messages = [ChatMessage(m["role"], m["content"]) for m in conversation]  # type: ignore[arg-type]
        if not generation:  # a training-style text (the engine's chat always asks for a reply)
            bos = template.bos_token if template.bos_token is not None else self.tokenizer.bos_token
            eos = template.eos_token if template.eos_token is not None else self.tokenizer.eos_token
            text = render_chat_template(
                template.source,
                conversation,
                add_generation_prompt=False,
                bos_token=str(bos or ""),
                eos_token=str(eos or ""),
            )
            return list(self.engine.encode(text, special=False))
        fed: list[list[int]] = []

        def capture(ids: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[Any]:
            fed.append(list(ids))
            return iter(())

        monkeypatch.setattr(self.engine, "_stream_ids", capture)
        self.engine.stream_chat(messages, SamplingParams(max_tokens=1), None, chat_template=template)
        assert len(fed) == 1
        return fed[0]


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Family]]:
    home = tmp_path_factory.mktemp("parity-home")
    settings = Settings(home=home, hf_cache=home / "hf-cache", dtype="float32")
    settings.ensure_dirs()
    for name, fixture in FIXTURES.items():
        model_dir = home / "models" / f"parity--{name}"
        tokenizer = build_family_tokenizer(fixture["tokenizer"], model_dir)
        make_tiny_model(model_dir, len(tokenizer))
        alias = {
            "alias": f"parity-{name}",
            "repo": str(model_dir),
            "chat_template": fixture["template_id"],
            "context_params": {"engine": "transformers", "dtype": "float32"},
        }
        (home / "aliases" / f"parity-{name}.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    manager = EngineManager(settings, ModelRegistry(settings))
    try:
        yield {name: Family(manager, f"parity-{name}", fixture) for name, fixture in FIXTURES.items()}
    finally:
        manager.close()


def _shown(tokenizer: Any, ids: list[int]) -> str:
    return repr(tokenizer.decode(ids, skip_special_tokens=False))


# -- the tests ----------------------------------------------------------------------------------------------------
def test_every_builtin_template_has_an_official_reference() -> None:
    from studio.aliases.templates import BUILTIN_TEMPLATES

    assert {fixture["template_id"] for fixture in FIXTURES.values()} == set(BUILTIN_TEMPLATES)
    for name, fixture in FIXTURES.items():
        assert fixture["model"] and len(fixture["source"]) > 40, f"{name}.json must say where its text came from"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_token_ids_equal_the_official_template(
    name: str, families: dict[str, Family], monkeypatch: pytest.MonkeyPatch
) -> None:
    family = families[name]
    tokenizer = family.tokenizer
    bos_id = tokenizer.bos_token_id
    compared = 0
    for label, conversation in CONVERSATIONS.items():
        for generation in (True, False):
            try:
                expected = official_ids(family.fixture, tokenizer, conversation, generation)
            except jinja2.TemplateError:
                continue  # the official template refuses it (Gemma 2 and a system message)
            got = family.studio_ids(conversation, generation, monkeypatch)
            assert got == expected, (
                f"{label!r}, add_generation_prompt={generation}:\n studio   {_shown(tokenizer, got)}\n"
                f" official {_shown(tokenizer, expected)}"
            )
            if bos_id is not None:
                assert got[:2] != [bos_id, bos_id], f"{label!r}: BOS doubled"
            compared += 1
    assert compared >= len(CONVERSATIONS), f"only {compared} conversations could be compared"


def test_encoding_the_prompt_with_special_tokens_would_double_bos(families: dict[str, Family]) -> None:
    # Why the engine encodes chat prompts without special tokens: Llama 3's tokenizer adds BOS by itself and the
    # template already wrote one.
    family = families["llama3"]
    text = family.engine.render_chat([ChatMessage("user", "Hi")], family.manager.template_for("llama3", _entry(family)))
    bos_id = family.tokenizer.bos_token_id
    assert family.tokenizer(text)["input_ids"][:2] == [bos_id, bos_id]
    assert family.engine.encode(text, special=False)[:2] != [bos_id, bos_id]


def _entry(family: Family) -> Any:
    return family.manager.resolve(family.alias).entry


MISTRAL_COMMON_CONVERSATIONS = ["system and two user turns", "no system", "one user turn", "non-ASCII"]


@pytest.mark.parametrize(
    ("name", "model_file"),
    [("mistral-v0.2", "tokenizer.model.v1"), ("mistral-v0.3", "mistral_instruct_tokenizer_240323.model.v3")],
)
def test_mistral_templates_match_mistral_common(
    name: str, model_file: str, families: dict[str, Family], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mistral_common
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.from_file(str(Path(mistral_common.__file__).parent / "data" / model_file))
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    for label in MISTRAL_COMMON_CONVERSATIONS:
        conversation = CONVERSATIONS[label]
        request = ChatCompletionRequest(messages=[kinds[m["role"]](content=m["content"]) for m in conversation])
        expected = reference.encode_chat_completion(request).tokens
        assert families[name].studio_ids(conversation, True, monkeypatch) == expected, label


def test_a_user_template_file_is_used_with_the_tokenizers_own_tokens(
    families: dict[str, Family], monkeypatch: pytest.MonkeyPatch
) -> None:
    family = families["llama2"]
    home = family.manager.settings.home
    folder = home / "chat_templates"
    folder.mkdir(exist_ok=True)
    source = (
        "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}{{ eos_token }}{% endfor %}"
    )
    (folder / "house-style.jinja").write_text(source, encoding="utf-8")
    alias = {
        "alias": "parity-house-style",
        "repo": str(family.engine.info.path),
        "chat_template": "house-style",
        "context_params": {"engine": "transformers", "dtype": "float32"},
    }
    (home / "aliases" / "parity-house-style.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    user = Family(family.manager, "parity-house-style", family.fixture)
    conversation = CONVERSATIONS["no system"]
    tokenizer = user.tokenizer
    expected = tokenizer.apply_chat_template(conversation, chat_template=source, tokenize=True)["input_ids"]
    got = user.studio_ids(conversation, True, monkeypatch)
    assert got == list(expected)
    template = user.manager.template_for("house-style", _entry(user))
    assert template is not None and template.bos_token is None  # the tokenizer's own BOS/EOS, not a built-in's
    messages = [ChatMessage(m["role"], m["content"]) for m in conversation]  # type: ignore[arg-type]
    assert user.engine.render_chat(messages, template) == "<s><user>Hi</s><assistant>Hello!</s><user>How are you?</s>"
