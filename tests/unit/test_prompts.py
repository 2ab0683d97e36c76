"""Playground prompting: use cases, templates, counting, export/import, snippets and batch runs (no model)."""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml

from studio.api.schemas import ChatCompletionRequest
from studio.errors import GenerationError, NotFoundError, ValidationError
from studio.inference.base import ChatMessage, GenerationEnd, GenerationStart, TokenEvent
from studio.inference.params import SamplingParams
from studio.inference.stats import GenerationResult
from studio.playground.chat import parse_stop_sequences
from studio.playground.prompts import (
    ALPACA_PREAMBLE,
    BATCH_COLUMNS,
    MAX_BATCH_PROMPTS,
    BatchRow,
    FewShotExample,
    PromptSpec,
    batch_csv,
    batch_table,
    build_prompt,
    count_chars_and_tokens,
    export_json,
    export_yaml,
    import_prompt,
    load_use_cases,
    parse_prompt_list,
    parse_use_cases,
    run_batch,
    save_batch_csv,
    save_prompt,
    snippets,
    to_openai_request,
    use_case,
)

PLAYGROUND_INPUTS = [
    "message",
    "history",
    "model",
    "system_prompt",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "repetition_penalty",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
]


# -- use cases -------------------------------------------------------------------------------------------------
def test_the_six_use_cases_in_file_order() -> None:
    assert list(load_use_cases()) == [
        "Chatbot",
        "Code Generation",
        "Summarization",
        "Question Answering",
        "Creative Writing",
        "Domain Adaptation",
    ]


@pytest.mark.parametrize("name", list(load_use_cases()))
def test_every_use_case_is_complete_and_its_examples_build(name: str) -> None:
    uc = use_case(name)
    assert uc.description and uc.system_prompt
    assert 2 <= len(uc.example_prompts) <= 3
    assert {"temperature", "top_p", "top_k", "max_tokens", "repetition_penalty"} <= set(uc.params)
    assert isinstance(uc.sampling_params(), SamplingParams)
    for prompt in uc.example_prompts:
        built = build_prompt(uc.prompt_template, prompt, system_prompt=uc.system_prompt, examples=uc.few_shot)
        assert prompt in (built.text or built.messages[-1].content)  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "template", "low", "high", "language"),
    [
        ("Chatbot", "chat", 0.5, 0.9, None),
        ("Code Generation", "instruction", 0.2, 0.2, "python"),
        ("Summarization", "instruction", 0.0, 0.4, None),
        ("Question Answering", "chat", 0.0, 0.4, None),
        ("Creative Writing", "chat", 0.9, 1.0, None),
        ("Domain Adaptation", "raw", 0.3, 0.8, None),
    ],
)
def test_use_case_settings_suit_the_task(name: str, template: str, low: float, high: float, language: Any) -> None:
    uc = use_case(name)
    assert uc.prompt_template == template
    assert low <= uc.params["temperature"] <= high
    assert uc.output_language == language


def test_summarization_has_a_few_shot_pair() -> None:
    (ex,) = use_case("Summarization").few_shot
    assert ex.input.startswith("Summarize:") and ex.output


def test_use_case_settings_override_defaults_and_requests_override_them() -> None:
    p = use_case("Code Generation").sampling_params(max_tokens=64, seed=None)
    assert (p.temperature, p.max_tokens, p.stop, p.seed) == (0.2, 64, ["### Instruction:"], None)


def test_use_case_lookup_ignores_case_and_unknown_names_list_the_known_ones() -> None:
    assert use_case("code generation").name == "Code Generation"
    with pytest.raises(ValidationError) as err:
        use_case("Poetry")
    assert err.value.param == "use_case"
    assert "Poetry" in err.value.message and "Chatbot" in err.value.message


def test_load_use_cases_hands_out_a_copy() -> None:
    load_use_cases().clear()
    assert len(load_use_cases()) == 6


_GOOD = "prompt_template: chat\ndescription: d\nexample_prompts: [hi]\n"


