"""`studio serve --share` needs gradio.live; offline it must say so clearly and leave the local server alone."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest


def test_share_link_failure_is_reported_clearly(caplog: pytest.LogCaptureFixture) -> None:
    from app import start_share_tunnel

    caplog.set_level(logging.INFO, logger="studio")
    start_share_tunnel(SimpleNamespace(started=True), "127.0.0.1", 9)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("share link" in r.getMessage() for r in caplog.records):
        time.sleep(0.2)
    messages = [r.getMessage() for r in caplog.records if "share link" in r.getMessage()]
    assert messages, "no report about the share link"
    if any(r.levelno == logging.ERROR for r in caplog.records if "share link" in r.getMessage()):
        assert "needs internet access to gradio.live" in messages[0]
