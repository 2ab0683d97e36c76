"""A Hugging Face Hub on loopback, for tests: the real Hub is not reachable here.

It answers what ``huggingface_hub`` asks for, in the Hub's URL layout:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: model info (``sha``, ``siblings`` with sizes
  and LFS data, ``gated``, ``cardData``, ``safetensors`` / ``gguf`` parameter counts);
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: the file, with ``ETag`` (the sha256 of LFS files, the git blob id of the
  others), ``X-Repo-Commit``, ``Content-Length`` and byte ranges (``Range: bytes=N-``).

Pushing (``HfApi.create_repo`` / ``upload_folder`` / ``create_commit`` of huggingface_hub 2.4):

- ``POST /api/repos/create`` (``{name, organization, visibility}``): 200 with the repo's URL, 409 when it exists;
- ``POST /api/validate-yaml``: no errors, no warnings;
- ``POST /api/models/{repo}/preupload/{rev}``: every file ``regular`` (its bytes then travel base64 in the commit;
  the LFS / Xet transfer of the real Hub for large files is not imitated);
- ``POST /api/models/{repo}/commit/{rev}``: the ndjson body (a ``header`` line, then ``file`` lines) becomes a new
  commit of the repo: the files that arrived are added (or replace those of the same name), its ``sha`` changes,
  and ``commits`` records it.

Writes need a token: ``write_token`` when set (else any); none or another one is a 401 with the Hub's
``Invalid credentials in Authorization header``.

A gated repo answers 401 with ``X-Error-Code: GatedRepo`` to a request without its token and 403 to a wrong one, as
the Hub does. ``rate`` (bytes per second) slows file bodies down so that a test can stop a download mid-file.
Every request is recorded (method, path, Range header, whether it carried a token) for the tests to look at.

Point a process at it with ``HF_ENDPOINT=<hub.url>`` and ``HF_HUB_OFFLINE=0`` (huggingface_hub reads both when it is
imported), or in-process with :meth:`FakeHub.patch` (its ``constants``, read at call time by the studio).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")
CHUNK = 16 * 1024


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    gated_token: str | None = None  # set: the repo is gated and only this token may download
    card: dict[str, Any] = field(default_factory=dict)
    sha: str = ""
    private: bool = False

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
        self.sha = self.sha or digest.hexdigest()
        readme = self.files.get("README.md", b"").decode("utf-8", "replace")
        if not self.card and readme.startswith("---\n"):  # the Hub's cardData is the README's front matter
            import yaml

            self.card = yaml.safe_load(readme.split("---\n")[1]) or {}

    def etag(self, name: str) -> str:
        data = self.files[name]
        if name.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def info(self) -> dict[str, Any]:
        siblings = []
        for name, data in sorted(self.files.items()):
            sibling: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": self.etag(name)[:40]}
            if name.endswith(LFS_SUFFIXES):
                sibling["lfs"] = {"size": len(data), "sha256": self.etag(name), "pointerSize": 134}
            siblings.append(sibling)
        return {
            "id": self.repo_id,
            "sha": self.sha,
            "private": self.private,
            "gated": "manual" if self.gated_token else False,
            "siblings": siblings,
            "cardData": self.card or None,
            "tags": [],
        }


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorized: bool


class FakeHub:
    """The server; use as a context manager (``with FakeHub() as hub: hub.add(...)``)."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.rate: float | None = None  # bytes per second for file bodies (None: as fast as it goes)
        self.write_token: str | None = None  # set: creating repos and committing need exactly this token
        self.user = "test-user"  # the account a bare repo name (no organization) is created under
        self.commits: list[dict[str, Any]] = []  # every commit received: repo, header, files (paths)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, files: dict[str, bytes], **kwargs: Any) -> FakeRepo:
        repo = FakeRepo(repo_id, files, **kwargs)
        self.repos[repo_id] = repo
        return repo

    def file_requests(self, name: str) -> list[Request]:
        """The GET requests for file ``name`` (any repo)."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith("/" + name)]

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment a studio process needs to use this Hub."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0"}

    def patch(self, monkeypatch: Any) -> None:
        """Point this process's huggingface_hub at this Hub and switch its offline mode off (for one test)."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", self.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")