@pytest.mark.parametrize(
    ("text", "param", "fragment"),
    [
        ("X:\n  " + _GOOD.replace("\n", "\n  ") + "params: {temperature: 5}\n", "params.temperature", "'X'"),
        ("X:\n  " + _GOOD.replace("\n", "\n  ") + "params: {warmth: 1}\n", "params.warmth", "unknown parameter"),
        ("X:\n  " + _GOOD.replace("\n", "\n  ") + "colour: red\n", "colour", "unknown"),
        ("X:\n  " + _GOOD.replace("chat", "poem").replace("\n", "\n  "), "prompt_template", "'X'"),
        ("X:\n  " + _GOOD.replace("[hi]", "[]").replace("\n", "\n  "), "example_prompts", "'X'"),
        ("X:\n\tdescription: tab-indented\n", "use_cases", "line 2"),
        ("- a list\n", "use_cases", "mapping"),
        ("X: 3\n", "use_cases", "'X'"),
    ],
)
def test_bad_use_case_files_name_the_field(text: str, param: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_use_cases(text, "cases.yaml")
    assert err.value.param == param
    assert fragment in err.value.message and "cases.yaml" in err.value.message


# -- templates -------------------------------------------------------------------------------------------------
SHOTS = [FewShotExample(input="2+2?", output="4")]
HISTORY: list[Any] = [
    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ChatMessage("assistant", "Hello!"),
]


def test_chat_template_orders_system_examples_history_prompt() -> None:
    built = build_prompt("chat", "3+3?", system_prompt="Be brief.", examples=SHOTS, history=HISTORY)
    assert built.kind == "chat" and built.text is None
    assert built.messages == [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "2+2?"),
        ChatMessage("assistant", "4"),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("user", "3+3?"),
    ]


def test_chat_template_without_system_prompt_sends_no_system_message() -> None:
    built = build_prompt("chat", "Hi", system_prompt="  ")
    assert built.messages == [ChatMessage("user", "Hi")]


def test_instruction_template_is_alpaca_text() -> None:
    built = build_prompt("instruction", "3+3?", system_prompt="Be brief.", examples=[{"input": "2+2?", "output": "4"}])
    assert built.kind == "completion" and built.messages is None
    assert built.text == (
        "Be brief.\n\n### Instruction:\n2+2?\n\n### Response:\n4\n\n### Instruction:\n3+3?\n\n### Response:\n"
    )


def test_instruction_template_defaults_to_alpaca_preamble_and_keeps_history() -> None:
    built = build_prompt("instruction", "And you?", history=HISTORY)
    assert built.text == (
        f"{ALPACA_PREAMBLE}\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n"
        "### Instruction:\nAnd you?\n\n### Response:\n"
    )


def test_raw_template_is_verbatim_after_preamble_and_examples_and_ignores_history() -> None:
    built = build_prompt("raw", "3+3 =", system_prompt="Arithmetic.", examples=SHOTS, history=HISTORY)
    assert built.kind == "completion"
    assert built.text == "Arithmetic.\n\nInput: 2+2?\nOutput: 4\n\n3+3 ="
    assert build_prompt("raw", "  keep my spaces ").text == "  keep my spaces "


@pytest.mark.parametrize("template", ["chat", "instruction", "raw"])
def test_empty_prompt_is_refused(template: Any) -> None:
    with pytest.raises(ValidationError) as err:
        build_prompt(template, " \n ")
    assert err.value.param == "prompt"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"template": "alpaca"}, "template"),
        ({"history": [{"role": "tool", "content": "x"}]}, "history"),
        ({"examples": [{"input": "only input"}]}, "output"),
    ],
)
def test_bad_template_arguments_name_the_field(kwargs: dict[str, Any], param: str) -> None:
    args: dict[str, Any] = {"template": "chat", **kwargs}
    with pytest.raises(ValidationError) as err:
        build_prompt(args.pop("template"), "hi", **args)
    assert err.value.param == param


# -- counting --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A real Hugging Face fast tokenizer over a tiny word vocabulary that adds a BOS token by default."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<s>": 1, "hello": 2, "world": 3, ",": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("hello, world", (12, 3)), ("hello héllo", (11, 2)), ("", (0, 0))],
)
def test_count_chars_and_tokens_excludes_special_tokens(tokenizer: Any, text: str, expected: tuple) -> None:
    assert len(tokenizer("hello")["input_ids"]) == 2  # the BOS the count must leave out
    assert count_chars_and_tokens(text, tokenizer) == expected


