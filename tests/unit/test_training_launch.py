"""The multi-GPU path: the accelerate command line, and the event file that carries a launched run's progress,
curves, checkpoints and cancel back to the job process (no GPU needed to check either)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from studio.jobs.reporter import MemoryReporter
from studio.training.config import FinetuneConfig
from studio.training.launch import FileReporter, LaunchRequest, build_launch_command, relay_events


def test_launch_command_runs_our_module_under_accelerate_on_every_gpu(tmp_path: Path) -> None:
    command = build_launch_command(tmp_path / "request.json", 4)

    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in command
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[command.index("--mixed_precision") + 1] == "bf16"
    assert command[-3:] == ["-m", "studio.training.launch", str(tmp_path / "request.json")]
    assert build_launch_command(tmp_path / "r.json", 2, bf16=False)[command.index("--mixed_precision") + 1] == "no"


def test_one_gpu_is_not_launched(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two or more GPUs"):
        build_launch_command(tmp_path / "request.json", 1)


def test_request_round_trips_through_its_files(tmp_path: Path) -> None:
    request = LaunchRequest(
        launch_dir=tmp_path / "launch",
        model_path=tmp_path / "model",
        output_dir=tmp_path / "adapter",
        resume_from=tmp_path / "checkpoints" / "checkpoint-3",
    )
    config = FinetuneConfig(name="x", dataset="d", method="adapter")
    examples = [{"messages": [{"role": "user", "content": "é"}, {"role": "assistant", "content": "ü"}]}]

    path = request.write(config, examples)

    assert LaunchRequest.read(path) == request
    assert FinetuneConfig.model_validate_json(request.config_path.read_text()) == config
    assert request.examples_path.read_text(encoding="utf-8").count("\n") == 1


def test_events_written_by_rank_zero_reach_the_job_reporter(tmp_path: Path) -> None:
    events, stop = tmp_path / "events.jsonl", tmp_path / "stop"
    child = FileReporter(events, stop)
    parent = MemoryReporter()

    child.progress(3, 10, 0.5, 12.0, "training")
    child.metrics(3, 0.5, {"train_loss": 1.25})
    offset = relay_events(events, parent)
    child.log("step 3/10")
    child.checkpoint_saved(tmp_path / "checkpoint-3")
    with events.open("a") as fh:
        fh.write('{"type": "log", "args": ["half a li')  # still being written: left for the next poll
    offset = relay_events(events, parent, offset)

    assert parent.progress_calls == [(3, 10, 0.5, 12.0, "training")]
    assert parent.metric_points == [(3, 0.5, {"train_loss": 1.25})]
    assert parent.lines == ["step 3/10"]
    assert parent.checkpoints == [tmp_path / "checkpoint-3"]
    assert offset < events.stat().st_size
    assert not child.should_stop()
    stop.touch()
    assert child.should_stop()


def test_a_launched_result_reads_back_as_a_training_result(tmp_path: Path) -> None:
    from studio.training.train import TrainingResult

    result = TrainingResult(
        "completed", "adapter", tmp_path / "a", 4, 4, 1.0, 0.5, 0.6, 0.6, 9.0, 2.0, None, 10, 100, 8, 2
    )

    assert TrainingResult.from_dict(result.to_dict()) == result
