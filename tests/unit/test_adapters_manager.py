"""The Adapter Manager (studio.models.adapters): listing the adapters a user has (fixture LoRA adapters of the bundled
model, and one registered by a training job), uploading a folder or a zip, the uploads it refuses before anything is
registered (pickle weights, unsafe zips, target modules or shapes that do not fit the base), rename, delete, and the
CLI. No model is loaded here (tests/integration/test_adapters_manager.py loads one)."""

from __future__ import annotations

import argparse
import json
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from studio.errors import ConflictError, NotFoundError, PayloadTooLargeError, ValidationError
from studio.models.adapter_upload import safetensors_shapes, upload_adapter
from studio.models.adapters import MARKER_FILE, WEIGHTS_FILE, delete_adapter, get_adapter, list_adapters, rename_adapter
from studio.settings import BUNDLED_MODEL_ID, Settings

HIDDEN = 576  # SmolLM2-135M's hidden size: q_proj is [576, 576]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def settings(studio_home: Path, tmp_path: Path) -> Settings:
    """A home of its own (its adapters folder empty) that shares the session's converted models."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    (home / "adapters").mkdir()
    return Settings(home=home, hf_cache=studio_home / "hf-cache")


@pytest.fixture
def lora(lora_adapters: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the fixture adapter lora-a that a test may change."""
    return Path(shutil.copytree(lora_adapters[0], tmp_path / "src" / "my-lora"))


def _nothing_registered(settings: Settings) -> None:
    assert list((settings.home / "adapters").iterdir()) == []  # no adapter, no staging folder left


def test_list_shows_the_fixture_adapters_with_base_rank_targets_and_size(
    studio_home: Path, lora_adapters: tuple[Path, Path]
) -> None:
    settings = Settings(home=studio_home, hf_cache=studio_home / "hf-cache")
    found = {a.name: a for a in list_adapters(settings)}
    for path in lora_adapters:
        info = found[path.name]
        assert info.base_model == BUNDLED_MODEL_ID
        assert (info.method, info.peft_type, info.rank, info.alpha) == ("LoRA", "LORA", 8, 32.0)
        assert info.target_modules == ["q_proj", "v_proj"]
        assert info.size_bytes == sum(p.stat().st_size for p in path.iterdir())
        assert info.size_bytes > (path / WEIGHTS_FILE).stat().st_size > 100_000
        assert (info.origin, info.job_id, info.problem, info.loaded_on) == ("local", None, None, [])
        assert info.created.startswith("20")
    assert json.loads(json.dumps(found["lora-a"].to_dict()))["target_modules"] == ["q_proj", "v_proj"]


def test_a_trained_adapter_is_listed_with_its_job_method_and_dataset(settings: Settings, lora: Path) -> None:
    from studio.training.config import FinetuneConfig
    from studio.training.job import register_artifact
    from studio.training.train import TrainingResult, write_run_file

    job_id = "0123456789abcdef0123456789abcdef"
    artifact = settings.home / "runs" / job_id / "artifact"
    shutil.copytree(lora, artifact)
    config = FinetuneConfig(name="tuned", dataset="greetings", dataset_version=2, dataset_hash="ab" * 32,
                            base_model="default", method="qlora")  # fmt: skip
    result = TrainingResult(
        stopped="completed", artifact="adapter", artifact_path=artifact, steps=10, total_steps=10, epoch=1.0,
        train_loss=0.5, eval_loss=None, best_eval_loss=None, seconds=3.0, seconds_per_step=0.3, last_checkpoint=None,
        trainable_params=1, total_params=2, train_examples=10, eval_examples=0,
    )  # fmt: skip
    write_run_file(artifact, config, settings.models_dir, result)
    assert register_artifact(settings, artifact, "tuned", "adapter", job_id) == "tuned"

    info = get_adapter(settings, "tuned")
    assert (info.origin, info.job_id, info.method) == (job_id, job_id, "QLoRA")
    assert info.dataset == {"name": "greetings", "version": 2, "hash": "ab" * 32}
    assert info.base_model == "default"
    assert info.path == artifact.resolve()

    removed = delete_adapter(settings, "tuned")  # the name goes; the job's files stay
    assert removed.kept == f"$STUDIO_HOME/runs/{job_id}/artifact"
    assert not (settings.home / "adapters" / "tuned").is_symlink() and (artifact / WEIGHTS_FILE).is_file()