def test_count_without_tokenizer_gives_characters_only() -> None:
    assert count_chars_and_tokens("héllo 👋", None) == (7, None)


# -- export / import -------------------------------------------------------------------------------------------
def chat_spec(**overrides: Any) -> PromptSpec:
    fields: dict[str, Any] = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "template": "chat",
        "prompt": 'Say "hi" in French\nplease',
        "system_prompt": "You're terse.",
        "examples": [{"input": "Say yes", "output": "Oui"}],
        "params": {"temperature": 0, "top_k": 20, "repetition_penalty": 1.1, "stop": "\n\n", "seed": 7},
    }
    return PromptSpec.model_validate({**fields, **overrides})


def test_openai_request_for_chat() -> None:
    body = to_openai_request(chat_spec())
    assert body == {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "messages": [
            {"role": "system", "content": "You're terse."},
            {"role": "user", "content": "Say yes"},
            {"role": "assistant", "content": "Oui"},
            {"role": "user", "content": 'Say "hi" in French\nplease'},
        ],
        "temperature": 0.0,
        "top_k": 20,
        "repetition_penalty": 1.1,
        "stop": ["\n\n"],
        "seed": 7,
    }
    ChatCompletionRequest.model_validate(body)  # what our /v1/chat/completions accepts


@pytest.mark.parametrize("template", ["instruction", "raw"])
def test_openai_request_sends_completion_templates_as_one_user_message(template: Any) -> None:
    spec = chat_spec(template=template, params={})
    body = to_openai_request(spec)
    built = build_prompt(template, spec.prompt, system_prompt=spec.system_prompt, examples=spec.examples)
    assert body == {"model": spec.model, "messages": [{"role": "user", "content": built.text}]}
    ChatCompletionRequest.model_validate(body)


def test_unset_params_are_left_out_of_the_spec() -> None:
    spec = chat_spec(params={"temperature": 0.5, "seed": None})
    assert spec.params == {"temperature": 0.5}


@pytest.mark.parametrize("export", [export_json, export_yaml])
def test_export_import_round_trip(export: Any) -> None:
    spec = chat_spec(template="instruction")
    assert import_prompt(export(spec)) == spec


def test_json_and_yaml_exports_hold_the_same_content() -> None:
    spec = chat_spec()
    assert json.loads(export_json(spec)) == yaml.safe_load(export_yaml(spec))
    assert "prompt: |-\n  Say" in export_yaml(spec)  # multi-line text stays readable


def test_save_prompt_picks_the_format_from_the_suffix(tmp_path: Path) -> None:
    spec = chat_spec()
    for name in ("p.json", "p.yaml"):
        path = save_prompt(spec, tmp_path / name)
        assert import_prompt(path.read_text(encoding="utf-8")) == spec
    assert (tmp_path / "p.json").read_text(encoding="utf-8").startswith("{")


def test_import_openai_body_turns_pairs_into_examples() -> None:
    body = {
        "model": "default",
        "messages": [
            {"role": "developer", "content": "Rule one."},
            {"role": "system", "content": "Rule two."},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": [{"type": "text", "text": "A1"}]},
            {"role": "user", "content": "Q2"},
        ],
        "max_completion_tokens": 40,
        "temperature": 0.3,
        "stream": True,
        "n": 1,
    }
    spec = import_prompt(json.dumps(body))
    assert spec == PromptSpec(
        model="default",
        template="chat",
        prompt="Q2",
        system_prompt="Rule one.\n\nRule two.",
        examples=[FewShotExample(input="Q1", output="A1")],
        params={"max_tokens": 40, "temperature": 0.3},
    )
    assert to_openai_request(spec)["messages"][1:] == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]


def test_import_openai_body_written_as_yaml() -> None:
    spec = import_prompt("model: m\nmessages:\n  - role: user\n    content: hi\ntop_k: 5\n")
    assert (spec.model, spec.prompt, spec.params) == ("m", "hi", {"top_k": 5})


