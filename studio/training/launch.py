"""Multi-GPU training: the same :func:`studio.training.train.train`, run under ``accelerate launch``.

With more than one CUDA device the job process does not train itself. It writes a *request* (config,
examples, paths) into the run directory and starts::

    python -m accelerate.commands.launch --multi_gpu --num_processes N --mixed_precision bf16|no \
        -m studio.training.launch <run>/launch/request.json

Every rank runs :func:`main`; the trainer shards batches over the ranks (DDP). Rank 0 reports through a
:class:`FileReporter` (JSON lines in ``events.jsonl``), which the job process relays to its own reporter;
a cancel in the job process creates ``stop`` and all ranks stop after the same step (see
``callbacks._all_ranks_agree``). Rank 0 writes ``result.json`` at the end.

:func:`train_on_all_devices` picks the path: ``accelerate launch`` when ``torch.cuda.device_count() > 1``,
else in-process :func:`train`; it takes and returns the same things as :func:`train`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import ServerError
from studio.jobs.reporter import JobReporter
from studio.training.config import FinetuneConfig, parse_config
from studio.training.methods import pick_device
from studio.training.train import TrainingResult, train

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a launched training process needs, as files under ``launch_dir``."""

    launch_dir: Path
    model_path: Path
    output_dir: Path
    checkpoint_dir: Path | None = None
    resume_from: Path | None = None

    @property
    def request_path(self) -> Path:
        return self.launch_dir / "request.json"

    @property
    def config_path(self) -> Path:
        return self.launch_dir / "config.json"

    @property
    def examples_path(self) -> Path:
        return self.launch_dir / "examples.jsonl"

    @property
    def events_path(self) -> Path:
        return self.launch_dir / "events.jsonl"

    @property
    def stop_path(self) -> Path:
        return self.launch_dir / "stop"

    @property
    def result_path(self) -> Path:
        return self.launch_dir / "result.json"

    def write(self, config: FinetuneConfig, examples: Sequence[Mapping[str, Any]]) -> Path:
        """Write config, examples and the request file; clear events/stop/result of an earlier attempt."""
        self.launch_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.events_path, self.stop_path, self.result_path):
            stale.unlink(missing_ok=True)
        self.config_path.write_text(config.model_dump_json(indent=2), encoding="utf-8")
        with self.examples_path.open("w", encoding="utf-8") as fh:
            for example in examples:
                fh.write(json.dumps(example, ensure_ascii=False) + "\n")
        paths = {
            "model_path": self.model_path,
            "output_dir": self.output_dir,
            "checkpoint_dir": self.checkpoint_dir,
            "resume_from": self.resume_from,
        }
        self.request_path.write_text(
            json.dumps({k: str(v) if v is not None else None for k, v in paths.items()}, indent=2), encoding="utf-8"
        )
        return self.request_path

    @classmethod
    def read(cls, request_path: Path) -> LaunchRequest:
        """The request written by :meth:`write`."""
        data = json.loads(request_path.read_text(encoding="utf-8"))

        def path(key: str) -> Path | None:
            return Path(data[key]) if data.get(key) else None

        return cls(
            launch_dir=request_path.parent,
            model_path=Path(data["model_path"]),
            output_dir=Path(data["output_dir"]),
            checkpoint_dir=path("checkpoint_dir"),
            resume_from=path("resume_from"),
        )


def build_launch_command(request_path: Path, num_processes: int, *, bf16: bool = True) -> list[str]:
    """The ``accelerate launch`` command line that trains ``request_path`` on ``num_processes`` GPUs."""
    if num_processes < 2:
        raise ValueError("accelerate launch is for two or more GPUs; train in-process on one")
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "bf16" if bf16 else "no",
        "--dynamo_backend",
        "no",
        "-m",
        "studio.training.launch",
        str(request_path),
    ]


class FileReporter:
    """A :class:`JobReporter` that appends JSON lines to a file and stops when a flag file appears."""

    def __init__(self, events_path: Path, stop_path: Path) -> None:
        self.events_path = events_path
        self.stop_path = stop_path

    def _write(self, event: dict[str, Any]) -> None:
        with self.events_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, default=str) + "\n")

    def progress(
        self,
        step: int,
        total_steps: int | None,
        epoch: float | None = None,
        eta_s: float | None = None,
        message: str = "",
    ) -> None:
        self._write({"type": "progress", "args": [step, total_steps, epoch, eta_s, message]})

    def metrics(self, step: int, epoch: float | None, values: dict[str, float]) -> None:
        self._write({"type": "metrics", "args": [step, epoch, values]})

    def log(self, line: str) -> None:
        self._write({"type": "log", "args": [line]})

    def should_stop(self) -> bool:
        return self.stop_path.exists()

    def checkpoint_saved(self, path: Path) -> None:
        self._write({"type": "checkpoint", "args": [str(path)]})