def test_upload_a_folder_registers_a_byte_identical_copy(settings: Settings, lora: Path) -> None:
    info = upload_adapter(settings, lora, "uploaded")
    target = settings.home / "adapters" / "uploaded"
    assert info.path == target.resolve() and not target.is_symlink()
    copied = _files(target)
    assert {k: v for k, v in copied.items() if k != MARKER_FILE} == _files(lora)
    marker = json.loads(copied[MARKER_FILE])
    assert marker["base_model"] == BUNDLED_MODEL_ID and marker["source"] == "my-lora"
    assert (info.origin, info.base_model, info.rank, info.target_modules) == (
        "upload", BUNDLED_MODEL_ID, 8, ["q_proj", "v_proj"]
    )  # fmt: skip
    assert [a.name for a in list_adapters(settings)] == ["uploaded"]
    with pytest.raises(ConflictError, match="exists already"):
        upload_adapter(settings, lora, "uploaded")


def test_upload_a_zip_of_a_folder_takes_its_name_and_leaves_pickles_out(settings: Settings, lora: Path) -> None:
    (lora / "training_args.bin").write_bytes(b"\x80\x04not really a pickle")  # Trainer leaves one beside adapters
    archive = lora.parent / "zipped-lora.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(lora.iterdir()):
            zf.write(path, f"my-lora/{path.name}")
        zf.writestr("__MACOSX/my-lora/._adapter_config.json", b"resource fork")
    info = upload_adapter(settings, archive, None)
    assert info.name == "zipped-lora"
    copied = _files(settings.home / "adapters" / "zipped-lora")
    assert copied[WEIGHTS_FILE] == (lora / WEIGHTS_FILE).read_bytes()
    assert "training_args.bin" not in copied and not any(k.startswith("__MACOSX") for k in copied)
    assert info.warnings == ["left out training_args.bin: a pickle file (the studio never loads pickles)"]


def test_pickle_weights_are_refused_with_a_message_to_convert_them(settings: Settings, lora: Path) -> None:
    (lora / WEIGHTS_FILE).rename(lora / "adapter_model.bin")
    with pytest.raises(ValidationError, match=r"'adapter_model.bin', a pickle file.*safetensors") as err:
        upload_adapter(settings, lora, "pickled")
    assert "save_pretrained" in err.value.message
    _nothing_registered(settings)


@pytest.mark.parametrize(
    ("member", "why"),
    [("../evil.txt", "climbs out"), ("/tmp/evil.txt", "absolute"), ("link", "symbolic link")],
)
def test_an_unsafe_zip_is_refused_and_writes_nothing(
    settings: Settings, lora: Path, tmp_path: Path, member: str, why: str
) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(lora.iterdir()):
            zf.write(path, path.name)
        info = zipfile.ZipInfo(member)
        if member == "link":
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if member == "link" else "owned")
    with pytest.raises(ValidationError, match=why):
        upload_adapter(settings, archive, "evil")
    _nothing_registered(settings)
    assert not (settings.home / "evil.txt").exists() and not (settings.home / "adapters" / "evil.txt").exists()