def _msgs(*roles: str) -> str:
    return json.dumps({"model": "m", "messages": [{"role": r, "content": r} for r in roles]})


@pytest.mark.parametrize(
    ("text", "param", "fragment"),
    [
        ("", "prompt_file", "empty"),
        ('{\n  "prompt": "hi",\n  "model": nope\n}', "json", "line 3, column 12"),
        ("prompt: hi\nmodel: [unclosed\n", "yaml", "line 3"),
        ("- just\n- a list\n", "prompt_file", "'messages'"),
        ('{"prompt": "hi", "params": {"temperature": 9}}', "params.temperature", "less than or equal to 2"),
        ('{"prompt": "hi", "params": {"warmth": 1}}', "params.warmth", "unknown parameter"),
        ('{"prompt": "hi", "colour": "red"}', "colour", "unknown parameter"),
        ('{"prompt": "hi", "template": "alpaca"}', "template", "'chat'"),
        ('{"prompt": "  "}', "prompt", "empty"),
        ('{"model": "m"}', "prompt", "Field required"),
        ('{"prompt": "hi", "examples": [{"input": "x"}]}', "examples.0.output", "Field required"),
        (_msgs("user", "assistant"), "messages", "last message"),
        (_msgs("user", "user"), "messages.0", "messages[0] has no reply"),
        (_msgs("assistant", "user", "user"), "messages.0", "messages[0] and messages[1]"),
        (_msgs("user", "tool", "user"), "messages.1.role", "'tool'"),
        ('{"model": "m", "messages": []}', "messages", "non-empty"),
        ('{"model": "m", "messages": ["hi"]}', "messages.0", "object"),
        ('{"model": "m", "messages": [{"role": "user", "content": "q"}], "tools": []}', "tools", "not supported"),
        ('{"model": "m", "messages": [{"role": "user", "content": "q"}], "n": 2}', "n", "not supported"),
        ('{"messages": [{"role": "user", "content": "q"}], "temperature": -1}', "params.temperature", "greater"),
    ],
)
def test_malformed_imports_name_the_field_or_line(text: str, param: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        import_prompt(text, "upload.json")
    assert err.value.param == param
    assert fragment in err.value.message, err.value.message
    assert err.value.message.startswith("upload.json")


# -- snippets --------------------------------------------------------------------------------------------------
def test_openai_snippet_runs_and_sends_the_request_body(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import openai

    spec = chat_spec()
    code = snippets(spec, base_url="http://studio.test:9000/")["openai"]
    compile(code, "openai_snippet.py", "exec")
    seen: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": spec.model,
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Salut"}}
                ],
            },
        )

    real = openai.OpenAI

    def fake_client(**kwargs: Any) -> openai.OpenAI:
        return real(**kwargs, http_client=httpx.Client(transport=httpx.MockTransport(reply)))

    monkeypatch.setattr(openai, "OpenAI", fake_client)
    monkeypatch.setenv("STUDIO_API_KEY", "sk-test")
    exec(code, {"__name__": "__main__"})
    (request,) = seen
    assert str(request.url) == "http://studio.test:9000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert json.loads(request.content) == to_openai_request(spec)
    assert capsys.readouterr().out == "Salut\n"


def test_curl_snippet_posts_the_request_body_as_json() -> None:
    spec = chat_spec(prompt='It\'s "quoted" and $HOME stays literal')
    code = snippets(spec)["curl"]
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", "-c", code], check=True)
    args = shlex.split(code.replace("\\\n", " "))
    assert args[:2] == ["curl", "http://127.0.0.1:7860/v1/chat/completions"]
    assert json.loads(args[args.index("-d") + 1]) == to_openai_request(spec)


class FakeGradioClient:
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, src: str) -> None:
        self.src = src

    def predict(self, **kwargs: Any) -> tuple[list[dict[str, Any]], str, str]:
        self.calls.append((self.src, kwargs))
        return [{"role": "assistant", "content": "Salut"}], "prompt 3 tok", ""


