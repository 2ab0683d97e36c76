"""The ``augment`` job run through the queue the way a worker's job process runs it (``run_job``): paraphrases
by the bundled model stored as a new version whose lineage names the source and every row's model, prompt and
parameters; self-instruct synthesis; a remote model that fails mid-run leaves the job failed with nothing
registered, and resuming it requests only the rows still missing; cancel + resume likewise; bad configs are
refused naming the field."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from studio.curation.augment import CHECKPOINT_FILE, PARAPHRASE_PROMPT, clean_instruction, clean_reply, submit_augment
from studio.curation.lineage import dataset_lineage
from studio.datasets.store import DatasetStore
from studio.db import Database
from studio.errors import NotFoundError, ValidationError
from studio.jobs import queue
from studio.jobs.child import run_job
from studio.settings import Settings

SOURCE = [
    ("How do I boil an egg?", "Put it in boiling water for nine minutes."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("How many legs does a spider have?", "A spider has eight legs."),
]


def _rows(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]


@pytest.fixture
def studio(home_sharing_models: Settings) -> Iterator[tuple[Settings, Database, DatasetStore]]:
    settings = home_sharing_models
    db = Database(settings.db_url)
    store = DatasetStore(settings, db)
    store.create_version("qa", _rows(SOURCE), source="upload")
    yield settings, db, store
    db.dispose()


def run_next(settings: Settings, db: Database, job_id: str) -> str:
    claimed = queue.claim_next(db, "test-worker:1")
    assert claimed is not None and claimed.id == job_id
    return run_job(settings, db, queue.Lease.of(claimed))


# --- a loopback OpenAI-compatible server --------------------------------------------------------------------------


class FakeOpenAI(ThreadingHTTPServer):
    """Serves ``fake-model``; each chat request gets ``reply(prompt, n)`` (streamed), or HTTP 500 once ``fail``
    is set; ``on_request(n)`` runs before answering request ``n`` (1-based)."""

    def __init__(self, reply: Callable[[str, int], str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reply = reply
        self.fail_after: int | None = None  # answer 500 to every request after this many answered
        self.prompts: list[str] = []  # the last user message of every chat request, failed ones included
        self.bodies: list[dict[str, Any]] = []
        self.answered = 0
        self.on_request: Callable[[int], None] | None = None
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._json(200, {"object": "list", "data": [{"id": "fake-model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.prompts.append(prompt)
            self.server.bodies.append(body)
            n = len(self.server.prompts)
            failing = self.server.fail_after is not None and self.server.answered >= self.server.fail_after
            if not failing:
                self.server.answered += 1
        if self.server.on_request is not None:
            self.server.on_request(n)
        if failing:
            self._json(500, {"error": {"message": "the GPU caught fire", "type": "server_error"}})
            return
        text = self.server.reply(prompt, n)
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 9}},
        ]
        data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data.encode())))
        self.end_headers()
        self.wfile.write(data.encode())

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def paraphrase_reply(prompt: str, n: int) -> str:
    text = prompt.split("\n\n", 1)[1]
    return f'Sure! Here is the rewritten text:\n"{text.upper()}"'


@pytest.fixture
def fake_model(studio: tuple[Settings, Database, DatasetStore]) -> Iterator[FakeOpenAI]:
    settings = studio[0]
    server = FakeOpenAI(paraphrase_reply)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    alias = {
        "alias": "fake:remote",
        "repo": "fake-model",
        "context_params": {"engine": "remote", "base_url": server.base_url},
    }
    (settings.home / "aliases").mkdir(exist_ok=True)
    (settings.home / "aliases" / "fake--remote.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    yield server
    server.shutdown()
    server.server_close()


REMOTE = {"dataset": "qa", "model": "fake:remote", "mode": "paraphrase", "fields": "prompts", "temperature": 0.5}


# --- the bundled model --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_model_paraphrases_into_a_new_version_with_provenance(
    studio: tuple[Settings, Database, DatasetStore],
) -> None:
    settings, db, store = studio
    source = store.get_version("qa")
    config = {"dataset": "qa", "model": "default", "max_rows": 3, "variants": 1, "max_tokens": 24, "temperature": 0}
    job = submit_augment(db, settings, config)
    assert job.config["version"] == 1 and job.config["dataset_hash"] == source.content_hash  # pinned at submit
    assert job.config["into"] == "qa-augmented"
    assert run_next(settings, db, job.id) == queue.SUCCEEDED, queue.log_tail(settings, job.id)

    done = queue.get_job(db, job.id)
    assert done.step == 3 and done.total_steps == 3 and done.progress == 1.0
    version = store.get_version("qa-augmented")
    assert version.source == "augment" and done.result["version"] == version.number == 1
    assert done.artifact_path == str(store.path_of(version))
    lineage = version.lineage
    assert lineage["source"] == {
        "dataset": "qa",
        "version": 1,
        "version_id": source.id,
        "content_hash": source.content_hash,
    }
    assert lineage["mode"] == "paraphrase" and lineage["model"] == "default" and lineage["engine"] == "transformers"
    rows = store.load_examples(version)
    kept = done.result["kept"]
    assert kept >= 1 and len(rows) == len(SOURCE) + kept  # include_source: the source rows first
    assert rows[: len(SOURCE)] == _rows(SOURCE)
    assert len(lineage["provenance"]) == kept
    for prov in lineage["provenance"]:
        row = rows[prov["row"]]
        question, answer = SOURCE[prov["source_row"]]
        assert prov["model"] == "default" and prov["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert prov["engine"] == "transformers"
        assert prov["prompt"] == [PARAPHRASE_PROMPT.format(text=question)]
        assert prov["params"]["temperature"] == 0.0 and prov["params"]["max_tokens"] == 24
        assert prov["seed"] == [4 * prov["source_row"]]
        # only the prompt was rewritten: the answer is the source row's
        assert row["messages"][1] == {"role": "assistant", "content": answer}
        assert row["messages"][0]["content"].strip() and row["messages"][0]["content"] != question
    # the lineage graph draws the source version -> the new version
    graph = dataset_lineage(store, "qa-augmented")
    assert any(e.parent == source.id and e.child == version.id and "augment" in e.label for e in graph.edges)


# --- a remote model -----------------------------------------------------------------------------------------------


def test_remote_model_failing_mid_run_registers_nothing_and_resume_continues(
    studio: tuple[Settings, Database, DatasetStore], fake_model: FakeOpenAI
) -> None:
    settings, db, store = studio
    fake_model.fail_after = 2
    job = submit_augment(db, settings, REMOTE)
    assert run_next(settings, db, job.id) == queue.FAILED
    failed = queue.get_job(db, job.id)
    assert failed.state == "failed" and "HTTP 500" in failed.message and "GPU caught fire" in failed.message
    with pytest.raises(NotFoundError):
        store.get("qa-augmented")  # nothing half-registered
    checkpoint = queue.run_dir(settings, job.id) / CHECKPOINT_FILE
    assert len(checkpoint.read_text().splitlines()) == 2 and failed.step == 2
    assert fake_model.prompts == [PARAPHRASE_PROMPT.format(text=q) for q, _a in SOURCE[:3]]  # the third failed

    fake_model.fail_after = None
    queue.resume(db, job.id)
    assert run_next(settings, db, job.id) == queue.SUCCEEDED, queue.log_tail(settings, job.id)
    # after the resume only rows 3 and 4 were asked for (row 3 again: its request had failed)
    assert fake_model.prompts[3:] == [PARAPHRASE_PROMPT.format(text=q) for q, _a in SOURCE[2:]]
    done = queue.get_job(db, job.id)
    assert done.result["requests"] == 2 and done.result["kept"] == 4
    version = store.get_version("qa-augmented")
    rows = store.load_examples(version)
    # the replies' preamble and quotes are gone
    assert [r["messages"][0]["content"] for r in rows[4:]] == [q.upper() for q, _a in SOURCE]
    prov = version.lineage["provenance"]
    assert [p["row"] for p in prov] == [4, 5, 6, 7] and [p["source_row"] for p in prov] == [0, 1, 2, 3]
    assert all(p["model"] == "fake:remote" and p["engine"] == "remote" for p in prov)
    assert all(p["params"]["temperature"] == 0.5 and p["params"]["top_p"] == 0.95 for p in prov)
    # each request carried the seed its provenance names
    assert [b["seed"] for b in fake_model.bodies[3:]] == [p["seed"][0] for p in prov[2:]]


def test_cancel_then_resume_generates_each_row_once(
    studio: tuple[Settings, Database, DatasetStore], fake_model: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, db, store = studio
    monkeypatch.setattr("studio.jobs.runtime.CANCEL_CHECK_INTERVAL_S", 0.0)
    job = submit_augment(db, settings, {**REMOTE, "variants": 2, "include_source": False})

    def cancel_on_third(n: int) -> None:
        if n == 3:
            queue.request_cancel(db, job.id)

    fake_model.on_request = cancel_on_third
    assert run_next(settings, db, job.id) == queue.CANCELLED
    assert len(fake_model.prompts) == 3  # the row being written when the cancel came was finished, no more
    with pytest.raises(NotFoundError):
        store.get("qa-augmented")
    fake_model.on_request = None
    queue.resume(db, job.id)
    assert run_next(settings, db, job.id) == queue.SUCCEEDED, queue.log_tail(settings, job.id)
    assert len(fake_model.prompts) == 8  # 4 rows x 2 variants, each asked for once
    done = queue.get_job(db, job.id)
    # the fake answers both variants alike: the second of each pair is an exact duplicate
    assert done.result["dropped"]["duplicate"] == 4 and done.result["kept"] == 4
    assert store.get_version("qa-augmented").num_examples == 4  # generated rows only


def test_synthesize_writes_new_instructions_and_answers(
    studio: tuple[Settings, Database, DatasetStore], fake_model: FakeOpenAI
) -> None:
    settings, db, store = studio

    def reply(prompt: str, n: int) -> str:
        if prompt.startswith("Here are some example instructions"):
            return f'Here is a new instruction:\n"Name fruit number {n}."\n2. Another one'
        return f"Fruit {prompt.split()[-1]}"

    fake_model.reply = reply
    job = submit_augment(
        db, settings, {"dataset": "qa", "model": "fake:remote", "mode": "synthesize", "seeds": 2, "count": 3}
    )
    assert run_next(settings, db, job.id) == queue.SUCCEEDED, queue.log_tail(settings, job.id)
    version = store.get_version("qa-augmented")
    rows = store.load_examples(version)[len(SOURCE) :]
    assert rows[0] == {
        "messages": [
            {"role": "user", "content": "Name fruit number 1."},
            {"role": "assistant", "content": "Fruit 1."},
        ]
    }
    assert len(rows) == 3 and len(fake_model.prompts) == 6  # an instruction, then its answer, per row
    for prov in version.lineage["provenance"]:
        assert len(prov["seed_rows"]) == 2 and all(0 <= i < len(SOURCE) for i in prov["seed_rows"])
        shown = prov["prompt"][0]
        assert all(SOURCE[i][0] in shown for i in prov["seed_rows"])  # the seeds' questions were shown
    assert version.lineage["params"]["count"] == 3 and version.lineage["mode"] == "synthesize"


def test_filter_drops_near_duplicates_of_the_source_and_long_rows(
    studio: tuple[Settings, Database, DatasetStore], fake_model: FakeOpenAI
) -> None:
    settings, db, store = studio
    replies = {
        SOURCE[0][0]: "How do I boil an egg??",  # the source's words again: a near-duplicate, not an exact one
        SOURCE[1][0]: '""',  # nothing once the quotes are gone
        SOURCE[2][0]: "Please name one of the colours that painters call primary, or if you like, all three.",
        SOURCE[3][0]: "Count the legs of a spider for me.",
    }
    fake_model.reply = lambda prompt, n: replies[prompt.split("\n\n", 1)[1]]
    steps = [
        {"step": "dedupe", "apply_to": "prompt", "threshold": 0.8},
        {"step": "length", "apply_to": "prompt", "max_chars": 60},
        {"step": "clean", "enabled": False},
    ]
    config = {**REMOTE, "filter": {"name": "after-paraphrase", "steps": steps}}
    job = submit_augment(db, settings, config)
    assert run_next(settings, db, job.id) == queue.SUCCEEDED, queue.log_tail(settings, job.id)
    result = queue.get_job(db, job.id).result
    assert result["dropped"] == {"empty": 1, "invalid": 0, "duplicate_of_source": 0, "duplicate": 0, "filter": 2}
    assert result["kept"] == 1 and result["rows"] == len(SOURCE) + 1
    version = store.get_version("qa-augmented")
    assert store.load_examples(version)[-1]["messages"][0]["content"] == "Count the legs of a spider for me."
    assert version.lineage["provenance"][0]["source_row"] == 3
    assert version.lineage["filter"]["name"] == "after-paraphrase"
    reasons = [s["reasons"] for s in version.lineage["filter_steps"]]
    assert reasons[0] == {"near-duplicate": 1} and reasons[1] == {"too long": 1}
    assert version.lineage["filter_steps"][2]["skipped"] is True


def test_filter_that_drops_every_generated_row_registers_nothing(
    studio: tuple[Settings, Database, DatasetStore], fake_model: FakeOpenAI
) -> None:
    settings, db, store = studio
    config = {**REMOTE, "filter": {"name": "too-strict", "steps": [{"step": "length", "max_chars": 5}]}}
    job = submit_augment(db, settings, config)
    assert run_next(settings, db, job.id) == queue.FAILED
    message = queue.get_job(db, job.id).message
    assert "no generated row is left" in message and "4 filter" in message
    with pytest.raises(NotFoundError):
        store.get("qa-augmented")


# --- refused configs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [({"variants": 0}, "variants"), ({"temperature": 2.5}, "temperature"), ({"seeds": 11}, "seeds"),
     ({"count": 0}, "count"), ({"max_tokens": 5000}, "max_tokens"), ({"colour": "red"}, "colour")],
)  # fmt: skip
def test_bad_fields_are_named(
    studio: tuple[Settings, Database, DatasetStore], change: dict[str, Any], field: str
) -> None:
    settings, db, _store = studio
    with pytest.raises(ValidationError) as err:
        submit_augment(db, settings, {"dataset": "qa", **change})
    assert err.value.param == field and field in err.value.message


def test_refused_against_this_studio(studio: tuple[Settings, Database, DatasetStore]) -> None:
    settings, db, store = studio
    store.create_version(
        "prefs", [{"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away."}]
    )
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"dataset": "nope"}, "dataset", "not found"),
        ({"dataset": "qa", "version": 9}, "version", "no version 9"),
        ({"dataset": "prefs", "mode": "synthesize"}, "mode", "supervised"),
        ({"dataset": "qa", "into": "prefs"}, "into", "preference"),
        ({"dataset": "qa", "model": "no-such-model"}, "", "no-such-model"),
    ]
    for config, param, words in cases:
        with pytest.raises(Exception) as err:
            submit_augment(db, settings, config)
        assert words in str(err.value), config
        if param:
            assert getattr(err.value, "param", None) == param, config
    assert queue.list_jobs(db, kind="augment") == []


def test_clean_reply_strips_preambles_and_quotes() -> None:
    assert clean_reply('Sure! Here is the rewritten text:\n\n"How can I cook an egg?"') == "How can I cook an egg?"
    assert clean_reply("Rewritten text: “Boil it.”") == "Boil it."
    assert clean_reply("Certainly.\nThe sky is blue.") == "The sky is blue."
    assert clean_reply('He said "hi" and "bye"') == 'He said "hi" and "bye"'  # not one quoted reply
    assert clean_reply("Here we go again, said nobody") == "Here we go again, said nobody"
    assert clean_instruction("4. Describe a river.\n5. Name a bird.") == "Describe a river."
    assert clean_instruction("New instruction: List three metals.\n\nAnswer: iron") == "List three metals."
    assert clean_instruction('"2. How do you use a fork?"') == "How do you use a fork?"
    assert clean_instruction("Let's try:\n\nWrite a poem about rain.") == "Write a poem about rain."
    assert clean_reply("Rewrite:\nPrimary colours.") == "Primary colours."
    assert clean_reply("Here is the rewritten text:") == ""  # a preamble alone is no text: the row is dropped


def test_checkpoint_ignores_a_torn_last_line(tmp_path: Path) -> None:
    from studio.curation.augment import read_checkpoint

    path = tmp_path / CHECKPOINT_FILE
    path.write_text('{"key": "r0v0", "row": null, "provenance": {}}\n{"key": "r1v0", "ro', encoding="utf-8")
    assert list(read_checkpoint(path)) == ["r0v0"]
