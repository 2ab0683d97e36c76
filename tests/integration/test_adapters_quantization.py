"""LoRA adapters (load, hot-swap, disable, compare with base), bitsandbytes quantization, memory figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.context import AppContext
from studio.errors import ForbiddenError, ValidationError
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.monitor import memory_snapshot

pytestmark = pytest.mark.slow

PROMPT = [ChatMessage("user", "What is the capital of France?")]
GREEDY = make_sampling_params(temperature=0, max_tokens=12)


def reply(ctx: AppContext, adapter: str | None = None) -> str:
    return ctx.engines.start_chat("default", PROMPT, GREEDY, adapter=adapter).wait().text


def test_adapter_changes_output_swaps_and_disables(private_ctx: AppContext, lora_adapters: tuple[Path, Path]) -> None:
    ctx = private_ctx
    engine = ctx.engines.load("default")
    base = reply(ctx)
    assert "Paris" in base

    assert ctx.engines.load_adapter("default", "lora-a") == "lora-a"
    with_a = reply(ctx)
    assert with_a != base  # the adapter really changes the output

    # hot swap by name (a second adapter loaded from STUDIO_HOME/adapters): the base is not reloaded
    assert ctx.engines.swap_adapter("default", "lora-b") == "lora-b"
    assert ctx.engines.engine("default") is engine
    with_b = reply(ctx)
    assert with_b not in (base, with_a)
    assert ctx.engines.swap_adapter("default", "lora-a") == "lora-a"
    assert reply(ctx) == with_a

    # disabling adapters gives exactly the base output, per request or as the active choice
    assert reply(ctx, adapter="base") == base
    assert reply(ctx) == with_a  # a per-request choice does not change the active adapter
    assert ctx.engines.swap_adapter("default", None) is None
    assert reply(ctx) == base
    info = ctx.engines.loaded()[0]
    assert info.extra["adapters"] == "lora-a,lora-b" and info.extra["active_adapter"] == ""


def test_adapter_loaded_mid_generation_leaves_the_running_reply_alone(
    private_ctx: AppContext, lora_adapters: tuple[Path, Path]
) -> None:
    """Loading an adapter takes its turn between two decode steps of a running base generation (it does not wait
    for the whole reply), and the running reply keeps its base weights on every later step; an unload waits
    until the running generation is done."""
    import threading

    from studio.inference.base import TokenEvent

    ctx = private_ctx
    params = make_sampling_params(temperature=0, max_tokens=40, stop=[])
    story = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
    ctx.engines.load("default")
    alone = ctx.engines.start_chat("default", story, params, adapter="base").wait().text

    handle = ctx.engines.start_chat("default", story, params, adapter="base")
    stream = iter(handle)
    while not isinstance(next(stream), TokenEvent):  # the base generation is under way
        pass
    assert ctx.engines.load_adapter("default", "lora-a") == "lora-a"
    assert not handle.result.finished, "loading the adapter waited for the whole reply"
    unloaded = threading.Event()
    unloader = threading.Thread(target=lambda: (ctx.engines.unload("default"), unloaded.set()))
    unloader.start()
    for _ in stream:  # an unload under the running generation would end it with an error here
        pass
    unloader.join(60)
    assert unloaded.is_set()
    assert handle.result.stats.finish_reason == "length"
    assert handle.result.text == alone  # every step after the load still ran on the base weights


def _peft_generate(base_dir: Path, adapter: Path | None, max_new_tokens: int = 10) -> str:
    """What PEFT's own ``generate`` answers (greedy) — the reference for the engine's decode loop."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT[0].content}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


def test_prefix_tuning_adapter_answers_as_peft_does_next_to_a_lora(
    private_ctx: AppContext, lora_adapters: tuple[Path, Path]
) -> None:
    """A prefix-tuning adapter (the Fine-Tune tab's "prefix" method) serves in the engine's KV-cached loop exactly
    as PEFT generates with it, loaded next to a LoRA on the same model; the base and the LoRA stay exact; an IA3
    adapter cannot join LoRAs on one model, and says so."""
    from tests.conftest import make_prompt_adapter

    ctx = private_ctx
    engine = ctx.engines.load("default")
    base_dir = engine.info.path
    # adapters are read from the model roots: this context's STUDIO_HOME
    prefix = make_prompt_adapter(base_dir, ctx.settings.home / "own" / "prefix-a", "prefix")
    ia3 = make_prompt_adapter(base_dir, ctx.settings.home / "own" / "ia3-a", "ia3")
    params = make_sampling_params(temperature=0, max_tokens=10, stop=[])

    def answer(adapter: str) -> str:
        return ctx.engines.start_chat("default", PROMPT, params, adapter=adapter).wait().text

    ctx.engines.load_adapter("default", "lora-a")
    assert ctx.engines.load_adapter("default", str(prefix)) == "prefix-a"
    expected = {name: _peft_generate(base_dir, path) for name, path in [("base", None), ("lora-a", lora_adapters[0])]}
    expected["prefix-a"] = _peft_generate(base_dir, prefix)
    assert len(set(expected.values())) == 3, expected  # each really answers differently
    for name, text in expected.items():
        assert answer(name) == text, name
    with pytest.raises(ValidationError, match=r"IA3.*LORA adapters \(lora-a\).*cannot mix") as err:
        ctx.engines.load_adapter("default", str(ia3))
    assert err.value.param == "adapter"
    assert answer("lora-a") == expected["lora-a"] and answer("prefix-a") == expected["prefix-a"]
    with pytest.raises(ValidationError, match="prompt-learning adapter 'prefix-a'"):
        ctx.engines.attention_for_reply("default", [1, 2], messages=PROMPT, adapter="prefix-a")


