"""Pushing to the Hugging Face Hub (studio.export.push) against a loopback Hub (tests/fake_hub.py): the files and the
model card that arrive (base model, method, dataset name + hash, training parameters, evaluation results and the
safety scorecard, licence), what is left out, a bad token (401) and no network as clear errors that never carry the
token, and the ``push`` job (its token handed over in a file that is gone afterwards, never in the job row)."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from studio.db import Database
from studio.db.tables import Job
from studio.errors import AuthenticationError, HubUnavailableError, ValidationError
from studio.export.push import PushConfig, push_source, push_to_hub, submit_push
from studio.jobs import queue
from studio.jobs.child import run_job
from studio.models.adapter_upload import upload_adapter
from studio.models.adapters import RUN_FILE, WEIGHTS_FILE
from studio.settings import BUNDLED_MODEL_ID, Settings
from tests.fake_hub import FakeHub

TOKEN = "hf_write_secret_token_0123456789"
JOB_ID = "0123456789abcdef0123456789abcdef"
DATASET_HASH = "ab" * 32


@pytest.fixture
def settings(home_sharing_models: Settings) -> Settings:
    return home_sharing_models


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The loopback Hub, with this process's huggingface_hub pointed at it and no saved or environment token."""
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("STUDIO_HF_TOKEN", raising=False)
    with FakeHub() as server:
        server.write_token = TOKEN
        server.patch(monkeypatch)
        yield server


@pytest.fixture
def trained(settings: Settings, lora_adapters: tuple[Path, Path]) -> Path:
    """A LoRA adapter registered as a training job registers its artifact ('tuned', with whetstone-run.json)."""
    from studio.training.config import FinetuneConfig
    from studio.training.job import register_artifact
    from studio.training.train import TrainingResult, write_run_file

    artifact = settings.home / "runs" / JOB_ID / "artifact"
    shutil.copytree(lora_adapters[0], artifact)
    (artifact / "training_args.bin").write_bytes(b"\x80\x04pickled")  # Trainer leaves one; it is never pushed
    config = FinetuneConfig(name="tuned", dataset="greetings", dataset_version=2, dataset_hash=DATASET_HASH,
                            base_model="default", method="lora", learning_rate=3e-4, epochs=2)  # fmt: skip
    result = TrainingResult(
        stopped="completed", artifact="adapter", artifact_path=artifact, steps=10, total_steps=10, epoch=2.0,
        train_loss=0.5, eval_loss=None, best_eval_loss=None, seconds=3.0, seconds_per_step=0.3, last_checkpoint=None,
        trainable_params=1, total_params=2, train_examples=10, eval_examples=0,
    )  # fmt: skip
    write_run_file(artifact, config, settings.models_dir, result)
    assert register_artifact(settings, artifact, "tuned", "adapter", JOB_ID) == "tuned"
    return artifact


def _finished_job(db: Database, kind: str, config: dict, result: dict) -> str:  # type: ignore[type-arg]
    """A succeeded job row as the eval / audit kinds leave one (what the card reads)."""
    now = datetime.now(UTC)
    job = Job(kind=kind, name=f"{kind} of tuned", state="succeeded", config=config, result=result,
              started_at=now, finished_at=now, progress=1.0)  # fmt: skip
    with db.session() as session:
        session.add(job)
    return job.id