def test_a_zip_over_the_size_cap_is_refused(settings: Settings, lora: Path, tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(lora.iterdir()):
            zf.write(path, path.name)
    with pytest.raises(PayloadTooLargeError, match="limited to 1000 bytes"):
        upload_adapter(settings, archive, "big", max_bytes=1000)
    _nothing_registered(settings)


def test_a_symlink_inside_an_uploaded_folder_is_refused(settings: Settings, lora: Path) -> None:
    (lora / "secrets").symlink_to("/etc/passwd")
    with pytest.raises(ValidationError, match="'secrets' in the folder is a symbolic link"):
        upload_adapter(settings, lora, "linked")
    _nothing_registered(settings)


def test_a_target_module_the_base_lacks_is_refused(settings: Settings, lora: Path) -> None:
    config = json.loads((lora / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "v_proj", "c_attn"]  # GPT-2's attention, not Llama's
    (lora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValidationError, match=r"target module\(s\) 'c_attn' .* do not exist in base") as err:
        upload_adapter(settings, lora, "gpt2-lora")
    assert "q_proj" in err.value.message  # the base's layer names, to compare with
    _nothing_registered(settings)


def test_lora_tensors_of_the_wrong_shape_are_refused(settings: Settings, lora: Path) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(lora / WEIGHTS_FILE))
    key = "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"
    assert tensors[key].shape == (8, HIDDEN)
    tensors[key] = tensors[key][:, :512].copy()  # trained for a model with hidden size 512
    save_file(tensors, str(lora / WEIGHTS_FILE), metadata={"format": "pt"})
    assert safetensors_shapes(lora / WEIGHTS_FILE)[key] == (8, 512)
    with pytest.raises(ValidationError, match=r"1 tensor\(s\) .* do not fit") as err:
        upload_adapter(settings, lora, "misfit")
    assert f"model.layers.3.self_attn.q_proj: lora_A is [8, 512] but the base layer [{HIDDEN}, {HIDDEN}]" in str(
        err.value
    )
    _nothing_registered(settings)


def test_an_absent_base_is_refused_and_a_given_base_is_used(settings: Settings, lora: Path) -> None:
    config = json.loads((lora / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/elsewhere/models/acme--secret-7b"
    (lora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValidationError, match="base model 'acme/secret-7b' is not on this machine") as err:
        upload_adapter(settings, lora, "orphan")
    assert err.value.param == "base_model"
    _nothing_registered(settings)
    info = upload_adapter(settings, lora, "orphan", base_model="default")
    assert info.base_model == BUNDLED_MODEL_ID


def test_rename_checks_names(settings: Settings, lora: Path) -> None:
    upload_adapter(settings, lora, "first")
    upload_adapter(settings, lora, "second")
    assert rename_adapter(settings, "first", "renamed").name == "renamed"
    assert sorted(a.name for a in list_adapters(settings)) == ["renamed", "second"]
    for bad in ("../escape", "a/b", "..", "base", ""):
        with pytest.raises(ValidationError, match="new_name"):
            rename_adapter(settings, "renamed", bad)
    with pytest.raises(ConflictError, match="'second' exists already"):
        rename_adapter(settings, "renamed", "second")
    with pytest.raises(NotFoundError, match="known adapters: renamed, second"):
        rename_adapter(settings, "first", "third")
    with pytest.raises(ValidationError):
        upload_adapter(settings, lora, "../outside")
    assert not (settings.home / "outside").exists()


def test_cli_lists_uploads_renames_and_removes(
    settings: Settings, lora: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from studio.models.adapters_cli import register

    monkeypatch.setenv("STUDIO_HOME", str(settings.home))
    monkeypatch.setenv("STUDIO_HF_CACHE", str(settings.hf_cache_dir))
    monkeypatch.chdir(lora.parent)
    parser = argparse.ArgumentParser(prog="studio")
    register(parser.add_subparsers(dest="cmd", required=True))

    def run(*argv: str) -> str:
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert "registered adapter 'cli-lora': LoRA r=8" in run("adapters", "upload", "my-lora", "--name", "cli-lora")
    listed = json.loads(run("adapters", "list", "--json"))
    assert [(a["name"], a["base_model"], a["rank"]) for a in listed] == [("cli-lora", BUNDLED_MODEL_ID, 8)]
    table = run("adapters", "list")
    assert table.splitlines()[0].split() == ["NAME", "BASE", "METHOD", "RANK", "TARGETS", "SIZE", "ORIGIN", "CREATED"]
    assert "cli-lora" in table and "q_proj,v_proj" in table and "upload" in table
    assert "renamed adapter 'cli-lora' to 'cli-2'" in run("adapters", "rename", "cli-lora", "cli-2")
    assert "removed adapter 'cli-2'" in run("adapters", "rm", "cli-2")
    assert run("adapters", "list", "--json").strip() == "[]"


def test_an_uploaded_adapter_belongs_to_its_uploader(settings: Settings, lora: Path) -> None:
    """Issue 19: with users, the uploader owns the adapter; another member may use it but not rename or delete it
    (refused before anything moves); the owner and admins may."""
    from studio.auth import Principal
    from studio.db import Database
    from studio.errors import ForbiddenError
    from studio.users.acting import acting_as

    db = Database(f"sqlite:///{settings.home / 'team.db'}")
    bob = Principal("bob", "session", role="member", user_id="u-bob")
    cy = Principal("cy", "session", role="member", user_id="u-cy")
    ada = Principal("ada", "session", role="admin", user_id="u-ada")
    try:
        with acting_as(bob):
            upload_adapter(settings, lora, "bobs-lora")
        assert json.loads((settings.home / "adapters" / "bobs-lora" / MARKER_FILE).read_text())["owner"] == "bob"
        with acting_as(cy):
            with pytest.raises(ForbiddenError, match="belongs to bob"):
                rename_adapter(settings, "bobs-lora", "mine-now", db=db)
            with pytest.raises(ForbiddenError, match="belongs to bob"):
                delete_adapter(settings, "bobs-lora", db=db)
        assert [a.name for a in list_adapters(settings)] == ["bobs-lora"]
        with acting_as(bob):
            rename_adapter(settings, "bobs-lora", "bobs-lora-2", db=db)
        with acting_as(ada):
            delete_adapter(settings, "bobs-lora-2", db=db)
        _nothing_registered(settings)
    finally:
        db.dispose()
