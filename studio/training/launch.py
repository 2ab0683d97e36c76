"""Training on several processes: the same :func:`studio.training.train.train`, run under ``accelerate launch``.

The job config's ``strategy`` and ``num_processes`` decide (:func:`plan_launch`, at run time, on the worker's
machine):

    strategy         processes                         how
    auto             1 (CPU, one GPU)                  in this process, as always
    auto / ddp       2+ (every GPU, or num_processes)  DDP: a full copy per process; on CPU over gloo
    deepspeed_zero2  1+ GPUs                           DeepSpeed ZeRO-2 (optimizer state + gradients sharded)
    deepspeed_zero3  1+ GPUs                           DeepSpeed ZeRO-3 (weights sharded too)
    fsdp             1+ GPUs                           PyTorch FSDP (weights, gradients, optimizer state sharded)

An explicit strategy is never quietly replaced: DeepSpeed/FSDP without CUDA, DDP with fewer than two processes,
more processes than GPUs, are refused with an error naming ``strategy`` or ``num_processes``.

A launched run does not train in the job process. It writes a *request* (config, examples, paths) into the run
directory and starts::

    python -m accelerate.commands.launch --config_file configs/distributed/<strategy>[_offload].yaml \
        --multi_gpu|--use_deepspeed|--use_fsdp --num_processes N --num_machines 1 --mixed_precision bf16|no \
        --dynamo_backend no -m studio.training.launch <run>/launch/request.json

The YAML file (accelerate's own config format, read by accelerate) holds everything about the strategy that a
user may want to change; the command adds only what the job and the machine decide. Every rank runs
:func:`main`; rank 0 reports through a :class:`FileReporter` (JSON lines in ``events.jsonl``), which the job
process relays to its own reporter; a cancel in the job process creates ``stop`` and all ranks stop after the
same step (see ``callbacks._all_ranks_agree``). Rank 0 writes ``result.json`` at the end.

The launch runs in a session of its own: the worker's SIGTERM to the job's process group (shutdown, a slow cancel)
reaches only the job process, which stops the ranks after a step with a checkpoint; the ranks end by themselves when
the job process is gone (:func:`watch_owner`), and an error in the job process kills the launch's whole group.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from studio.errors import BackendUnavailableError, ServerError, ValidationError
from studio.jobs.reporter import JobReporter
from studio.settings import CONFIG_DIR
from studio.training.config import SHARDED_STRATEGIES, FinetuneConfig, parse_config
from studio.training.methods import Device, pick_device
from studio.training.train import TrainingResult, train

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
OWNER_ENV = "STUDIO_LAUNCH_OWNER_PID"  # the job process's pid, in every launched process's environment
DISTRIBUTED_CONFIG_DIR = CONFIG_DIR / "distributed"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

LaunchStrategy = Literal["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]
#: the ``accelerate launch`` flag that names each strategy's launcher (the config file says the same)
_LAUNCHER_FLAGS: dict[LaunchStrategy, str] = {
    "ddp": "--multi_gpu",
    "deepspeed_zero2": "--use_deepspeed",
    "deepspeed_zero3": "--use_deepspeed",
    "fsdp": "--use_fsdp",
}


def distributed_config_file(strategy: LaunchStrategy, cpu_offload: bool = False) -> Path:
    """The accelerate config file of ``strategy``: ``configs/distributed/<strategy>.yaml``, or
    ``<strategy>_offload.yaml`` with CPU offloading (DDP has no offloading variant)."""
    if cpu_offload and strategy == "ddp":
        raise ValueError("DDP has no CPU offloading; use deepspeed_zero2, deepspeed_zero3 or fsdp")
    return DISTRIBUTED_CONFIG_DIR / f"{strategy}{'_offload' if cpu_offload else ''}.yaml"


@dataclass(frozen=True)
class LaunchPlan:
    """How a training run is spread over processes (:func:`plan_launch`)."""

    strategy: LaunchStrategy
    num_processes: int
    device: str  # "cuda" or "cpu"
    bf16: bool
    cpu_offload: bool = False

    @property
    def config_file(self) -> Path:
        return distributed_config_file(self.strategy, self.cpu_offload)

    def describe(self) -> str:
        """``"ddp over 2 CPU processes (gloo)"`` / ``"fsdp over 4 GPUs, CPU offload"`` (for the job log)."""
        if self.device == "cuda":
            where = f"{self.num_processes} GPU{'s' if self.num_processes != 1 else ''}"
        else:
            where = f"{self.num_processes} CPU processes (gloo)"
        return f"{self.strategy} over {where}" + (", CPU offload" if self.cpu_offload else "")


def plan_launch(config: FinetuneConfig, device: Device) -> LaunchPlan | None:
    """How ``config`` trains on ``device``: a :class:`LaunchPlan` for ``accelerate launch``, or None to train in this
    process (strategy auto with one process).

    Raises :class:`ValidationError` naming ``strategy`` or ``num_processes`` when the machine cannot run what the
    config asks for (DeepSpeed/FSDP without CUDA, DDP with one process, more processes than GPUs, QLoRA sharded on a
    GPU without bfloat16), and :class:`BackendUnavailableError` when DeepSpeed is not installed.
    """
    cuda = device.name == "cuda"
    strategy = config.strategy
    if strategy in SHARDED_STRATEGIES:
        if not cuda:
            raise ValidationError(
                f"strategy {strategy} needs CUDA GPUs, and this machine has none (torch sees no GPU): choose strategy "
                "auto, or ddp with num_processes 2 or more to train over CPU processes",
                param="strategy",
            )
        if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            raise BackendUnavailableError(
                f"strategy {strategy} needs the deepspeed package, which is not installed on this machine "
                "(pip install deepspeed, on the CUDA machine that trains); or choose strategy fsdp or ddp",
                param="strategy",
                code="deepspeed_unavailable",
            )
        if config.method == "qlora" and strategy in ("fsdp", "deepspeed_zero3") and not device.bf16:
            # PEFT's FSDP / ZeRO-3 QLoRA guides: the 4-bit weights are stored as bfloat16 so they can be sharded
            raise ValidationError(
                f"method qlora with strategy {strategy} needs GPUs with bfloat16 (its 4-bit weights are stored as "
                "bfloat16 to be sharded), and these GPUs have none: choose strategy deepspeed_zero2 or ddp",
                param="strategy",
            )
    gpus = device.count if cuda else 0
    if cuda and config.num_processes is not None and config.num_processes > gpus:
        raise ValidationError(
            f"num_processes {config.num_processes} is more than the {gpus} GPU{'s' if gpus != 1 else ''} visible "
            "here (one process per GPU): lower it, or leave it empty for every GPU",
            param="num_processes",
        )
    processes = config.num_processes or (gpus if cuda else 1)
    if strategy == "auto" and processes < 2:
        return None
    if strategy in ("auto", "ddp"):
        if processes < 2:
            where = "only one GPU is visible here" if cuda else "this machine has no GPU"
            hint = "choose strategy auto" if cuda else "set num_processes to 2 or more to run DDP over CPU processes"
            raise ValidationError(
                f"strategy ddp needs two or more processes and {where}: {hint}", param="num_processes"
            )
        return LaunchPlan("ddp", processes, "cuda" if cuda else "cpu", device.bf16 if cuda else False)
    launch_strategy: LaunchStrategy = strategy  # type: ignore[assignment]  # one of SHARDED_STRATEGIES here
    return LaunchPlan(launch_strategy, processes, "cuda", device.bf16, config.cpu_offload)


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


def build_launch_command(
    request_path: Path,
    num_processes: int,
    *,
    bf16: bool = True,
    strategy: LaunchStrategy = "ddp",
    cpu_offload: bool = False,
) -> list[str]:
    """The ``accelerate launch`` command line that trains ``request_path`` on ``num_processes`` processes with
    ``strategy`` (its settings: :func:`distributed_config_file`)."""
    if strategy not in _LAUNCHER_FLAGS:
        raise ValueError(f"unknown launch strategy {strategy!r}; known: {', '.join(_LAUNCHER_FLAGS)}")
    if strategy == "ddp" and num_processes < 2:
        raise ValueError("accelerate launch is for two or more GPUs; train in-process on one")
    if num_processes < 1:
        raise ValueError("num_processes must be 1 or more")
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(distributed_config_file(strategy, cpu_offload)),
        _LAUNCHER_FLAGS[strategy],
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


def _launch_env() -> dict[str, str]:
    """The launched processes' environment: this one, with the studio importable wherever the worker runs, and
    this process's pid for the ranks to watch (:func:`watch_owner`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env[OWNER_ENV] = str(os.getpid())
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the launcher and every rank it started (they share its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def watch_owner(poll_s: float = 2.0) -> threading.Thread | None:
    """In a launched rank: end this process (exit code 3) once the job process that launched it is gone.

    The launch runs in its own session, so that a worker's SIGTERM to the job's process group reaches only the job
    process, which then stops the ranks after a step with a checkpoint (the stop file). The price: a job process
    killed outright no longer takes the ranks along; this watch does, within ``poll_s``."""
    raw = os.environ.get(OWNER_ENV, "")
    if not raw.isdigit():
        return None
    owner = int(raw)

    def watch() -> None:
        while True:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(3)
            except PermissionError:  # alive, owned by someone else: cannot happen for our own parent chain
                pass
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, name="launch-owner-watch", daemon=True)
    thread.start()
    return thread


