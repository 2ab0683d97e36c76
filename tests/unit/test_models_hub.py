"""Downloading from the Hugging Face Hub (studio.models.hub and studio.models.fetch), against a loopback Hub
(tests/fake_hub.py): what a user is shown before a download (files, total size), which files are taken, the messages
when the Hub is off, out of reach, gated or wrong, and a download that is stopped mid-file and then resumed where it
stopped."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.errors import (
    AuthenticationError,
    ForbiddenError,
    HubUnavailableError,
    NotFoundError,
    ServerError,
    ValidationError,
)
from studio.models.fetch import DownloadProgress, download_files
from studio.models.hub import (
    check_repo_filename,
    check_repo_id,
    check_revision,
    list_hub_files,
    select_files,
)
from studio.models.registry import ModelRegistry, write_pending_marker
from studio.settings import Settings
from tests.fake_hub import FakeHub

MiB = 1024 * 1024
TOKEN = "hf_test_secret_token_4c1d"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("HF_TOKEN", "STUDIO_HF_TOKEN", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no token `hf auth login` saved elsewhere
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "hub")
    s.ensure_dirs()
    return s


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.patch(monkeypatch)
        yield fake


def weights(n: int, seed: int = 1) -> bytes:
    """``n`` bytes that differ from any other seed's (a resumed file must be the right one, byte for byte)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (n // len(block) + 1))[:n]


HF_FILES = {
    "config.json": json.dumps({"model_type": "llama"}).encode(),
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b'{"model_max_length": 512}',
    "model.safetensors": weights(3000),
    "README.md": b"---\nlicense: mit\nlanguage: [en, de]\n---\n",
}


# -- what users type -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repo", ["org/name", "name", "Org-1/na.me_2"])
def test_repo_ids_in_the_hubs_form_are_accepted(repo: str) -> None:
    assert check_repo_id(f"  {repo} ") == repo


@pytest.mark.parametrize("repo", ["", "../etc/passwd", "a/b/c", "org--x/y", "/abs", "org/name.git", "a b/c", "~/x"])
def test_repo_ids_that_are_not_hub_names_are_refused(repo: str) -> None:
    with pytest.raises(ValidationError) as err:
        check_repo_id(repo)
    assert err.value.param == "repo"


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "a" * 40])
def test_revisions_are_accepted(revision: str) -> None:
    assert check_revision(revision) == revision


@pytest.mark.parametrize("revision", ["../../x", "/main", "main/", "a//b", "x\x00", "..", "a\\b"])
def test_revisions_that_could_leave_the_cache_are_refused(revision: str) -> None:
    with pytest.raises(ValidationError) as err:
        check_revision(revision)
    assert err.value.param == "revision"


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/passwd", "a/../../b", "a\\b", "", "x\x00y", "./x"])
def test_file_names_that_could_leave_the_cache_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        check_repo_filename(name)
    assert err.value.param == "file"


# -- which files are taken -----------------------------------------------------------------------------------------


def test_a_transformers_repo_takes_config_tokenizer_card_and_one_weight_format() -> None:
    names = [
        ".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors",
        "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "chat_template.jinja", "onnx/model.onnx", "original/consolidated.00.pth", "model.Q4_K_M.gguf",
        "flax_model.msgpack", "tf_model.h5", "merges.txt", "vocab.json", "tokenizer.model", "modeling_x.py",
    ]  # fmt: skip
    assert select_files(names, None) == [
        "README.md", "chat_template.jinja", "config.json", "generation_config.json", "merges.txt",
        "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
        "tokenizer_config.json", "vocab.json",
    ]  # fmt: skip


def test_bin_weights_are_taken_when_there_are_no_safetensors() -> None:
    names = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
             "pytorch_model.bin.index.json"]  # fmt: skip
    assert select_files(names, None) == sorted(names)


GGUF_REPO = ["README.md", "m.Q4_K_M.gguf", "m.Q8_0.gguf", "m.f16.gguf", "LICENSE"]


def test_a_gguf_repo_needs_a_file_or_a_quant_and_says_which_there_are() -> None:
    with pytest.raises(ValidationError) as err:
        select_files(GGUF_REPO, None)
    assert err.value.param == "file"
    assert "Q4_K_M" in err.value.message and "Q8_0" in err.value.message and "F16" in err.value.message


@pytest.mark.parametrize(("file", "taken"), [("q4_k_m", "m.Q4_K_M.gguf"), ("m.Q8_0.gguf", "m.Q8_0.gguf")])
def test_a_quant_or_a_file_name_picks_one_gguf_and_its_card(file: str, taken: str) -> None:
    assert select_files(GGUF_REPO, file) == ["README.md", taken]


def test_a_repo_with_one_gguf_takes_it_without_asking() -> None:
    assert select_files(["README.md", "m.Q4_0.gguf"], None) == ["README.md", "m.Q4_0.gguf"]


