"""Issue 14, findings 1 and 2, reproduced through `gradio_client` exactly as an attacker who reaches the Gradio API
would: save a safety policy anywhere, read /etc/passwd back through the word-list editor, write Python into
STUDIO_HOME/plugins/ through the word-list save and have the Evaluate tab's plugin reload run it, and get a pickled
Detoxify checkpoint unpickled by saving a policy. Each is refused, no file is created and nothing runs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from gradio_client import Client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def default_policy(client: Client) -> dict[str, Any]:
    """The studio's policy as plain data (the picker's default value)."""
    return yaml.safe_load(client.predict(api_name="/safety_policy")["yaml"])  # type: ignore[no-any-return]


def refused(call: Any, *args: Any, api_name: str) -> str:
    """The error message of a call that must fail."""
    with pytest.raises(Exception) as info:
        call(*args, api_name=api_name)
    return str(info.value)


def evil_plugin_code(marker: Path) -> str:
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n\ndef register(registry):\n    pass\n"


def test_policy_cannot_be_saved_outside_the_safety_folder(client: Client, server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = yaml.safe_dump(default_policy(client))
    home = Path(server.home)
    for target in (
        tmp_path / "anywhere.yaml",
        home / "plugins" / "evil.yaml",
        home / "aliases" / "evil.yaml",
        "../plugins/evil.yaml",
        "safety/../plugins/evil.yaml",
    ):
        message = refused(client.predict, str(target), text, api_name="/safety_save_policy")
        assert "outside the folders the studio may use ($STUDIO_HOME/safety" in message
    assert not (tmp_path / "anywhere.yaml").exists()
    assert not (home / "plugins" / "evil.yaml").exists() and not (home / "aliases" / "evil.yaml").exists()
    message = refused(client.predict, str(home / "safety" / "evil.py"), text, api_name="/safety_save_policy")
    assert "must end with .yaml or .yml" in message
    assert not (home / "safety" / "evil.py").exists()


def test_etc_passwd_is_never_read_back(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    policy = default_policy(client)
    policy["word_list"]["file"] = "/etc/passwd"
    target = Path(server.home) / "safety" / f"leak-{uuid.uuid4().hex[:8]}.yaml"
    name = str(target)  # a path inside the policy folder is accepted as well as a name
    message = refused(client.predict, name, yaml.safe_dump(policy), api_name="/safety_save_policy")
    assert "'word_list.file': '/etc/passwd' is outside the folders the studio may use" in message
    assert not target.exists()
    # A policy file that already says so (written before this fix, or by hand) is shown without the file's text
    # and cannot be scanned with.
    target.write_text(yaml.safe_dump(policy), encoding="utf-8")
    shown = client.predict(name, api_name="/safety_policy")
    assert "root:" not in json.dumps(shown)
    assert shown["words"] == "" and "outside the folders" in shown["word_list_file"]
    message = refused(client.predict, "root daemon", name, api_name="/safety_scan")
    assert "outside the folders" in message and "root:" not in message
    for path in ("/etc/passwd", "/proc/self/environ", "../../../../etc/passwd"):
        message = refused(client.predict, path, api_name="/safety_policy")
        assert "root:" not in message and "outside the folders" in message


def attempt(call: Any, *args: Any, api_name: str) -> str | None:
    """Run one step of an attack; its error message, or None when the studio went along with it."""
    try:
        call(*args, api_name=api_name)
    except Exception as exc:
        return str(exc)
    return None


def test_word_list_save_never_writes_a_plugin_and_reload_runs_nothing(client: Client, server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = Path(server.home)
    before = sorted(p.name for p in (home / "plugins").iterdir())
    evil = home / "plugins" / f"evil_{uuid.uuid4().hex[:8]}.py"
    marker = tmp_path / "pwned"
    policy = default_policy(client)
    policy["word_list"]["file"] = str(evil)
    target = home / "safety" / f"plug-{uuid.uuid4().hex[:8]}.yaml"
    name = str(target)
    # the attack: a policy whose word list is a .py in the plugins folder, Python saved as its "word list", reload
    errors = [attempt(client.predict, name, yaml.safe_dump(policy), api_name="/safety_save_policy")]
    if not target.exists():  # as if the policy had been written before this fix, or by hand
        target.write_text(yaml.safe_dump(policy), encoding="utf-8")
    errors.append(attempt(client.predict, name, evil_plugin_code(marker), api_name="/safety_save_words"))
    for words in (f"plugins/{evil.name}", f"safety/../plugins/{evil.stem}.txt", str(home / "plugins" / "x.txt")):
        policy["word_list"]["file"] = words
        target.write_text(yaml.safe_dump(policy), encoding="utf-8")
        errors.append(attempt(client.predict, name, evil_plugin_code(marker), api_name="/safety_save_words"))
    _metrics, plugins = client.predict(api_name="/evaluate_plugins")
    assert not marker.exists(), "the plugin reload ran code written through the word-list editor"
    assert sorted(p.name for p in (home / "plugins").iterdir()) == before
    assert not plugins.get("data") or all("evil" not in str(row) for row in plugins["data"])
    assert all(e is not None and "word_list.file" in e for e in errors), errors


def test_studio_policy_word_list_is_saved_under_the_home_not_configs(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    shipped = Path(__file__).resolve().parents[2] / "configs" / "safety" / "offensive_words.txt"
    before = shipped.read_text(encoding="utf-8")
    shown = client.predict("policy", api_name="/safety_policy")
    assert shown["word_list_file"] == "$STUDIO_HOME/safety/offensive_words.txt"
    saved = client.predict("policy", shown["words"] + "broccoli\n", api_name="/safety_save_words")
    assert "$STUDIO_HOME/safety/offensive_words.txt" in saved
    assert "broccoli" in (Path(server.home) / "safety" / "offensive_words.txt").read_text(encoding="utf-8")
    assert shipped.read_text(encoding="utf-8") == before
    # the shipped policy's list is read-only
    message = refused(client.predict, "default", "broccoli\n", api_name="/safety_save_words")
    assert "read-only" in message
    assert shipped.read_text(encoding="utf-8") == before
    client.predict("policy", shown["words"], api_name="/safety_save_words")


def write_pickle_checkpoint(folder: Path, marker: Path) -> Path:
    """A '.ckpt' whose unpickling would create ``marker`` (what an attacker uploads), with a config.json beside it
    so that it passes the layout check and reaches the loader."""
    import torch

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    ckpt = folder / "toxic.ckpt"
    torch.save({"config": Payload(), "state_dict": {}}, ckpt)
    return ckpt


@pytest.mark.parametrize("scorer", ["detoxify", "auto"])
def test_pickled_detoxify_checkpoint_is_refused_and_never_runs(  # type: ignore[no-untyped-def]
    client: Client, server, tmp_path: Path, scorer: str
) -> None:
    home = Path(server.home)
    marker = tmp_path / "unpickled"
    folder = home / "models" / f"evil-detox-{uuid.uuid4().hex[:8]}"
    ckpt = write_pickle_checkpoint(folder, marker)
    policy = default_policy(client)
    policy["toxicity"].update({"scorer": scorer, "detoxify_checkpoint": str(ckpt)})
    target = home / "safety" / f"pickle-{scorer}-{uuid.uuid4().hex[:8]}.yaml"
    name = str(target)
    message = refused(client.predict, name, yaml.safe_dump(policy), api_name="/safety_save_policy")
    assert "never unpickles" in message and "convert it" in message
    assert not marker.exists()
    assert not target.exists()
    # the same file outside the model folders (e.g. Gradio's upload cache) is refused before it is opened
    outside = write_pickle_checkpoint(tmp_path / "upload", marker)
    policy["toxicity"]["detoxify_checkpoint"] = str(outside)
    message = refused(client.predict, name, yaml.safe_dump(policy), api_name="/safety_save_policy")
    # the user's own text is echoed, nothing else about the outside path
    assert f"'toxicity.detoxify_checkpoint': '{outside}' is outside the folders the studio may use" in message
    assert not marker.exists()
