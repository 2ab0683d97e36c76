"""Issue 14, finding 6: no user input yields a 5xx. Schemathesis generates requests from /openapi.json for every
REST operation -- the schema's examples, valid data and invalid data -- and every answer must be below 500, in
OpenAI's error shape when it is an error.

The model 'default' answers through a fake engine with no delay and STUDIO_MAX_TOKENS_LIMIT is tiny, so the
requests that do generate are quick; the examples per operation are bounded. (Schemathesis's pytest plugin does
not run under pytest 9 yet, so the operations are walked here with Hypothesis directly.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from studio.api.server import create_api
from studio.context import AppContext
from studio.settings import Settings
from tests.api.fake_engine import serve_fake

#: valid data would start serving processes on random ports (or probe random URLs) that outlive the test; their
#: validation is tested in tests/unit/test_deploy_config.py and their life in tests/integration/test_deploy_*.py
STARTS_PROCESSES = {
    "POST /api/models/deployments",
    "POST /api/models/deployments/remote",
    "POST /api/models/deployments/{ref}/restart",
}
EXAMPLES_PER_OPERATION = 25  # per generation mode (valid, invalid)
FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.slow
def test_no_input_makes_a_server_error(tmp_path: Path) -> None:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub", max_tokens_limit=4))
    serve_fake(ctx, delay=0.0)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_api(ctx))
    failures: list[str] = []
    seen: dict[str, set[int]] = {}

    def verify(case: Any) -> None:
        response = case.call(timeout=120)  # the first request with "safety": true loads the safety models
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.body!r:.300} -> {response.text[:300]}")
        elif response.status_code >= 400:
            error = response.json().get("error")
            if not (isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)):
                failures.append(f"{case.method} {case.formatted_path}: not OpenAI's error shape: {response.text:.300}")

    def check(case: Any) -> None:
        verify(case)  # as generated: mostly unknown model names
        if isinstance(case.body, dict) and isinstance(case.body.get("model"), str) and case.body["model"] != "default":
            case.body = {**case.body, "model": "default"}  # the same values on the model that is served
            verify(case)

    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        operations = [op for op in operations if op.label not in STARTS_PROCESSES]
        assert len(operations) >= 15
        for operation in operations:
            strategies = [
                *operation.get_strategies_from_examples(),
                operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            ]
            for strategy in strategies:

                @FUZZ
                @given(case=strategy)
                def run(case: Any) -> None:
                    check(case)

                try:
                    run()
                except Unsatisfiable:  # no invalid data exists for an operation without parameters
                    continue
    finally:
        ctx.close()
    assert not failures, "\n".join(failures[:20])
    # the fuzzing reached the generation itself, not only the validation in front of it
    assert 200 in seen["POST /v1/chat/completions"] | seen["POST /v1/completions"], seen