def test_compare_with_base_reports_both_speeds(private_ctx: AppContext, lora_adapters: tuple[Path, Path]) -> None:
    ctx = private_ctx
    ctx.engines.load("default", adapter="lora-a")
    with_adapter, base = ctx.engines.compare_with_base("default", PROMPT, GREEDY)
    assert "Paris" in base.text and with_adapter.text != base.text
    assert with_adapter.stats.tokens_per_s and base.stats.tokens_per_s


def test_bad_adapters_are_clear_errors(private_ctx: AppContext, tmp_path: Path) -> None:
    ctx = private_ctx
    ctx.engines.load("default")
    with pytest.raises(ValidationError, match="no folder") as info:
        ctx.engines.load_adapter("default", str(ctx.settings.home / "nope"))
    assert info.value.param == "adapter"
    with pytest.raises(ForbiddenError):
        ctx.engines.load_adapter("default", str(tmp_path / "nope"))  # outside the model roots
    (ctx.settings.home / "empty").mkdir()
    with pytest.raises(ValidationError, match=r"adapter_config\.json"):
        ctx.engines.load_adapter("default", str(ctx.settings.home / "empty"))
    with pytest.raises(ValidationError, match="not loaded"):
        reply(ctx, adapter="lora-zzz")


def test_adapter_for_another_base_model_is_rejected(private_ctx: AppContext, tmp_path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import make_lora_adapter

    torch.manual_seed(0)
    tiny = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=49152,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    tiny.save_pretrained(str(tmp_path / "tiny"))
    ctx = private_ctx
    adapter = make_lora_adapter(tmp_path / "tiny", ctx.settings.home / "tiny-lora", seed=0)
    ctx.engines.load("default")
    with pytest.raises(ValidationError, match="does not fit") as info:
        ctx.engines.load_adapter("default", str(adapter))
    assert info.value.param == "adapter"
    assert "Paris" in reply(ctx)  # the model is still usable


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_bitsandbytes_quantization_loads_smaller_and_still_answers(private_ctx: AppContext, quantization: str) -> None:
    ctx = private_ctx
    full = ctx.engines.load("default").info.memory_bytes
    engine = ctx.engines.load("default", quantization=quantization)
    assert engine.info.extra["quantization"] == quantization
    assert engine.info.memory_bytes < 0.75 * full
    assert "Paris" in reply(ctx)


def test_auto_quantization_and_estimate(private_ctx: AppContext) -> None:
    ctx = private_ctx
    est = ctx.engines.estimate("default")
    assert 100e6 < est.parameters < 200e6  # SmolLM2-135M, counted from the safetensors header
    assert est.fits and est.suggestion == "none"
    assert "fits" in est.summary()
    engine = ctx.engines.load("default", quantization="auto")
    assert engine.info.extra["quantization"] == "none"  # it fits, so auto does not quantize
    with pytest.raises(ValidationError) as info:
        ctx.engines.load("default", quantization="int3")
    assert info.value.param == "quantization"


def test_unload_frees_memory(private_ctx: AppContext) -> None:
    ctx = private_ctx
    ctx.engines.load("default")
    reply(ctx)
    before = memory_snapshot().process_rss
    assert ctx.engines.unload("default")
    assert ctx.engines.loaded() == []
    after = memory_snapshot().process_rss
    assert after < before - 100 * 2**20  # at least 100 MiB of the ~270 MiB model went back to the OS


def test_prompt_longer_than_context_says_by_how_much(private_ctx: AppContext) -> None:
    ctx = private_ctx
    long_prompt = "word " * 9000
    with pytest.raises(ValidationError, match=r"more than fit this model's context of 8192") as info:
        ctx.engines.start_completion("default", long_prompt, GREEDY).wait()
    assert info.value.param == "messages"