def _card(hub: FakeHub, repo: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    text = hub.repos[repo].files["README.md"].decode()
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def test_a_trained_adapter_arrives_with_its_files_and_a_card_of_its_lineage_and_scores(
    settings: Settings, db: Database, hub: FakeHub, trained: Path
) -> None:
    eval_id = _finished_job(
        db,
        "eval",
        {"models": [{"model": "default", "label": "base"}, {"model": "default", "adapter": "tuned", "label": "tuned"}]},
        {"source": "greetings v2", "models": {"base": {"rouge1": 0.25, "examples": 3.0},
                                              "tuned": {"rouge1": 0.5, "examples": 3.0}}},
    )  # fmt: skip
    audit_id = _finished_job(
        db,
        "audit",
        {"model": "default", "adapter": "tuned"},
        {"generations": 24, "toxicity_scorer": "profanity-check",
         "categories": {"gender": {"disparity": {"toxicity": {"gap": 0.125, "max_group": "women", "min_group": "men"},
                                                 "refusal_rate": {"gap": 0.0}}}}},
    )  # fmt: skip
    folder, adapter = push_source(settings, "tuned")
    assert (folder, adapter) == (trained.resolve(), "tuned")
    lines: list[str] = []
    result = push_to_hub(settings, folder, "alice/tuned-lora", True, TOKEN, lines.append, db=db, adapter=adapter)

    repo = hub.repos["alice/tuned-lora"]
    assert repo.private is True
    assert result.url == f"{hub.url}/alice/tuned-lora" and result.commit == repo.sha
    assert sorted(repo.files) == ["README.md", "adapter_config.json", WEIGHTS_FILE] == result.files
    assert repo.files[WEIGHTS_FILE] == (trained / WEIGHTS_FILE).read_bytes()
    assert json.loads(repo.files["adapter_config.json"]) == json.loads((trained / "adapter_config.json").read_text())
    assert sorted(result.left_out) == sorted([RUN_FILE, "training_args.bin"])  # local records and pickles stay here
    assert [c["repo"] for c in hub.commits] == ["alice/tuned-lora"]  # one commit: never files without their card
    assert any(line.startswith("uploading 3 files") for line in lines) and lines[-1].startswith("pushed 3 files")

    meta, body = _card(hub, "alice/tuned-lora")
    assert meta["base_model"] == BUNDLED_MODEL_ID and meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0" and "whetstone-studio" in meta["tags"] and "lora" in meta["tags"]
    assert "- **Base model:** default" in body and "- **Method:** LoRA" in body
    assert f"- **Training job:** {JOB_ID}" in body and "- **Licence:** apache-2.0" in body
    assert "- **Name:** greetings (version 2)" in body and f"- **sha256:** `{DATASET_HASH}`" in body
    assert "| learning_rate | 0.0003 |" in body and "| epochs | 2 |" in body and "| r | 8 |" in body
    assert "| train_loss | 0.5 |" in body
    assert f"Eval run `{eval_id}`" in body and "| rouge1 | 0.5 | 0.25 |" in body  # this adapter, then its base
    assert f"audit `{audit_id}`" in body and "| gender | toxicity | 0.125 | women | men |" in body
    assert 'PeftModel.from_pretrained(base, "alice/tuned-lora")' in body
    assert str(settings.home) not in body  # no local path leaks into a public card


def test_an_uploaded_adapter_gets_a_card_without_made_up_facts(
    settings: Settings, hub: FakeHub, lora_adapters: tuple[Path, Path]
) -> None:
    info = upload_adapter(settings, lora_adapters[1], "uploaded")
    result = push_to_hub(settings, info.path, "uploaded-lora", False, TOKEN, adapter="uploaded")
    assert result.repo_id == "test-user/uploaded-lora"  # a bare name goes to the token's own account
    repo = hub.repos["test-user/uploaded-lora"]
    assert repo.private is False and "whetstone-adapter.json" not in repo.files
    meta, body = _card(hub, "test-user/uploaded-lora")
    assert meta["base_model"] == BUNDLED_MODEL_ID
    assert "## Dataset" not in body and "## Evaluation results" not in body and "## Safety scorecard" not in body
    assert "| r | 8 |" in body and "| target_modules | q_proj, v_proj |" in body
    sha = json.loads((info.path / "whetstone-adapter.json").read_text())["sha256"][WEIGHTS_FILE]
    assert f"`{WEIGHTS_FILE}` sha256 `{sha}`" in body


def test_a_bad_token_is_a_401_message_without_the_token(settings: Settings, hub: FakeHub, trained: Path) -> None:
    wrong = "hf_wrong_token_ABCDEFGHIJ"
    with pytest.raises(AuthenticationError, match=r"refused the token \(401\).*write access") as err:
        push_to_hub(settings, trained, "alice/tuned-lora", True, wrong)
    assert err.value.param == "token"
    assert wrong not in str(err.value) and TOKEN not in str(err.value)
    assert hub.repos == {} and hub.commits == []


def test_no_token_at_all_is_refused_before_any_request(settings: Settings, hub: FakeHub, trained: Path) -> None:
    with pytest.raises(AuthenticationError, match="needs a token with write access"):
        push_to_hub(settings, trained, "alice/tuned-lora", True, None)
    assert hub.requests == []


def test_no_network_names_the_endpoint(settings: Settings, trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(
        HubUnavailableError, match=rf"cannot reach the Hugging Face Hub at http://127.0.0.1:{port}"
    ) as err:
        push_to_hub(settings, trained, "alice/tuned-lora", True, TOKEN)
    assert "is this machine online?" in str(err.value) and TOKEN not in str(err.value)


def test_offline_mode_and_bad_repo_ids_are_refused(
    settings: Settings, trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("", "a/b/c", "alice/../x", "alice/bad name"):
        with pytest.raises(ValidationError) as err:
            push_to_hub(settings, trained, bad, True, TOKEN)
        assert err.value.param == "repo_id"
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE=1"):
        push_to_hub(settings, trained, "alice/tuned-lora", True, TOKEN)
    with pytest.raises(ValidationError, match="'source'"):
        push_source(settings, "no-such-adapter")


def test_the_push_job_hands_the_token_over_once_and_reports_progress(
    settings: Settings, db: Database, hub: FakeHub, trained: Path
) -> None:
    job = submit_push(settings, db, "tuned", "alice/job-lora", private=False, token=TOKEN)
    assert TOKEN not in json.dumps(job.config)
    ref = job.config["token_ref"]
    secret = settings.home / "secrets" / f"hub-token-{ref}"
    assert secret.read_text() == TOKEN and secret.stat().st_mode & 0o777 == 0o600
    assert PushConfig.model_validate(job.config).name == "push tuned -> alice/job-lora"

    claimed = queue.claim_next(db, "test-worker:1")
    assert claimed is not None and claimed.id == job.id
    state = run_job(settings, db, queue.Lease.of(claimed))
    log = queue.log_tail(settings, job.id, 50)
    assert state == queue.SUCCEEDED, log
    done = queue.get_job(db, job.id)
    assert done.result["url"] == f"{hub.url}/alice/job-lora" and done.progress == 1.0
    assert done.step == done.total_steps == 3
    assert "creating alice/job-lora (public)" in log and "uploading 3 files" in log
    assert not secret.exists()  # read once, then removed
    assert TOKEN not in log and TOKEN not in json.dumps(done.model_dump(mode="json"), default=str)
    assert sorted(hub.repos["alice/job-lora"].files) == ["README.md", "adapter_config.json", WEIGHTS_FILE]


def test_a_failed_push_job_says_why_and_drops_the_token(
    settings: Settings, db: Database, hub: FakeHub, trained: Path
) -> None:
    hub.write_token = "hf_another_token_only"
    job = submit_push(settings, db, "tuned", "alice/denied", token=TOKEN)
    claimed = queue.claim_next(db, "test-worker:1")
    assert claimed is not None
    assert run_job(settings, db, queue.Lease.of(claimed)) == queue.FAILED
    failed = queue.get_job(db, job.id)
    assert "refused the token (401)" in failed.message and TOKEN not in failed.message
    assert list((settings.home / "secrets").glob("hub-token-*")) == []
    with pytest.raises(AuthenticationError, match="needs a token"):  # no token given and none in the environment
        submit_push(settings, db, "tuned", "alice/denied")


def test_an_export_keeps_its_manifest_and_notes_and_its_card_names_the_format(
    settings: Settings, hub: FakeHub, trained: Path
) -> None:
    export = settings.home / "exports" / "tuned-q8"
    export.mkdir(parents=True)
    (export / "model-q8_0.gguf").write_bytes(b"GGUF" + bytes(60))
    (export / "README.md").write_text("# Serving\n\nllama-server -m model-q8_0.gguf\n")
    manifest = {
        "manifest_version": 1,
        "name": "tuned-q8",
        "format": "gguf",
        "source": {"model": "default", "model_id": BUNDLED_MODEL_ID, "adapter": "tuned", "adapter_base": "default"},
        "lineage": {"training_job": JOB_ID, "method": "lora", "base_model": "default",
                    "dataset": {"name": "greetings", "version": 2, "hash": DATASET_HASH}},
    }  # fmt: skip
    (export / "manifest.json").write_text(json.dumps(manifest))
    folder, adapter = push_source(settings, "tuned-q8")
    assert (folder, adapter) == (export.resolve(), None)
    result = push_to_hub(settings, folder, "alice/tuned-gguf", False, TOKEN)
    assert result.files == ["README.md", "manifest.json", "model-q8_0.gguf"]
    assert hub.repos["alice/tuned-gguf"].files["model-q8_0.gguf"] == b"GGUF" + bytes(60)
    meta, body = _card(hub, "alice/tuned-gguf")
    assert meta["library_name"] == "gguf" and meta["base_model"] == BUNDLED_MODEL_ID
    assert "- **Method:** lora, gguf export" in body and f"- **Training job:** {JOB_ID}" in body
    assert f"- **sha256:** `{DATASET_HASH}`" in body
    assert body.rstrip().endswith("## Notes\n\n# Serving\n\nllama-server -m model-q8_0.gguf")
