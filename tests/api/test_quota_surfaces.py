"""Quotas where a user meets them (issue 19, point 4): a viewer's concurrent-generations quota (1) through the
official openai SDK against the served app -- while one streamed chat runs, a second is refused with 429 naming the
quota; once the first has finished, the next one runs. The bundled model, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from studio.settings import Settings
from tests.api.live_server import live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, str]]:
    from app import create_app

    tmp = tmp_path_factory.mktemp("quota")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio-tmp"))
    mp.delenv("STUDIO_API_KEY", raising=False)
    settings = Settings(home=studio_home, hf_cache=studio_home / "hf-cache", database_url=f"sqlite:///{tmp / 'q.db'}")
    app, ctx = create_app(settings)
    ctx.users.add("vic", role="viewer", password="viewer-password-1")
    token, _ = ctx.users.create_token("vic", "sdk")
    try:
        with live_server(app, lifespan="on", graceful_s=2) as url:
            yield url, ctx, token
    finally:
        ctx.close()
        mp.undo()


def test_a_viewer_runs_one_generation_at_a_time(served: tuple[str, Any, str]) -> None:
    url, _ctx, token = served
    client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=120)
    ask = {"model": "default", "messages": [{"role": "user", "content": "Count from one to twenty."}]}
    first = client.chat.completions.create(**ask, max_tokens=64, temperature=0, stream=True)
    chunks = iter(first)
    assert next(chunks) is not None  # the first generation is running
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**ask, max_tokens=4)
    assert "concurrent_generations" in str(refused.value) and "viewer" in str(refused.value)
    for _ in chunks:  # let the first one finish
        pass
    first.close()
    done = client.chat.completions.create(**ask, max_tokens=4, temperature=0)
    assert done.choices[0].message.content
