"""`studio safety scan`: findings with type/start/end/score and the anonymised text, as a function, as JSON and
from the command line (``python -m studio.safety.cli``, the same function `studio safety scan` calls)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.errors import ValidationError
from studio.safety.cli import cmd_safety_scan, main, register
from studio.safety.policy import policy_from_dict, save_policy
from studio.safety.scan import scan_file, scan_text

ROOT = Path(__file__).resolve().parents[2]
TEXT = "Contact John Smith at john.smith@example.com.\n\nYou are a stupid idiot.\n"


def test_scan_text_findings_and_anonymized() -> None:
    result = scan_text(TEXT)
    rows = [(f.check, f.type, TEXT[f.start : f.end]) for f in result.findings]
    assert rows == [
        ("pii", "PERSON", "John Smith"),
        ("pii", "EMAIL_ADDRESS", "john.smith@example.com"),
        ("toxicity", "toxicity", "You are a stupid idiot."),
        ("word_list", "offensive_word", "idiot"),
    ]
    assert result.anonymized == "Contact <PERSON> at <EMAIL_ADDRESS>.\n\nYou are a stupid *****.\n"


def test_scan_json_shape() -> None:
    data = json.loads(json.dumps(scan_text(TEXT).to_dict()))
    assert set(data) >= {"findings", "anonymized"}
    for finding in data["findings"]:
        assert {"type", "start", "end", "score"} <= set(finding)
        assert isinstance(finding["start"], int) and isinstance(finding["end"], int)
        assert 0.0 <= finding["score"] <= 1.0
    assert data["toxicity"]["scorer"].startswith("profanity-check")
    assert "spaCy" in data["pii_engine"]


def test_scan_honours_the_policy_whatever_apply_to_says(tmp_path: Path) -> None:
    policy = policy_from_dict(
        {
            "pii": {"entities": ["EMAIL_ADDRESS"], "action": "redact", "apply_to": ["output"]},
            "toxicity": {"enabled": False},
        }
    )
    result = scan_text(TEXT, policy)
    assert [f.type for f in result.findings] == ["EMAIL_ADDRESS", "offensive_word"]
    assert result.anonymized.startswith("Contact John Smith at ****.")
    assert result.to_dict()["toxicity"] is None


def test_scan_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        scan_file(tmp_path / "absent.txt")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValidationError, match="not UTF-8"):
        scan_file(binary)


def test_cmd_safety_scan_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "note.txt"
    path.write_text(TEXT, encoding="utf-8")
    parser = argparse.ArgumentParser(prog="studio")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["safety", "scan", str(path), "--json"])
    assert args.func is cmd_safety_scan
    assert cmd_safety_scan(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["anonymized"] == scan_text(TEXT).anonymized
    assert [f["type"] for f in data["findings"]] == ["PERSON", "EMAIL_ADDRESS", "toxicity", "offensive_word"]


def test_cli_main_with_a_policy_file_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    path = tmp_path / "note.txt"
    path.write_text(TEXT, encoding="utf-8")
    policy = policy_from_dict({"pii": {"entities": ["PERSON"]}, "word_list": {"enabled": False}})
    save_policy(policy, tmp_path / "home" / "safety" / "p.yaml")
    outside = save_policy(policy, tmp_path / "p.yaml")
    assert main(["scan", str(path), "--policy", str(outside)]) == 2  # policies live in STUDIO_HOME/safety
    assert "outside the folders the studio may use" in capsys.readouterr().err
    assert main(["scan", str(path), "--policy", "p"]) == 0
    out = capsys.readouterr().out
    assert "PERSON" in out and "EMAIL_ADDRESS" not in out
    assert "Contact <PERSON> at john.smith@example.com." in out
    assert main(["scan", str(tmp_path / "absent.txt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text(TEXT, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "studio.safety.cli", "scan", str(path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["anonymized"].startswith("Contact <PERSON> at <EMAIL_ADDRESS>.")
    assert "raw.githubusercontent.com" not in proc.stderr  # tldextract used its bundled list, no download attempt