@pytest.mark.parametrize("template", ["chat", "instruction"])
def test_gradio_client_snippet_calls_playground_generate_by_name(
    template: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    spec = chat_spec(template=template)
    code = snippets(spec)["gradio_client"]
    call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and n.keywords)
    assert [k.arg for k in call.keywords if k.arg != "api_name"] == PLAYGROUND_INPUTS
    monkeypatch.setitem(sys.modules, "gradio_client", types.SimpleNamespace(Client=FakeGradioClient))
    FakeGradioClient.calls = []
    exec(code, {"__name__": "__main__"})
    ((src, kwargs),) = FakeGradioClient.calls
    assert src == "http://127.0.0.1:7860/"
    assert kwargs["api_name"] == "/playground_generate"
    assert parse_stop_sequences(kwargs["stop"]) == ["\n\n"]
    assert (kwargs["temperature"], kwargs["top_k"], kwargs["seed"], kwargs["top_p"]) == (0.0, 20, 7, 0.9)
    if template == "chat":
        assert (kwargs["message"], kwargs["system_prompt"]) == (spec.prompt, spec.system_prompt)
        assert kwargs["history"] == [{"role": "user", "content": "Say yes"}, {"role": "assistant", "content": "Oui"}]
    else:
        assert kwargs["message"] == to_openai_request(spec)["messages"][0]["content"]
        assert (kwargs["system_prompt"], kwargs["history"]) == ("", [])
    assert capsys.readouterr().out == "Salut\nprompt 3 tok\n"


@pytest.mark.parametrize("stops", [["\n\n"], ["é\t", "END"], ["a\\b"], []])
def test_gradio_snippet_stop_field_round_trips_through_the_playground_parser(stops: list[str]) -> None:
    code = snippets(chat_spec(params={"stop": stops}))["gradio_client"]
    call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and n.keywords)
    stop = next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "stop")
    assert parse_stop_sequences(stop) == stops


def test_gradio_snippet_seed_is_random_when_unset() -> None:
    code = snippets(chat_spec(params={}))["gradio_client"]
    assert "    seed=-1,\n" in code and "    temperature=0.7,\n" in code  # studio defaults fill the form


# -- batch -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("p.txt", "first\n\n  second  \n", ["first", "second"]),
        ("p.csv", '\ufeffid,Prompt\n1,"two\nlines"\n2,\n3,third\n', ["two\nlines", "third"]),
        ("p.jsonl", '{"prompt": "a"}\n\n{"prompt": "b", "id": 2}\n', ["a", "b"]),
        ("p.md", "x\ny\n", ["x", "y"]),
    ],
)
def test_parse_prompt_list_reads_files(tmp_path: Path, name: str, content: str, expected: list[str]) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert parse_prompt_list(path=path) == expected


def test_parse_prompt_list_reads_pasted_lines() -> None:
    assert parse_prompt_list("one\r\n\n two \n") == ["one", "two"]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("p.txt", "\n \n", "no prompts"),
        ("p.csv", "id,text\n1,hi\n", "'id', 'text'"),
        ("p.jsonl", '{"prompt": "a"}\nnot json\n', "line 2"),
        ("p.jsonl", '{"text": "a"}\n', "line 1"),
        ("p.txt", "p\n" * (MAX_BATCH_PROMPTS + 1), f"at most {MAX_BATCH_PROMPTS}"),
    ],
)
def test_parse_prompt_list_errors(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError) as err:
        parse_prompt_list(path=path)
    assert err.value.param == "prompts"
    assert fragment in err.value.message


def test_parse_prompt_list_refuses_nothing_both_or_a_missing_file(tmp_path: Path) -> None:
    for kwargs in ({}, {"text": "  "}, {"text": "a", "path": tmp_path / "x.txt"}):
        with pytest.raises(ValidationError):
            parse_prompt_list(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match=r"x\.txt"):
        parse_prompt_list(path=tmp_path / "x.txt")
    assert len(parse_prompt_list("p\n" * MAX_BATCH_PROMPTS)) == MAX_BATCH_PROMPTS


