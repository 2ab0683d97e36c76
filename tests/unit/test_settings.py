"""Settings: where the studio keeps its files, which env vars change what, and what is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError

from studio.settings import BUNDLED_MODEL_ID, Settings, generation_defaults, load_defaults

_ENV_VARS = (
    "STUDIO_HOME",
    "STUDIO_DATABASE_URL",
    "STUDIO_DEFAULT_MODEL",
    "STUDIO_HOST",
    "STUDIO_PORT",
    "STUDIO_API_KEY",
    "STUDIO_MODEL_DIRS",
    "STUDIO_HF_CACHE",
    "STUDIO_DTYPE",
    "STUDIO_THREADS",
    "SPACE_ID",
    "GRADIO_SERVER_NAME",
    "GRADIO_SERVER_PORT",
    "HF_HUB_CACHE",
    "HF_HOME",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No STUDIO_* / Space / HF variable from the developer's shell leaks in; HOME is a temp folder."""
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "userhome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _fake_data_dir(monkeypatch: pytest.MonkeyPatch, exists: bool) -> None:
    """Make ``Path("/data").is_dir()`` answer ``exists`` (a Space's persistent storage) without touching /."""
    real_is_dir = Path.is_dir

    def is_dir(self: Path) -> bool:
        if str(self) == "/data":
            return exists
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)


# -- STUDIO_HOME ---------------------------------------------------------------------------------------------
def test_home_defaults_to_dot_whetstone_in_user_home(clean_env: Path) -> None:
    assert Settings().home == (clean_env / ".whetstone").resolve()


def test_home_on_a_space_with_persistent_storage_is_data_whetstone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/whetstone")
    _fake_data_dir(monkeypatch, exists=True)
    assert Settings().home == Path("/data/whetstone")


def test_home_on_a_space_without_persistent_storage_stays_in_user_home(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/whetstone")
    _fake_data_dir(monkeypatch, exists=False)
    assert Settings().home == (clean_env / ".whetstone").resolve()


def test_data_dir_alone_without_space_id_does_not_move_home(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    _fake_data_dir(monkeypatch, exists=True)
    assert Settings().home == (clean_env / ".whetstone").resolve()


def test_studio_home_env_overrides_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "elsewhere"))
    assert Settings().home == (tmp_path / "elsewhere").resolve()


def test_studio_home_env_expands_tilde(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setenv("STUDIO_HOME", "~/my-studio")
    assert Settings().home == (clean_env / "my-studio").resolve()


def test_relative_home_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings(home=Path("rel/studio"))
    assert s.home.is_absolute()
    assert s.home == (tmp_path / "rel" / "studio").resolve()


# -- database ------------------------------------------------------------------------------------------------
def test_default_db_url_is_sqlite_file_in_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.db_url == f"sqlite:///{tmp_path.resolve() / 'studio.db'}"


def test_database_url_env_overrides_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STUDIO_DATABASE_URL", "postgresql://studio@db/studio")
    assert Settings(home=tmp_path).db_url == "postgresql://studio@db/studio"


# -- dtype / port / threads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["auto", "bfloat16", "float16", "float32"])
def test_allowed_dtypes_are_accepted(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    monkeypatch.setenv("STUDIO_DTYPE", dtype)
    assert Settings().dtype == dtype


def test_invalid_dtype_is_rejected_with_the_allowed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_DTYPE", "fp8")
    with pytest.raises(PydanticValidationError) as info:
        Settings()
    text = str(info.value)
    assert "STUDIO_DTYPE" in text
    for allowed in ("auto", "bfloat16", "float16", "float32"):
        assert allowed in text
    assert "'fp8'" in text


def test_port_defaults_to_config_file(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).port == int(load_defaults()["server"]["port"]) == 7860


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_port_out_of_range_is_rejected(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("STUDIO_PORT", port)
    with pytest.raises(PydanticValidationError) as info:
        Settings()
    assert "port" in str(info.value)


@pytest.mark.parametrize("port", ["1", "65535", "8080"])
def test_port_in_range_is_accepted(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("STUDIO_PORT", port)
    assert Settings().port == int(port)


def test_gradio_server_port_sets_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9001")
    assert Settings().port == 9001


def test_studio_port_beats_gradio_server_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9001")
    monkeypatch.setenv("STUDIO_PORT", "9002")
    assert Settings().port == 9002


def test_gradio_server_port_out_of_range_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_SERVER_PORT", "70000")
    with pytest.raises(PydanticValidationError, match="port"):
        Settings()


def test_non_numeric_gradio_server_port_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_SERVER_PORT", "abc")
    with pytest.raises(Exception) as info:
        Settings()
    assert "GRADIO_SERVER_PORT" in str(info.value) or "port" in str(info.value)


def test_host_defaults_to_config_and_follows_gradio_server_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().host == "127.0.0.1"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert Settings().host == "0.0.0.0"


def test_threads_below_one_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_THREADS", "0")
    with pytest.raises(PydanticValidationError, match="threads"):
        Settings()


# -- folders -------------------------------------------------------------------------------------------------
def test_ensure_dirs_creates_home_and_subfolders(tmp_path: Path) -> None:
    home = tmp_path / "new" / "studio"
    s = Settings(home=home)
    assert not home.exists()
    s.ensure_dirs()
    for sub in ("models", "aliases", "adapters", "datasets", "runs", "exports", "plugins"):
        assert (home / sub).is_dir(), sub
    assert s.models_dir == home.resolve() / "models"


def test_ensure_dirs_is_idempotent_and_keeps_files(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    s.ensure_dirs()
    keep = tmp_path / "models" / "keep.txt"
    keep.write_text("hi", encoding="utf-8")
    s.ensure_dirs()
    assert keep.read_text(encoding="utf-8") == "hi"


def test_model_dirs_split_on_path_separator(tmp_path: Path) -> None:
    import os

    s = Settings(home=tmp_path, model_dirs=os.pathsep.join([str(tmp_path / "a"), "", "~/b"]))
    assert s.extra_model_dirs == [tmp_path / "a", Path.home() / "b"]


def test_hf_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_env: Path) -> None:
    assert Settings(home=tmp_path).hf_cache_dir == clean_env / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert Settings(home=tmp_path).hf_cache_dir == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert Settings(home=tmp_path).hf_cache_dir == tmp_path / "hubcache"
    assert Settings(home=tmp_path, hf_cache=tmp_path / "explicit").hf_cache_dir == tmp_path / "explicit"


# -- default model -------------------------------------------------------------------------------------------
def test_default_model_comes_from_defaults_yaml() -> None:
    assert load_defaults()["default_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert Settings().default_model == "HuggingFaceTB/SmolLM2-135M-Instruct" == BUNDLED_MODEL_ID


def test_studio_default_model_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_DEFAULT_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    assert Settings().default_model == "Qwen/Qwen2.5-0.5B-Instruct"


def test_generation_defaults_are_a_copy() -> None:
    d = generation_defaults()
    assert d["temperature"] == 0.7
    assert d["max_tokens"] == 256
    d["temperature"] = 99
    assert generation_defaults()["temperature"] == 0.7