def run_launched(request: LaunchRequest, command: Sequence[str], reporter: JobReporter) -> dict[str, Any]:
    """Run a launch ``command`` for ``request``, relaying its events and cancel; return ``result.json``'s content."""
    log_path = request.launch_dir / "launch.log"
    offset = 0
    with log_path.open("wb") as log_fh:
        # its own session: a SIGTERM to the job's group must not kill the ranks before they save (see watch_owner),
        # and an abort here stops the launcher and every rank with one killpg
        proc = subprocess.Popen(
            list(command), stdout=log_fh, stderr=subprocess.STDOUT, env=_launch_env(), start_new_session=True
        )
        try:
            while proc.poll() is None:
                time.sleep(POLL_SECONDS)
                offset = relay_events(request.events_path, reporter, offset)
                if reporter.should_stop() and not request.stop_path.exists():
                    request.stop_path.touch()  # every rank saves and stops after the same step
        except BaseException:
            _kill_group(proc)
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
    """:func:`studio.training.train.train` as ``config.strategy`` and ``config.num_processes`` say
    (:func:`plan_launch`): in this process, or under ``accelerate launch`` (the request files go to
    ``<output_dir>/../launch``). Same arguments, same result."""
    plan = plan_launch(config, pick_device())
    if plan is None:
        return train(config, examples, model_path, output_dir, reporter, resume_from, checkpoint_dir=checkpoint_dir)
    request = LaunchRequest(
        launch_dir=output_dir.parent / "launch",
        model_path=model_path,
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        resume_from=resume_from,
    )
    request_path = request.write(config, examples)
    command = build_launch_command(
        request_path, plan.num_processes, bf16=plan.bf16, strategy=plan.strategy, cpu_offload=plan.cpu_offload
    )
    reporter.log(f"{plan.describe()} ({plan.config_file.name}): {shlex.join(command)}")
    return TrainingResult.from_dict(run_launched(request, command, reporter))


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each launched process: ``python -m studio.training.launch <request.json>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m studio.training.launch <request.json>", file=sys.stderr)
        return 2
    watch_owner()
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
