"""The Playground's model-management api_names through `gradio_client`: load (adapter, quantization),
estimate, hot-swap, disable adapters, compare with base, unload."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
PARAMS = [0, 0.9, 50, 12, 1.0, 0.0, 0.0, "", -1]  # temperature … seed, greedy


def rows(table: dict) -> list[list]:
    return table["data"] if "data" in table else table["value"]["data"]


def test_load_estimate_swap_compare_unload(server, lora_adapters: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    estimate = client.predict(BUNDLED, "none", api_name="/playground_estimate")
    assert "M parameters" in estimate and "fits" in estimate

    try:
        status, memory, table = client.predict(BUNDLED, str(lora_adapters[0]), "none", api_name="/playground_load")
        assert "loaded" in status and "lora-a" in status
        assert "process RAM" in memory
        row = next(r for r in rows(table) if r[0] == BUNDLED)
        assert row[1] == "transformers"  # the engine column
        assert row[7] == "lora-a" and row[5] > 100  # active adapter, memory in MiB
        assert "Engine: auto: the bundled model runs on transformers" in status

        status, table = client.predict(BUNDLED, str(lora_adapters[1]), api_name="/playground_swap_adapter")
        assert "lora-b" in status
        status, table = client.predict(BUNDLED, "lora-a", api_name="/playground_swap_adapter")
        assert "lora-a" in status

        with_adapter, base = client.predict(
            "What is the capital of France?", BUNDLED, "", *PARAMS, api_name="/playground_compare"
        )
        assert "With adapter" in with_adapter and "tok/s" in with_adapter
        assert "Paris" in base and "tok/s" in base
        assert with_adapter.split("\n\n")[1] != base.split("\n\n")[1]  # different replies

        with pytest.raises(Exception, match="no folder 'no-such-adapter'"):
            client.predict(BUNDLED, "no-such-adapter", api_name="/playground_swap_adapter")
    finally:
        client.predict(BUNDLED, api_name="/playground_disable_adapters")

    status, memory, table = client.predict(BUNDLED, api_name="/playground_unload")
    assert "Unloaded" in status and BUNDLED not in [r[0] for r in rows(table)]
    status, _, _ = client.predict(BUNDLED, "", "int8", api_name="/playground_load")
    assert "int8" in status
    status, _, _ = client.predict(BUNDLED, "", "none", api_name="/playground_load")  # back to full precision
    assert "quantization: none" in status
    with pytest.raises(Exception, match="not in the list of choices"):  # the form only offers valid ones
        client.predict(BUNDLED, "", "int3", api_name="/playground_load")


def test_load_on_a_chosen_engine(server) -> None:  # type: ignore[no-untyped-def]
    """The Engine picker: the bundled model on llama.cpp next to transformers; the status says which and why."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup)")
    client = Client(server.url, verbose=False)
    status, _, table = client.predict(BUNDLED, "", "none", "llamacpp", api_name="/playground_load")
    assert "(llamacpp engine)" in status and "Engine: llamacpp requested by the load request" in status
    assert "llamacpp" in [r[1] for r in rows(table) if r[0] == BUNDLED]
    with pytest.raises(Exception, match="llamacpp engine cannot load adapters"):
        client.predict(BUNDLED, "/no/such", "none", "llamacpp", api_name="/playground_load")
    status, _, table = client.predict(f"{BUNDLED}@llamacpp", api_name="/playground_unload")
    assert "llamacpp" not in [r[1] for r in rows(table) if r[0] == BUNDLED]
