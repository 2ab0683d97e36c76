"""The Aliases tab's public api_names through `gradio_client`, against the launched studio."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from gradio_client import Client, handle_file

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def form(name: str, **overrides: str) -> dict[str, str]:
    values = dict.fromkeys(
        [
            "temperature",
            "top_p",
            "top_k",
            "frequency_penalty",
            "presence_penalty",
            "repetition_penalty",
            "max_tokens",
            "seed",
            "stop",
            "user",
            "n_threads",
            "n_ctx",
            "n_parallel",
            "n_predict",
            "n_keep",
            "n_seed",
            "engine",
            "dtype",
        ],
        "",
    )
    values.update({"name": name, "model": BUNDLED, "chat_template": "(model's own)"})
    values.update(overrides)
    return values


def table_names(table: dict) -> list[str]:
    data = table["data"] if "data" in table else table["value"]["data"]  # a plain table or a component update
    return [row[0] for row in data]


def test_save_list_clone_delete(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    report, table, stats, _mode = client.predict(
        **form("ui:test", temperature="0.2", max_tokens="64", stop="END"), api_name="/aliases_save"
    )
    assert "saved" in report
    assert "ui:test" in table_names(table)
    assert "1** user" in stats or "user" in stats
    saved = yaml.safe_load((server.home / "aliases" / "ui--test.yaml").read_text(encoding="utf-8"))
    assert saved["alias"] == "ui:test"
    assert saved["request_params"] == {"temperature": 0.2, "max_tokens": 64, "stop": ["END"]}

    table, stats = client.predict("ui:", "user", "name", False, api_name="/aliases_list")
    assert table_names(table) == ["ui:test"]
    table, _ = client.predict("", "model", "name", False, api_name="/aliases_list")
    assert BUNDLED in table_names(table) and "ui:test" not in table_names(table)

    table, _, selected = client.predict("ui:test", "ui:test-copy", api_name="/aliases_clone")
    assert selected == "ui:test-copy" and "ui:test-copy" in table_names(table)

    for name in ("ui:test", "ui:test-copy"):
        table, _, selected = client.predict(name, api_name="/aliases_delete")
        assert name not in table_names(table)
    assert not (server.home / "aliases" / "ui--test.yaml").exists()


def test_saves_under_new_names_from_one_session_each_create_an_alias(server) -> None:  # type: ignore[no-untyped-def]
    session = Client(server.url, verbose=False)  # its own session: what earlier saves left in it is what matters
    folder = server.home / "aliases"
    names = {"trio:a": 0.1, "trio:b": 0.2, "trio:c": 0.3}
    for name, temperature in names.items():
        session.predict(**form(name, temperature=str(temperature)), api_name="/aliases_save")
    # saving the last one again under its own name updates it in place
    session.predict(**form("trio:c", temperature="0.9"), api_name="/aliases_save")
    names["trio:c"] = 0.9
    files = sorted(p.name for p in folder.glob("trio--*.yaml"))
    assert files == ["trio--a.yaml", "trio--b.yaml", "trio--c.yaml"]
    for name, temperature in names.items():
        saved = yaml.safe_load((folder / f"trio--{name[-1]}.yaml").read_text(encoding="utf-8"))
        assert saved["alias"] == name and saved["request_params"] == {"temperature": temperature}
    for name in names:
        session.predict(name, api_name="/aliases_delete")


def test_save_rejects_bad_values_naming_the_field(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception, match=r"temperature: Temperature must be between 0 and 2 \(you entered 3\)"):
        client.predict(**form("ui:bad", temperature="3"), api_name="/aliases_save")
    with pytest.raises(Exception, match=r"must be a number"):
        client.predict(**form("ui:bad", top_p="lots"), api_name="/aliases_save")
    assert not (server.home / "aliases" / "ui--bad.yaml").exists()
    report = client.predict(**form("ui:warn", temperature="0", seed="3"), api_name="/aliases_validate")
    assert "seed has no effect" in report


def test_try_streams_with_unsaved_settings(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    job = client.submit(
        "What is the capital of France?",
        **form("ui:try", temperature="0", max_tokens="4"),
        api_name="/aliases_try",
    )
    outputs = list(job)
    reply, stats = outputs[-1]
    assert reply.startswith("The capital")
    assert "completion 4 tok" in stats and "finish: length" in stats
    assert not (server.home / "aliases" / "ui--try.yaml").exists()  # trying saves nothing


def test_import_and_export(client: Client, server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = tmp_path / "a.yaml"
    a.write_text(f"alias: imp:a\nrepo: {BUNDLED}\nrequest_params:\n  top_k: 7\n", encoding="utf-8")
    b = tmp_path / "b.yml"
    b.write_text(f"alias: imp:b\nrepo: {BUNDLED}\nchat_template: chatml\n", encoding="utf-8")
    table, _, _report = client.predict([handle_file(str(a)), handle_file(str(b))], api_name="/aliases_import")
    assert {"imp:a", "imp:b"} <= set(table_names(table))
    exported = client.predict("imp:a", api_name="/aliases_export")
    assert yaml.safe_load(Path(exported).read_text(encoding="utf-8"))["request_params"] == {"top_k": 7}
    for name in ("imp:a", "imp:b"):
        client.predict(name, api_name="/aliases_delete")


def test_playground_save_as_alias(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    model = client.predict("pg:saved", BUNDLED, 0.3, 0.8, 20, 99, 1.1, "", -1, api_name="/playground_save_alias")
    assert model["value"] == "pg:saved" if isinstance(model, dict) else model == "pg:saved"
    saved = yaml.safe_load((server.home / "aliases" / "pg--saved.yaml").read_text(encoding="utf-8"))
    assert saved["request_params"] == {
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 20,
        "max_tokens": 99,
        "repetition_penalty": 1.1,
    }
    client.predict("pg:saved", api_name="/aliases_delete")


def test_list_shows_a_broken_alias_file_with_its_error(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    broken = server.home / "aliases" / "ui--broken-file.yaml"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text(f"alias: ui:broken-file\nrepo: {BUNDLED}\ncontext_params: {{n_ctx: lots}}\n", encoding="utf-8")
    try:
        table, stats = client.predict("ui:broken", "all", "name", False, api_name="/aliases_list")
        data = table["data"] if "data" in table else table["value"]["data"]
        headers = table["headers"] if "headers" in table else table["value"]["headers"]
        (row,) = data
        shown = dict(zip(headers, row, strict=True))
        assert shown["Name"] == "ui:broken-file" and shown["Source"] == "broken"
        assert (
            shown["Problem"].startswith("$STUDIO_HOME/aliases/ui--broken-file.yaml: ") and "n_ctx" in shown["Problem"]
        )
        assert str(server.home) not in shown["Problem"]
        assert "** broken alias file" in stats

        table, _ = client.predict("ui:broken", "model", "name", False, api_name="/aliases_list")
        assert table_names(table) == []  # a broken file is a user alias file, not a model alias
    finally:
        broken.unlink()