def test_split_gguf_shards_of_one_quant_are_taken_together() -> None:
    names = ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf", "m-Q8_0.gguf"]
    assert select_files(names, "Q4_K_M") == names[:2]


def test_an_unknown_file_or_quant_is_not_found_and_the_choices_are_named() -> None:
    with pytest.raises(NotFoundError) as err:
        select_files(GGUF_REPO, "Q2_K")
    assert err.value.param == "file" and "Q4_K_M" in err.value.message


def test_a_repo_without_loadable_weights_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as err:
        select_files(["README.md", "model.onnx"], None)
    assert "safetensors" in err.value.message and "GGUF" in err.value.message


# -- listing -------------------------------------------------------------------------------------------------------


def test_listing_shows_every_file_with_its_size_and_the_total_to_download(hub: FakeHub, settings: Settings) -> None:
    repo = hub.add("org/tiny", {**HF_FILES, "pytorch_model.bin": weights(500)})
    listing = list_hub_files(settings, "org/tiny")

    assert listing.commit == repo.sha and listing.revision == "main"
    assert {f.name: f.size for f in listing.files} == {n: len(d) for n, d in repo.files.items()}
    assert listing.selected == sorted(HF_FILES)  # the .bin twin of the safetensors is listed but not taken
    assert listing.download_bytes == sum(len(d) for d in HF_FILES.values())
    assert listing.total_bytes == listing.download_bytes + 500
    assert listing.license == "mit" and listing.languages == ["en", "de"]
    assert not listing.gated


def test_offline_mode_is_named_and_nothing_is_asked(settings: Settings) -> None:
    # tests/conftest.py sets HF_HUB_OFFLINE=1 for the whole suite: exactly a user's offline machine
    with pytest.raises(HubUnavailableError) as err:
        list_hub_files(settings, "org/tiny")
    assert err.value.status_code == 503
    assert "HF_HUB_OFFLINE" in err.value.message


