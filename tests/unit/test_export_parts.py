"""Export building blocks without a model: names, partial folders, manifests, agreement figures, the converter's
extraction from llama-cpp-python's sdist, Triton and Docker files, the CLI's verbs."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from studio.errors import ConflictError, ValidationError
from studio.export import manifest as mf
from studio.export.docker import container_engine, dockerfile_cpu, dockerfile_gpu, write_docker_context
from studio.export.exporter import (
    PARTIAL_PREFIX,
    check_export_name,
    check_free,
    clean_stale_partials,
    default_name,
    list_exports,
    partial_folder,
    publish,
)
from studio.export.gguf import QUANTS, check_quant, gguf_file_name, install_converter
from studio.export.job import ExportConfig
from studio.export.triton import write_triton_repository
from studio.export.verify import compare
from studio.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hf-cache")
    s.ensure_dirs()
    return s


@pytest.mark.parametrize("bad", ["../x", "a/b", "/abs", ".hidden", "x..y", "", "name.gguf", "a b"])
def test_a_name_that_is_a_path_or_not_a_folder_name_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        check_export_name(bad)
    assert err.value.param == "name"
    if bad:  # an empty name in a job config means "make one up"
        with pytest.raises(ValueError, match="not an export name"):
            ExportConfig(format="merged", name=bad)  # the job config refuses it too


def test_default_name_is_a_valid_folder_name() -> None:
    assert default_name("HuggingFaceTB/SmolLM2-135M-Instruct", "my-lora", "gguf", "q4_k_m") == (
        "SmolLM2-135M-Instruct-my-lora-gguf-q4_k_m"
    )
    assert check_export_name(default_name("/weird path/a..b", None, "merged", None))


def test_quant_names_are_checked_and_listed() -> None:
    assert check_quant(" Q4_K_M ") == "q4_k_m"
    with pytest.raises(ValidationError) as err:
        check_quant("q9_9")
    assert "q8_0" in str(err.value) and err.value.param == "quant"
    assert {"f16", "q8_0", "q4_k_m"} <= set(QUANTS)
    assert gguf_file_name("smol", "q8_0") == "smol.Q8_0.gguf"
    assert ExportConfig(format="gguf").gguf_quant() == "f16"
    assert ExportConfig(format="merged").gguf_quant() is None


def test_manifest_lists_every_file_with_its_sha256_and_spots_changes(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello", encoding="utf-8")
    (folder / "sub" / "b.bin").write_bytes(b"\x00\x01")
    (folder / mf.OWNER_FILE).write_text("123", encoding="utf-8")
    mf.write_manifest(folder, {"name": "exp", "format": "merged"})
    data = mf.read_manifest(folder)
    assert data is not None
    files = {f["path"]: f for f in data["files"]}
    assert set(files) == {"a.txt", "sub/b.bin"}  # the owner mark and the manifest itself are not listed
    assert files["a.txt"]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert mf.check_manifest(folder) == []
    (folder / "a.txt").write_text("hellO", encoding="utf-8")
    (folder / "extra").write_text("x", encoding="utf-8")
    (folder / "sub" / "b.bin").unlink()
    problems = mf.check_manifest(folder)
    assert any("a.txt changed" in p for p in problems)
    assert "extra is not listed" in problems and "sub/b.bin is missing" in problems


def test_adapter_lineage_comes_from_the_run_file_and_run_folder(tmp_path: Path) -> None:
    artifact = tmp_path / "runs" / "job123" / "artifact"
    artifact.mkdir(parents=True)
    run = {"name": "a", "method": "lora", "base_model": "default", "created_at": "2026-12-07T10:00:00+00:00",
           "dataset": {"name": "ds", "version": 2, "hash": "abc"}}  # fmt: skip
    (artifact / mf.RUN_FILE).write_text(json.dumps(run), encoding="utf-8")
    lineage = mf.adapter_lineage(artifact)
    assert lineage is not None
    assert lineage["training_job"] == "job123" and lineage["dataset"] == {"name": "ds", "version": 2, "hash": "abc"}
    assert mf.adapter_lineage(tmp_path) is None


def test_a_partial_folder_is_hidden_removed_on_error_and_published_by_one_rename(settings: Settings) -> None:
    with pytest.raises(RuntimeError), partial_folder(settings, "boom") as partial:
        (partial / "x").write_text("x", encoding="utf-8")
        raise RuntimeError("build failed")
    assert not partial.exists()
    with partial_folder(settings, "good") as partial:
        assert partial.name.startswith(PARTIAL_PREFIX)
        (partial / "x").write_text("x", encoding="utf-8")
        mf.write_manifest(partial, {"name": "good", "format": "merged"})
        assert list_exports(settings) == []  # not listed while it is built
        publish(partial, settings.home / "exports" / "good")
    assert [e.name for e in list_exports(settings, check=True)] == ["good"]
    assert list_exports(settings, check=True)[0].problems == []
    assert not (settings.home / "exports" / "good" / mf.OWNER_FILE).exists()
    with pytest.raises(ConflictError):
        check_free(settings, "good", "merged", None)


def test_partials_of_dead_builders_are_removed_and_live_ones_kept(settings: Settings) -> None:
    exports = settings.home / "exports"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = exports / f"{PARTIAL_PREFIX}x-{dead.pid}-aaaa"
    stale.mkdir(parents=True)
    (stale / mf.OWNER_FILE).write_text(str(dead.pid), encoding="utf-8")
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = exports / f"{PARTIAL_PREFIX}y-{live_proc.pid}-bbbb"
        live.mkdir()
        (live / mf.OWNER_FILE).write_text(str(live_proc.pid), encoding="utf-8")
        assert clean_stale_partials(settings) == [stale.name]
        assert live.is_dir() and not stale.exists()
    finally:
        live_proc.kill()
        live_proc.wait()


def test_agreement_counts_identical_prompts_positions_and_prefixes() -> None:
    prompts = ("a", "b")
    same = compare([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 5]], engine="e", reference_label="r",
                   required_identical=True, prompts=prompts)  # fmt: skip
    assert same.identical and same.passed and same.token_agreement == 1.0
    drift = compare([[1, 2, 3, 4], [4, 5]], [[1, 9, 3, 4], [4, 5, 6]], engine="e", reference_label="r",
                    required_identical=True, prompts=prompts)  # fmt: skip
    assert drift.prompts_identical == 0 and not drift.passed
    assert drift.tokens_matching == 5 and drift.tokens_total == 7
    assert drift.prefix_agreement == pytest.approx(3 / 6)
    lossy = compare([[1, 2]], [[1, 3]], engine="e", reference_label="r", required_identical=False, prompts=("a",))
    assert lossy.passed and not lossy.identical  # a quantized export only reports its agreement


def _fake_sdist(path: Path) -> Path:
    """A tar.gz laid out as llama-cpp-python's sdist, with a member that tries to escape."""
    files = {
        "llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py": b"print('convert')\n",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/conversion/__init__.py": b"",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py/gguf/__init__.py": b"",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/LICENSE": b"MIT\n",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/src/llama.cpp": b"// not wanted\n",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/conversion/../../../../evil.py": b"bad\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_converter_is_taken_out_of_the_sdist_and_nothing_else(tmp_path: Path) -> None:
    archive = _fake_sdist(tmp_path / "llama_cpp_python-0.3.36.tar.gz")
    dest = install_converter(tmp_path / "conv", archive=archive)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == ["LICENSE", "conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py",
                   "whetstone-converter.json"]  # fmt: skip
    assert json.loads((dest / "whetstone-converter.json").read_text())["version"] == "0.3.36"
    assert not (tmp_path / "evil.py").exists()


def test_triton_repository_uses_the_vllm_backend(tmp_path: Path) -> None:
    weights = write_triton_repository(tmp_path, "smol")
    assert weights == tmp_path / "model_repository" / "smol" / "1" / "model"
    config = (tmp_path / "model_repository" / "smol" / "config.pbtxt").read_text()
    assert 'backend: "vllm"' in config and 'name: "smol"' in config
    engine_args = json.loads((tmp_path / "model_repository" / "smol" / "1" / "model.json").read_text())
    assert engine_args["model"] == "/models/smol/1/model"
    assert "not installable" in (tmp_path / "README.md").read_text()


def test_docker_context_has_cpu_and_gpu_images_and_run_lines(tmp_path: Path) -> None:
    gguf = tmp_path / "gguf" / "smol.Q8_0.gguf"
    assert "llama.cpp" in dockerfile_cpu("smol", gguf) and "/models/smol.Q8_0.gguf" in dockerfile_cpu("smol", gguf)
    assert '"transformers", "serve", "/model"' in dockerfile_cpu("smol", None)
    assert "vllm.entrypoints.openai.api_server" in dockerfile_gpu("smol")
    notes = write_docker_context(tmp_path, "Smol", tmp_path / "model", None)
    readme = (tmp_path / "README.md").read_text()
    assert "docker run --rm -p 8000:8000 whetstone/smol:cpu" in readme
    assert "--gpus all" in readme
    assert (tmp_path / "Dockerfile.cpu.dockerignore").read_text().startswith("gguf/")
    cli, note = container_engine()
    assert notes[0] == note and (cli is None) == note.startswith("no container engine")


def test_cli_has_the_export_verbs() -> None:
    from studio.export.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "gguf", "default", "--adapter", "a", "--quant", "q8_0", "--name", "n"])
    assert (args.format, args.model, args.adapter, args.quant, args.name) == ("gguf", "default", "a", "q8_0", "n")
    assert parser.parse_args(["export", "list", "--json"]).json


def test_cli_refuses_a_path_name_before_queueing(tmp_path: Path) -> None:
    env = dict(os.environ, STUDIO_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    env.pop("STUDIO_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "studio", "export", "merged", "default", "--name", "../x"],
        env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "not an export name" in proc.stderr
    assert not (tmp_path / "home" / "x").exists() and not (tmp_path / "x").exists()