_WRITE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/]+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)??)(?:/revision/(?P<rev>.+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not traffic
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_POST(self) -> None:
            path = unquote(urlsplit(self.path).path)
            token = self._auth()
            hub.requests.append(Request("POST", path, None, token is not None))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            json_headers = {"Content-Type": "application/json"}
            if path == "/api/validate-yaml":
                self._send(200, json_headers, json.dumps({"errors": [], "warnings": []}).encode())
                return
            if token is None or (hub.write_token is not None and token != hub.write_token):
                self._error(401, "", "Invalid credentials in Authorization header", True)
                return
            if path == "/api/repos/create":
                data = json.loads(body or b"{}")
                repo_id = f"{data.get('organization') or hub.user}/{data['name']}"
                if repo_id in hub.repos:
                    payload = {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    self._send(409, json_headers, json.dumps(payload).encode())
                    return
                hub.add(repo_id, {}, private=data.get("visibility") == "private" or bool(data.get("private")))
                self._send(200, json_headers, json.dumps({"url": f"{hub.url}/{repo_id}", "name": repo_id}).encode())
                return
            m = _WRITE.match(path)
            repo = hub.repos.get(m["repo"]) if m else None
            if m is None or repo is None:
                self._error(404, "RepoNotFound", "Repository not found", True)
                return
            if m["op"] == "preupload":
                files = json.loads(body or b"{}").get("files", [])
                answer = {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                    ]
                }
                self._send(200, json_headers, json.dumps(answer).encode())
                return
            header: dict[str, Any] = {}
            added: dict[str, bytes] = {}
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                elif item["key"] == "file" and item["value"].get("encoding") == "base64":
                    added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                else:
                    self._error(400, "", f"this fake Hub takes base64 'file' lines only, not {item['key']!r}", True)
                    return
            repo.files.update(added)
            repo.sha = hashlib.sha1(repo.sha.encode() + json.dumps(sorted(added)).encode()).hexdigest()
            hub.commits.append({"repo": repo.repo_id, "header": header, "files": sorted(added)})
            answer = {
                "commitUrl": f"{hub.url}/{repo.repo_id}/commit/{repo.sha}",
                "commitOid": repo.sha,
                "success": True,
            }
            self._send(200, json_headers, json.dumps(answer).encode())

        def _auth(self) -> str | None:
            value = self.headers.get("Authorization", "")
            return value.removeprefix("Bearer ").strip() or None

        def _send(self, status: int, headers: dict[str, str], payload: bytes = b"", body: bool = True) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body and payload:
                self.wfile.write(payload)

        def _error(self, status: int, code: str, message: str, body: bool) -> None:
            payload = json.dumps({"error": message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, headers, payload, body)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            token = self._auth()
            hub.requests.append(Request(self.command, path, self.headers.get("Range"), token is not None))
            if m := _INFO.match(path):
                repo = hub.repos.get(m["repo"])
                if repo is None:
                    self._error(401, "RepoNotFound", "Repository not found", body)
                    return
                if m["rev"] and m["rev"] not in ("main", repo.sha):
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}", body)
                    return
                self._send(200, {"Content-Type": "application/json"}, json.dumps(repo.info()).encode(), body)
                return
            m = _RESOLVE.match(path)
            repo = hub.repos.get(m["repo"]) if m else None
            if m is None or repo is None:
                self._error(401, "RepoNotFound", "Repository not found", body)
                return
            if repo.gated_token and token != repo.gated_token:
                if token is None:
                    message = (
                        f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                        "authenticated to access it. Please log in."
                    )
                    self._error(401, "GatedRepo", message, body)
                else:
                    message = f"Access to model {repo.repo_id} is restricted and you are not in the authorized list."
                    self._error(403, "GatedRepo", message, body)
                return
            if m["rev"] not in ("main", repo.sha):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}", body)
                return
            data = repo.files.get(m["file"])
            if data is None:
                self._error(404, "EntryNotFound", f"{m['file']} does not exist", body)
                return
            self._file(repo, m["file"], data, body)

        def _file(self, repo: FakeRepo, name: str, data: bytes, body: bool) -> None:
            start = 0
            status = 200
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "") or "")
            if ranged and int(ranged[1]) < len(data):
                start, status = int(ranged[1]), 206
            self.send_response(status)
            self.send_header("ETag", f'"{repo.etag(name)}"')
            self.send_header("X-Repo-Commit", repo.sha)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            try:
                for offset in range(start, len(data), CHUNK):
                    self.wfile.write(data[offset : offset + CHUNK])
                    if hub.rate:
                        time.sleep(CHUNK / hub.rate)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a killed download): nothing more to send

    return Handler


def tiny_model_files(bundled_dir: Path, seed: int = 0) -> dict[str, bytes]:
    """The files of a tiny random Llama (2 layers, hidden size 32, tied embeddings, bf16) with the bundled model's
    tokenizer and chat template: a few MB that load in a second and answer (garbage) token by token."""
    import tempfile

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_dir), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    files["README.md"] = b"---\nlicense: apache-2.0\nlanguage:\n- en\n- fr\n---\n# tiny\nA test model.\n"
    return files