def test_a_hub_out_of_reach_says_so_and_names_the_endpoint(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    with FakeHub() as gone:
        url = gone.url  # a port that answered a moment ago and now refuses connections
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    with pytest.raises(HubUnavailableError) as err:
        list_hub_files(settings, "org/tiny")
    assert "cannot reach the Hugging Face Hub" in err.value.message and url in err.value.message


def test_an_unknown_repo_or_revision_is_not_found(hub: FakeHub, settings: Settings) -> None:
    hub.add("org/tiny", HF_FILES)
    with pytest.raises(NotFoundError) as err:
        list_hub_files(settings, "org/nope")
    assert err.value.param == "repo" and "org/nope" in err.value.message and "HF_TOKEN" in err.value.message
    with pytest.raises(NotFoundError) as err:
        list_hub_files(settings, "org/tiny", revision="v9")
    assert err.value.param == "revision" and "v9" in err.value.message


def test_a_gated_repo_without_a_token_is_a_401_that_says_what_to_do(hub: FakeHub, settings: Settings) -> None:
    hub.add("org/gated", HF_FILES, gated_token=TOKEN)
    with pytest.raises(AuthenticationError) as err:
        list_hub_files(settings, "org/gated")
    assert err.value.status_code == 401
    message = err.value.message
    assert "gated" in message and "HF_TOKEN" in message and "401" in message and "org/gated" in message


def test_a_gated_repo_with_a_token_without_access_is_a_403(
    hub: FakeHub, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("org/gated", HF_FILES, gated_token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", "hf_someone_else")
    with pytest.raises(ForbiddenError) as err:
        list_hub_files(settings, "org/gated")
    assert err.value.status_code == 403 and "hf_someone_else" not in err.value.message


def test_a_gated_repo_lists_with_the_token_from_the_settings(hub: FakeHub, settings: Settings) -> None:
    hub.add("org/gated", HF_FILES, gated_token=TOKEN)
    listing = list_hub_files(settings.model_copy(update={"hf_token": TOKEN}), "org/gated")
    assert listing.gated and listing.selected == sorted(HF_FILES)
    assert all(r.authorized for r in hub.requests)
    assert TOKEN not in repr(settings.model_copy(update={"hf_token": TOKEN}))


# -- downloading ---------------------------------------------------------------------------------------------------


def test_a_download_stopped_mid_file_resumes_where_it_stopped(hub: FakeHub, settings: Settings) -> None:
    big = weights(3 * MiB + 12345, seed=7)
    hub.add("org/big", {**HF_FILES, "model.safetensors": big})
    listing = list_hub_files(settings, "org/big")
    seen: list[DownloadProgress] = []
    hub.rate = 2 * MiB  # slow enough to stop it after its first MiB

    def stop_after_first_mib() -> bool:
        return any(p.file == "model.safetensors" and p.file_bytes_done >= MiB for p in seen)

    first = download_files(settings, listing, seen.append, stop_after_first_mib)

    assert first.stopped and first.snapshot is None
    stopped_at = seen[-1].bytes_done
    assert 0 < stopped_at < listing.download_bytes
    assert all(b.bytes_done <= a.bytes_done for b, a in itertools.pairwise(seen))  # never goes back
    assert {p.bytes_total for p in seen} == {listing.download_bytes}
    assert any(p.bytes_per_s and p.eta_s is not None for p in seen)
    assert all(e.repo != "org/big" for e in ModelRegistry(settings).list_models())  # nothing half-downloaded

    hub.rate = None
    seen.clear()
    done = download_files(settings, listing, seen.append, lambda: False)

    assert not done.stopped and done.snapshot is not None
    ranges = [r.range for r in hub.file_requests("model.safetensors")]
    assert ranges[0] is None and ranges[-1] is not None
    resumed_from = int(ranges[-1].removeprefix("bytes=").rstrip("-"))
    assert resumed_from >= MiB  # it went on from the bytes already on disk, not from 0
    assert (done.snapshot / "model.safetensors").read_bytes() == big
    assert done.snapshot == settings.hf_cache_dir / "models--org--big" / "snapshots" / listing.commit
    assert (settings.hf_cache_dir / "models--org--big" / "refs" / "main").read_text() == listing.commit
    assert not list((settings.hf_cache_dir / "models--org--big" / "blobs").glob("*.incomplete"))
    assert seen[-1].bytes_done == listing.download_bytes
    # the small files finished in the first run were not fetched again
    assert len(hub.file_requests("config.json")) == 1


def test_a_download_of_files_already_complete_reports_them_done_not_zero(hub: FakeHub, settings: Settings) -> None:
    # a resumed download whose files were all linked before the cancel took effect said "0 B of 0 B"
    hub.add("org/done", HF_FILES)
    listing = list_hub_files(settings, "org/done")
    download_files(settings, listing, lambda p: None, lambda: False)
    seen: list[DownloadProgress] = []
    again = download_files(settings, listing, seen.append, lambda: False)
    assert not again.stopped and again.snapshot is not None
    size = sum(len(HF_FILES[n]) for n in listing.selected)
    assert seen and seen[-1].bytes_total == size and seen[-1].bytes_done == size


def test_a_corrupted_partial_file_is_not_kept(hub: FakeHub, settings: Settings) -> None:
    data = weights(2 * MiB, seed=3)
    hub.add("org/c", {**HF_FILES, "model.safetensors": data})
    listing = list_hub_files(settings, "org/c")
    blobs = settings.hf_cache_dir / "models--org--c" / "blobs"
    blobs.mkdir(parents=True)
    etag = hashlib.sha256(data).hexdigest()
    (blobs / f"{etag}.incomplete").write_bytes(b"\xff" * MiB)  # the first MiB is wrong: the hash will not match

    with pytest.raises(ServerError) as err:
        download_files(settings, listing, lambda p: None, lambda: False)
    assert "sha256" in err.value.message and "model.safetensors" in err.value.message
    assert not (blobs / f"{etag}.incomplete").exists()  # the next try starts that file over
    done = download_files(settings, listing, lambda p: None, lambda: False)
    assert done.snapshot is not None and (done.snapshot / "model.safetensors").read_bytes() == data


def test_the_token_is_sent_but_never_written(hub: FakeHub, settings: Settings, tmp_path: Path) -> None:
    hub.add("org/gated", HF_FILES, gated_token=TOKEN)
    with_token = settings.model_copy(update={"hf_token": TOKEN})
    listing = list_hub_files(with_token, "org/gated")
    done = download_files(with_token, listing, lambda p: None, lambda: False)
    assert done.snapshot is not None
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert TOKEN.encode() not in path.read_bytes(), path


# -- the registry never offers half a download ---------------------------------------------------------------------


def test_a_snapshot_with_a_download_pending_is_not_listed_until_complete(settings: Settings) -> None:
    commit = "c" * 40
    snap = settings.hf_cache_dir / "models--org--half" / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    (snap / "model-00001-of-00002.safetensors").write_bytes(b"x")
    marker = write_pending_marker(
        settings, "job1", "org/half", commit, ["config.json", *(f"model-0000{i}-of-00002.safetensors" for i in (1, 2))]
    )
    registry = ModelRegistry(settings)

    assert [e.id for e in registry.list_models() if e.repo == "org/half"] == []
    (snap / "model-00002-of-00002.safetensors").write_bytes(b"y")
    assert [e.id for e in registry.list_models() if e.repo == "org/half"] == ["org/half"]  # every file is there
    os.remove(marker)
    assert [e.id for e in registry.list_models() if e.repo == "org/half"] == ["org/half"]
