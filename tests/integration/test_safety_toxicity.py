"""Toxicity scorers: alt-profanity-check (offline default) and Detoxify from a checkpoint this test creates in
Detoxify's format (a tiny random BERT; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.errors import ValidationError
from studio.safety.filter import SafetyFilter
from studio.safety.policy import policy_from_dict
from studio.safety.toxicity import (
    DetoxifyScorer,
    ProfanityCheckScorer,
    active_scorer,
    profanity_check_scorer,
    resolve_detoxify_layout,
)

INSULT = "You are a stupid worthless idiot and everybody hates you."
NEUTRAL = "The quarterly report is ready; the meeting starts at ten tomorrow."
CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def test_profanity_check_scores_an_insult_above_a_neutral_sentence() -> None:
    scorer = profanity_check_scorer()
    insult, neutral = scorer.score(INSULT), scorer.score(NEUTRAL)
    assert insult > 0.9 > 0.1 > neutral
    assert scorer.score("   ") == 0.0


def test_fast_profanity_path_equals_the_package_probability() -> None:
    scorer = ProfanityCheckScorer()
    assert scorer._linear is not None  # the bundled model has the shape the fast path expects
    for text in (INSULT, NEUTRAL, "what the hell", "Bloody brilliant work, mate!"):
        assert scorer.score(text) == pytest.approx(scorer.score_reference(text), abs=1e-9)


def test_default_policy_names_the_offline_scorer(tmp_path: Path) -> None:
    scorer, name = active_scorer(policy_from_dict({}))
    assert isinstance(scorer, ProfanityCheckScorer)
    assert name.startswith("profanity-check (alt-profanity-check 1.9.1")
    # auto + a checkpoint that is not there: falls back, and the name says why.
    missing = str(tmp_path / "absent.ckpt")
    _, name = active_scorer(policy_from_dict({"toxicity": {"detoxify_checkpoint": missing}}))
    assert name.startswith("profanity-check") and "does not exist" in name
    with pytest.raises(ValidationError) as err:
        active_scorer(policy_from_dict({"toxicity": {"scorer": "detoxify", "detoxify_checkpoint": missing}}))
    assert err.value.param == "toxicity.detoxify_checkpoint"


def make_detoxify_checkpoint(folder: Path, *, prefix: str = "") -> Path:
    """A Detoxify-format checkpoint (config + state_dict) with a tiny random BERT, and its HF config/tokenizer
    in a folder of the same name next to it (the layout DetoxifyScorer accepts)."""
    import torch
    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "an", "idiot", "hello", "nice", "day"]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer(vocab_file=str(vocab))
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=len(CLASSES),
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    ckpt = folder / "toxic_tiny-0000.ckpt"
    hf_dir = folder / "toxic_tiny-0000"
    tokenizer.save_pretrained(hf_dir)
    config.save_pretrained(hf_dir)
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        "model_type": "bert-base-uncased",
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": len(CLASSES),
                    }
                },
                "dataset": {"args": {"classes": CLASSES}},
            },
            "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
        },
        ckpt,
    )
    return ckpt


def reference_scores(ckpt: Path, text: str) -> list[float]:
    import torch
    import transformers

    hf_dir = ckpt.with_suffix("")
    loaded = torch.load(ckpt, weights_only=True)
    model = transformers.BertForSequenceClassification(transformers.BertConfig.from_pretrained(hf_dir)).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in loaded["state_dict"].items()}, strict=False)
    tok = transformers.BertTokenizer.from_pretrained(hf_dir)
    with torch.no_grad():
        return [float(p) for p in torch.sigmoid(model(**tok(text, return_tensors="pt")).logits[0])]


@pytest.mark.parametrize("prefix", ["", "model."])
def test_detoxify_checkpoint_loads_offline_and_scores(tmp_path: Path, prefix: str) -> None:
    ckpt = make_detoxify_checkpoint(tmp_path, prefix=prefix)
    scorer = DetoxifyScorer(ckpt)
    assert scorer.class_names == ["toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"]
    scores = scorer.scores("you are an idiot")
    assert list(scores.values()) == pytest.approx(reference_scores(ckpt, "you are an idiot"), abs=1e-6)
    assert scorer.score("you are an idiot") == scores["toxicity"]
    assert 0.0 <= scorer.score("hello nice day " * 40) <= 1.0  # longer than the model's positions: truncated


def test_detoxify_is_the_active_scorer_when_its_checkpoint_is_set(tmp_path: Path) -> None:
    ckpt = make_detoxify_checkpoint(tmp_path)
    policy = policy_from_dict({"toxicity": {"detoxify_checkpoint": str(ckpt), "threshold": 0.0, "action": "flag"}})
    scorer, name = active_scorer(policy)
    assert isinstance(scorer, DetoxifyScorer) and name == f"detoxify ({ckpt.name})"
    # Through the filter: the scorer is named on the result and a finding is recorded (threshold 0).
    result = SafetyFilter(
        policy.model_copy(update={"pii": policy.pii.model_copy(update={"enabled": False})})
    ).check_input("hello nice day")
    assert result.scorer == name
    assert [f.check for f in result.findings] == ["toxicity"]
    assert result.findings[0].detail == "detoxify"


def test_detoxify_layouts_and_errors(tmp_path: Path) -> None:
    ckpt = make_detoxify_checkpoint(tmp_path)
    assert resolve_detoxify_layout(ckpt).hf_dir == ckpt.with_suffix("")
    # A folder holding the checkpoint and the HF files.
    folder = tmp_path / "packed"
    folder.mkdir()
    (folder / ckpt.name).write_bytes(ckpt.read_bytes())
    for f in ckpt.with_suffix("").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    files = resolve_detoxify_layout(folder)
    assert (files.checkpoint, files.hf_dir) == (folder / ckpt.name, folder)
    assert DetoxifyScorer(folder).score("you are an idiot") >= 0.0
    # No config/tokenizer next to it: the error says what to put where.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "x.ckpt").write_bytes(ckpt.read_bytes())
    with pytest.raises(ValidationError, match=r"no Hugging Face config\.json") as err:
        DetoxifyScorer(lone / "x.ckpt")
    assert err.value.param == "toxicity.detoxify_checkpoint"
    # Not Detoxify's format.
    import torch

    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"weights": {}}, bad / "bad.ckpt")
    (bad / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValidationError, match="not in Detoxify's format"):
        DetoxifyScorer(bad / "bad.ckpt")


def write_pickle_checkpoint(folder: Path, marker: Path) -> Path:
    """A ``.ckpt`` whose unpickling would create ``marker``, with a config.json beside it (so it reaches the
    loader): what an attacker uploads as a "Detoxify checkpoint"."""
    import torch

    class Payload:
        def __reduce__(self) -> tuple[object, ...]:
            return (open, (str(marker), "w"))

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    ckpt = folder / "toxic.ckpt"
    torch.save({"config": Payload(), "state_dict": {}}, ckpt)
    return ckpt


def test_a_pickled_checkpoint_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    ckpt = write_pickle_checkpoint(tmp_path / "evil", marker)
    with pytest.raises(ValidationError, match="never unpickles") as err:
        DetoxifyScorer(ckpt)
    assert "convert it" in err.value.message and err.value.param == "toxicity.detoxify_checkpoint"
    assert not marker.exists()
    # scorer auto falls back to the offline scorer and says why; still nothing ran
    _scorer, name = active_scorer(policy_from_dict({"toxicity": {"detoxify_checkpoint": str(ckpt)}}))
    assert name.startswith("profanity-check") and "never unpickles" in name
    assert not marker.exists()


def test_saving_a_policy_with_a_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    from studio.safety.store import PolicyStore
    from studio.settings import Settings

    settings = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub")
    marker = tmp_path / "unpickled"
    write_pickle_checkpoint(settings.home / "models" / "evil", marker)
    store = PolicyStore(settings)
    for scorer in ("auto", "detoxify"):
        policy = policy_from_dict({"toxicity": {"scorer": scorer, "detoxify_checkpoint": "models/evil/toxic.ckpt"}})
        with pytest.raises(ValidationError, match="never unpickles"):
            store.save(policy, "evil")
    assert not marker.exists() and not (settings.home / "safety" / "evil.yaml").exists()


def test_safetensors_checkpoint_scores_like_the_ckpt(tmp_path: Path) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    ckpt = make_detoxify_checkpoint(tmp_path)
    loaded = torch.load(ckpt, weights_only=True)
    tensors = {k: v.contiguous().clone() for k, v in loaded["state_dict"].items()}
    with_meta = ckpt.with_suffix(".safetensors")  # same stem: the HF files are in toxic_tiny-0000/
    save_file(tensors, str(with_meta), metadata={"detoxify_config": json.dumps(loaded["config"])})
    expected = reference_scores(ckpt, "you are an idiot")
    assert list(DetoxifyScorer(with_meta).scores("you are an idiot").values()) == pytest.approx(expected, abs=1e-6)
    # the config may also sit next to it as JSON
    sidecar = tmp_path / "side" / "toxic.safetensors"
    sidecar.parent.mkdir()
    save_file(tensors, str(sidecar))
    for f in ckpt.with_suffix("").iterdir():
        (sidecar.parent / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValidationError, match="Detoxify config is missing"):
        DetoxifyScorer(sidecar)
    sidecar.with_suffix(".json").write_text(json.dumps(loaded["config"]), encoding="utf-8")
    assert list(DetoxifyScorer(sidecar.parent).scores("you are an idiot").values()) == pytest.approx(expected, abs=1e-6)


def test_toxicity_block_stops_the_stream_before_the_toxic_chunk(tmp_path: Path) -> None:
    policy = policy_from_dict(
        {
            "pii": {"enabled": False},
            "word_list": {"enabled": False},
            "toxicity": {"action": "block", "threshold": 0.9},
            "streaming": {"hold_chars": 8, "release_chars": 40},
        }
    )
    reply = NEUTRAL + " Honestly though, " + INSULT + " Anyway, goodbye."
    guard = SafetyFilter(policy).output_guard()
    shown: list[str] = []
    stopped = False
    for i in range(0, len(reply), 4):
        decision = guard.feed(reply[i : i + 4])
        shown.append(decision.emit)
        if decision.stop:
            stopped = True
            break
    if not stopped:
        shown.append(guard.flush().emit)
    text = "".join(shown)
    result = guard.finish()
    assert result.blocked and result.reason is not None and result.reason.startswith("reply stopped: toxicity score")
    assert text.startswith("The quarterly report is ready")
    assert "idiot" not in text and "stupid" not in text
    [finding] = result.findings
    assert finding.check == "toxicity" and finding.action == "block" and "idiot" in reply[finding.start : finding.end]