def fake_result(prompt: str, prompt_tokens: int = 5) -> GenerationResult:
    """A real GenerationResult for the reply ``prompt.upper()``, one token per word, 10 ms apart."""
    result = GenerationResult()
    result.add(GenerationStart(prompt_tokens=prompt_tokens, started=100.0))
    words = prompt.upper().split(" ")
    for i, word in enumerate(words):
        text = word if i == 0 else " " + word
        result.add(TokenEvent(token_id=i, token=text, text=text, logprob=-0.1, top_logprobs=(), time=100.2 + i / 100))
    result.add(GenerationEnd("length", time=100.5))
    return result


def test_run_batch_records_every_prompt_and_keeps_going_after_a_failure() -> None:
    def generate(prompt: str) -> GenerationResult:
        if prompt == "boom":
            raise GenerationError("the engine stopped")
        if prompt == "crash":
            raise RuntimeError("CUDA error")
        return fake_result(prompt)

    progress: list[tuple[int, int]] = []
    rows = run_batch(
        ["hello big world", "boom", "crash", "ok"], generate, on_progress=lambda d, t: progress.append((d, t))
    )
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [r.index for r in rows] == [1, 2, 3, 4]
    first = rows[0]
    assert (first.prompt, first.output, first.prompt_tokens, first.completion_tokens) == (
        "hello big world",
        "HELLO BIG WORLD",
        5,
        3,
    )
    assert first.ttft_s == pytest.approx(0.2) and first.tokens_per_s == pytest.approx(100.0)
    assert first.total_s == pytest.approx(0.5) and (first.finish_reason, first.error) == ("length", None)
    assert (rows[1].error, rows[1].finish_reason, rows[1].output, rows[1].completion_tokens) == (
        "the engine stopped",
        "error",
        "",
        None,
    )
    assert rows[2].error == "CUDA error"
    assert rows[3].output == "OK" and rows[3].tokens_per_s is None  # one token: no decode speed


def test_run_batch_stops_when_cancelled() -> None:
    cancel = threading.Event()

    def generate(prompt: str) -> GenerationResult:
        cancel.set()
        return fake_result(prompt)

    rows = run_batch(["a", "b", "c"], generate, cancel=cancel)
    assert [r.prompt for r in rows] == ["a"]


def _rows() -> list[BatchRow]:
    return run_batch(
        ['say "hi", then\nbye', "fail"],
        lambda p: fake_result(p) if p != "fail" else (_ for _ in ()).throw(GenerationError("out of memory")),
    )


def test_batch_csv_has_a_header_and_round_trips(tmp_path: Path) -> None:
    import csv
    import io

    text = batch_csv(_rows())
    records = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == list(BATCH_COLUMNS)
    assert records[0]["prompt"] == 'say "hi", then\nbye' and records[0]["output"] == 'SAY "HI", THEN\nBYE'
    assert records[0]["completion_tokens"] == "3" and records[0]["error"] == ""
    assert records[1]["error"] == "out of memory" and records[1]["ttft_s"] == ""
    assert save_batch_csv(_rows(), tmp_path / "out.csv").read_text(encoding="utf-8").startswith("index,prompt,")


def test_batch_table_rounds_times_and_blanks_missing_values() -> None:
    table = batch_table(_rows())
    assert len(table) == 2 and all(len(r) == len(BATCH_COLUMNS) for r in table)
    col = {name: i for i, name in enumerate(BATCH_COLUMNS)}
    assert table[0][col["ttft_s"]] == 0.2 and table[0][col["total_s"]] == 0.5
    assert table[0][col["tokens_per_s"]] == 100.0
    assert table[1][col["completion_tokens"]] == "" and table[1][col["error"]] == "out of memory"


def test_a_remote_models_label_wraps_between_its_name_and_url() -> None:
    """The conversations table showed 'browser-q8@http://127.0.0.1:8100/v1' (a chat with a deployment) as one
    unbreakable word wider than its column (the layout browser test measured 227 px needed, 194 px room)."""
    from studio.playground.prompt_runner import model_label

    assert model_label("browser-q8@http://127.0.0.1:8100/v1") == "browser-q8 @ 127.0.0.1:8100/v1"
    assert model_label("lab@https://llm.example.org/v1") == "lab @ llm.example.org/v1"
    assert model_label("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_label("HuggingFaceTB/SmolLM2-135M-Instruct@llamacpp") == "HuggingFaceTB/SmolLM2-135M-Instruct@llamacpp"
