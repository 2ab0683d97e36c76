"""Safety policies by name (studio/safety/store.py): read from STUDIO_HOME/safety or the shipped configs/safety, written
only to STUDIO_HOME/safety; a policy's word list and Detoxify checkpoint stay inside the allowed folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studio.errors import ForbiddenError, ValidationError
from studio.safety.policy import DEFAULT_POLICY_PATH, SafetyPolicyConfig, policy_from_dict
from studio.safety.service import SafetyService
from studio.safety.store import PolicyStore
from studio.settings import CONFIG_DIR, Settings

SHIPPED_WORDS = CONFIG_DIR / "safety" / "offensive_words.txt"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub")
    s.ensure_dirs()
    return s


@pytest.fixture
def store(settings: Settings) -> PolicyStore:
    return PolicyStore(settings)


def with_words(file: str) -> SafetyPolicyConfig:
    return policy_from_dict({"word_list": {"file": file}})


def test_names_and_paths(store: PolicyStore, settings: Settings) -> None:
    assert store.read_path(None) == DEFAULT_POLICY_PATH  # before the studio's policy exists
    assert store.read_path("default") == DEFAULT_POLICY_PATH
    assert store.write_path("strict") == settings.home / "safety" / "strict.yaml"
    assert store.write_path("strict.yml") == settings.home / "safety" / "strict.yml"
    assert store.write_path(None) == settings.home / "safety" / "policy.yaml"
    assert store.write_path(str(settings.home / "safety" / "x.yaml")) == settings.home / "safety" / "x.yaml"
    store.save(SafetyPolicyConfig(name="strict"), "strict")
    assert store.read_path("strict") == settings.home / "safety" / "strict.yaml"
    assert store.load("strict")[1].name == "strict"
    assert store.names() == ["policy", "strict", "default"]
    with pytest.raises(ValidationError, match="no safety policy named 'absent'; known: policy, strict, default"):
        store.read_path("absent")


@pytest.mark.parametrize(
    "ref", ["/etc/passwd", "/etc/x.yaml", "../../etc/x.yaml", "plugins/evil.yaml", "aliases/a.yaml"]
)
def test_policies_are_read_only_from_the_policy_folders(store: PolicyStore, ref: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        store.read_path(ref)
    assert "outside the folders the studio may use ($STUDIO_HOME/safety, configs/safety)" in info.value.message


@pytest.mark.parametrize("ref", ["/tmp/evil.yaml", "configs/safety/default.yaml", "plugins/evil.yaml", "../x.yaml"])
def test_policies_are_written_only_to_the_home_safety_folder(store: PolicyStore, settings: Settings, ref: str) -> None:
    with pytest.raises(ForbiddenError):
        store.save(SafetyPolicyConfig(), ref)
    assert sorted(p.name for p in (settings.home / "plugins").iterdir()) == []
    assert not (settings.home / "safety").exists() or not list((settings.home / "safety").iterdir())


def test_save_refuses_word_lists_and_checkpoints_outside_the_allowed_folders(store: PolicyStore) -> None:
    for file, error in [
        ("/etc/passwd", ForbiddenError),
        ("plugins/evil.py", ForbiddenError),
        ("safety/evil.py", ValidationError),  # not .txt
        ("plugins/evil.txt", ForbiddenError),
        ("runs/job/log.txt", ForbiddenError),
    ]:
        with pytest.raises(error):
            store.save(with_words(file), "p")
    bad = policy_from_dict({"toxicity": {"detoxify_checkpoint": "/etc/shadow"}})
    with pytest.raises(ForbiddenError, match=r"toxicity\.detoxify_checkpoint"):
        store.save(bad, "p")
    assert not store.write_path("p").exists()


def test_word_list_writes_go_only_to_the_home_safety_folder(store: PolicyStore, settings: Settings) -> None:
    store.save(with_words("safety/mine.txt"), "p")
    target = store.save_word_list("p", "broccoli")
    assert target == settings.home / "safety" / "mine.txt" and target.read_text() == "broccoli\n"
    store.save(with_words("configs/safety/offensive_words.txt"), "shipped")
    before = SHIPPED_WORDS.read_text(encoding="utf-8")
    with pytest.raises(ForbiddenError, match="read-only"):
        store.save_word_list("shipped", "x")
    assert SHIPPED_WORDS.read_text(encoding="utf-8") == before
    # a hand-written policy that points its list at the plugins folder
    (settings.home / "safety" / "evil.yaml").write_text(
        yaml.safe_dump(with_words("plugins/evil.txt").model_dump(mode="json")), encoding="utf-8"
    )
    with pytest.raises(ForbiddenError):
        store.save_word_list("evil", "import os")
    assert list((settings.home / "plugins").iterdir()) == []


def test_studio_policy_gets_its_own_word_list_copy(store: PolicyStore, settings: Settings) -> None:
    path = store.ensure_studio_policy()
    assert path == settings.home / "safety" / "policy.yaml"
    text = path.read_text(encoding="utf-8")
    assert "file: safety/offensive_words.txt" in text and text.startswith("# The default safety policy")
    copy = settings.home / "safety" / "offensive_words.txt"
    assert copy.read_text(encoding="utf-8") == SHIPPED_WORDS.read_text(encoding="utf-8")
    assert store.word_list_path(store.load(None)[1]) == copy
    assert store.save_word_list(None, "alpha\n") == copy


def test_an_old_studio_policy_is_switched_to_its_own_word_list(store: PolicyStore, settings: Settings) -> None:
    old = settings.home / "safety" / "policy.yaml"
    old.parent.mkdir(parents=True)
    old.write_text(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    store.ensure_studio_policy()
    assert store.load(None)[1].word_list.file == "safety/offensive_words.txt"
    store.save_word_list(None, "beta\n")
    assert (settings.home / "safety" / "offensive_words.txt").read_text() == "beta\n"


def test_filters_are_built_only_from_confined_paths(settings: Settings) -> None:
    service = SafetyService(settings)
    service.ensure_studio_policy()
    assert service.filter_for(None).policy.word_list.file == str(settings.home / "safety" / "offensive_words.txt")
    (settings.home / "safety" / "leak.yaml").write_text(
        yaml.safe_dump(with_words("/etc/passwd").model_dump(mode="json")), encoding="utf-8"
    )
    with pytest.raises(ForbiddenError):
        service.filter_for("leak")
    with pytest.raises(ForbiddenError):
        service.filter_for("/etc/passwd")
