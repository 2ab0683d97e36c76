"""Issue 14, "files only under STUDIO_HOME": every file an eval config, an audit config or an alias names is read only
from STUDIO_HOME or the shipped configs/ (judge rubric, text_file, dataset_file, demographics/templates files, the
audit's policy, an alias's safety_policy); nothing outside is read, and the answer does not say whether it exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError

from studio.aliases.schema import AliasConfig
from studio.db import Database
from studio.errors import ForbiddenError, ValidationError
from studio.evaluation.config import EvalConfig, JudgeConfig, resolve_path
from studio.evaluation.metrics import load_rubric
from studio.evaluation.results import submit_eval
from studio.jobs import queue
from studio.safety.audit import AuditConfig, audit_policy, prepare_audit
from studio.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub")
    s.ensure_dirs()
    return s


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    yield database
    database.dispose()


@pytest.mark.parametrize("ref", ["../../../../../etc/passwd", "/etc/passwd", "../../../../../etc/hostname.yaml"])
def test_judge_rubric_cannot_be_read_from_outside(ref: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        load_rubric(ref)
    assert "outside the folders the studio may use" in info.value.message and "root:" not in info.value.message


def test_judge_rubric_is_a_yaml_file_without_tilde() -> None:
    for bad in ("/etc/passwd", "~/rubric.yaml", "a\x00.yaml"):
        with pytest.raises(PydanticValidationError):
            JudgeConfig(model="m", rubric=bad)
    assert JudgeConfig(model="m").rubric == "judge_rubric.yaml"
    assert load_rubric("judge_rubric.yaml").max_score == 5


def test_rubric_under_the_home_is_read_with_settings(settings: Settings) -> None:
    own = settings.home / "eval" / "mine.yaml"
    own.parent.mkdir()
    own.write_text("template: 'Grade {output}'\nmin_score: 1\nmax_score: 3\n", encoding="utf-8")
    assert load_rubric("eval/mine.yaml", settings).max_score == 3
    with pytest.raises(ForbiddenError):
        load_rubric("eval/mine.yaml")  # without a STUDIO_HOME only the shipped configs/ are readable


@pytest.mark.parametrize("field", ["text_file", "dataset_file"])
@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/does-not-exist", "../../etc/passwd", "runs/../../x.txt"])
def test_eval_data_files_outside_the_home_are_refused_at_submit(
    settings: Settings, db: Database, field: str, path: str
) -> None:
    config = EvalConfig(models=["default"], metrics=["perplexity" if field == "text_file" else "bleu"], **{field: path})
    with pytest.raises(ForbiddenError) as info:
        submit_eval(settings, db, config)
    assert info.value.param == field
    assert info.value.message.endswith("is outside the folders the studio may use ($STUDIO_HOME, configs)")
    assert queue.list_jobs(db) == []


def test_eval_data_files_under_the_home_and_shipped_ones_are_read(settings: Settings, db: Database) -> None:
    text = settings.home / "eval" / "passages.txt"
    text.parent.mkdir()
    text.write_text("One paragraph.\n\nAnother paragraph.\n", encoding="utf-8")
    assert resolve_path("eval/passages.txt", "text_file", settings) == text
    job = submit_eval(
        settings, db, EvalConfig(models=["default"], metrics=["perplexity"], text_file="eval/passages.txt")
    )
    assert job.config["text_file"] == str(text)
    shipped = resolve_path("configs/eval/data/short-passages.txt", "text_file", settings)
    assert shipped.is_file() and shipped.parts[-4:] == ("configs", "eval", "data", "short-passages.txt")
    with pytest.raises(ValidationError) as info:
        resolve_path("eval/absent.txt", "text_file", settings)
    assert info.value.message == "'text_file': no file 'eval/absent.txt' in $STUDIO_HOME, configs"


@pytest.mark.parametrize("field", ["demographics_file", "templates_file"])
def test_audit_files_outside_the_home_are_refused(settings: Settings, db: Database, field: str) -> None:
    config = AuditConfig(**{field: "/etc/passwd"})
    with pytest.raises(ForbiddenError) as info:
        prepare_audit(config, settings, db)
    assert info.value.param == field and "root:" not in info.value.message


def test_audit_policy_is_named_like_the_safety_tab_does(settings: Settings, db: Database) -> None:
    assert audit_policy(AuditConfig(), settings).name == "default"  # configs/safety/default.yaml, shipped
    assert audit_policy(AuditConfig(policy="default")).name == "default"
    for bad in ("/etc/passwd", "../../etc/x.yaml", "plugins/x.yaml"):
        with pytest.raises(ForbiddenError):
            prepare_audit(AuditConfig(policy=bad), settings, db)


@pytest.mark.parametrize("ref", ["~/p.yaml", "~", "a\x00b", "/etc/passwd", "safety/p.txt"])
def test_alias_safety_policy_text_is_checked(ref: str) -> None:
    with pytest.raises(PydanticValidationError):
        AliasConfig(alias="a", repo="r", safety_policy=ref)


def test_alias_safety_policy_names_and_yaml_paths_are_kept() -> None:
    for ref in ("default", "strict", "safety/strict.yaml", "configs/safety/default.yaml"):
        assert AliasConfig(alias="a", repo="r", safety_policy=ref).safety_policy == ref
    assert AliasConfig(alias="a", repo="r", safety_policy="  ").safety_policy is None