class _SilentReporter(FileReporter):
    """Ranks other than 0 report nothing (rank 0 speaks for all) but still see the stop flag."""

    def _write(self, event: dict[str, Any]) -> None:
        return None


def relay_events(events_path: Path, reporter: JobReporter, offset: int = 0) -> int:
    """Pass the complete lines of ``events_path`` after byte ``offset`` to ``reporter``; return the new offset."""
    try:
        with events_path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return offset
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
    for raw in chunk[:end].splitlines():
        try:
            event = json.loads(raw)
            kind, args = event["type"], event["args"]
        except (ValueError, KeyError, TypeError):
            continue
        if kind == "progress":
            reporter.progress(*args)
        elif kind == "metrics":
            reporter.metrics(args[0], args[1], {k: float(v) for k, v in args[2].items()})
        elif kind == "log":
            reporter.log(str(args[0]))
        elif kind == "checkpoint":
            reporter.checkpoint_saved(Path(args[0]))
    return offset + end


def run_launched(request: LaunchRequest, command: Sequence[str], reporter: JobReporter) -> dict[str, Any]:
    """Run a launch ``command`` for ``request``, relaying its events and cancel; return ``result.json``'s content."""
    log_path = request.launch_dir / "launch.log"
    offset = 0
    with log_path.open("wb") as log_fh:
        proc = subprocess.Popen(list(command), stdout=log_fh, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                time.sleep(POLL_SECONDS)
                offset = relay_events(request.events_path, reporter, offset)
                if reporter.should_stop() and not request.stop_path.exists():
                    request.stop_path.touch()  # every rank saves and stops after the same step
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    relay_events(request.events_path, reporter, offset)
    if proc.returncode != 0 or not request.result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise ServerError(f"launched training failed (exit code {proc.returncode}); log {log_path}:\n{tail}")
    result = json.loads(request.result_path.read_text(encoding="utf-8"))
    if not isinstance(result, dict):
        raise ServerError(f"{request.result_path} does not hold a training result")
    return result


def train_on_all_devices(
    config: FinetuneConfig,
    examples: Sequence[Mapping[str, Any]],
    model_path: Path,
    output_dir: Path,
    reporter: JobReporter,
    resume_from: Path | None = None,
    *,
    checkpoint_dir: Path | None = None,
) -> TrainingResult:
    """:func:`studio.training.train.train` on every GPU there is: ``accelerate launch`` with two or more (the
    request files go to ``<output_dir>/../launch``), else in-process. Same arguments, same result."""
    device = pick_device()
    if device.count <= 1:
        return train(config, examples, model_path, output_dir, reporter, resume_from, checkpoint_dir=checkpoint_dir)
    request = LaunchRequest(
        launch_dir=output_dir.parent / "launch",
        model_path=model_path,
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        resume_from=resume_from,
    )
    request_path = request.write(config, examples)
    command = build_launch_command(request_path, device.count, bf16=device.bf16)
    reporter.log(f"{device.count} GPUs: " + " ".join(command))
    return TrainingResult.from_dict(run_launched(request, command, reporter))


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each launched process: ``python -m studio.training.launch <request.json>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m studio.training.launch <request.json>", file=sys.stderr)
        return 2
    request = LaunchRequest.read(Path(args[0]))
    config = parse_config(json.loads(request.config_path.read_text(encoding="utf-8")))
    with request.examples_path.open(encoding="utf-8") as fh:
        examples = [json.loads(line) for line in fh if line.strip()]
    rank = _rank()
    reporter: FileReporter = (FileReporter if rank == 0 else _SilentReporter)(request.events_path, request.stop_path)
    result = train(
        config,
        examples,
        request.model_path,
        request.output_dir,
        reporter,
        request.resume_from,
        checkpoint_dir=request.checkpoint_dir,
    )
    if rank == 0:
        request.result_path.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
