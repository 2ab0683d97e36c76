"""The ``selftest`` job kind: counts steps without loading a model, to check that a worker runs jobs.

It behaves like a training job where it matters to the queue: it reports progress and a metric each step,
saves a checkpoint (a small JSON file in the run folder) every ``checkpoint_every`` steps, resumes from the
latest one, and stops at the next step when cancelled. ``fail_at_step`` makes it raise, to see a failure
end up in the job's message and log. Submit it from the CLI with a YAML file holding ``kind: selftest``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from studio.jobs.kinds import JobKind, register_kind

if TYPE_CHECKING:
    from studio.jobs.runtime import JobRuntime


class SelftestConfig(BaseModel):
    """Config of a ``selftest`` job."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=10, ge=1, le=100_000, description="How many steps to count.")
    sleep_s: float = Field(default=0.1, ge=0.0, le=3600.0, description="Seconds each step takes.")
    checkpoint_every: int = Field(default=5, ge=1, description="Save a checkpoint every N steps.")
    fail_at_step: int | None = Field(
        default=None, ge=1, description="Raise an error when this step is reached (to test failure handling)."
    )
    helper_process: bool = Field(
        default=False,
        description="Also start a helper process, as data loaders do: checks that no process outlives a cancel.",
    )


def _save_checkpoint(runtime: JobRuntime, step: int) -> None:
    folder = runtime.run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(json.dumps({"step": step}), encoding="utf-8")
    runtime.checkpoint_saved(folder)


def run_selftest(config: SelftestConfig, runtime: JobRuntime) -> dict[str, Any]:
    """Count ``config.steps`` steps, honouring cancel and resume like a trainer does."""
    helper: subprocess.Popen[bytes] | None = None
    if config.helper_process:
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        runtime.log(f"helper process {helper.pid}")
    try:
        return _count(config, runtime)
    finally:
        if helper is not None:
            helper.kill()
            helper.wait()


def _count(config: SelftestConfig, runtime: JobRuntime) -> dict[str, Any]:
    start = 0
    if runtime.resume_from is not None:
        start = int(json.loads((runtime.resume_from / "state.json").read_text(encoding="utf-8"))["step"])
        runtime.log(f"resuming from {runtime.resume_from} at step {start}")
    runtime.progress(start, config.steps, message="starting")
    for step in range(start + 1, config.steps + 1):
        time.sleep(config.sleep_s)
        if config.fail_at_step is not None and step >= config.fail_at_step:
            raise RuntimeError(f"selftest failed at step {step} as configured (fail_at_step)")
        runtime.progress(step, config.steps, epoch=step / config.steps, message=f"step {step}/{config.steps}")
        runtime.metrics(step, step / config.steps, {"train_loss": 1.0 / step})
        runtime.log(f"step {step}")
        saved = step % config.checkpoint_every == 0 or step == config.steps
        if saved:
            _save_checkpoint(runtime, step)
        if runtime.should_stop():
            if not saved:
                _save_checkpoint(runtime, step)
            runtime.log(f"stopping at step {step} as asked")
            return {"steps_done": step, "stopped": True}
    return {"steps_done": config.steps, "stopped": False}


register_kind(
    JobKind(
        name="selftest",
        config_model=SelftestConfig,
        run=run_selftest,
        description="Counts steps without a model: checks that a worker picks up, reports and cancels jobs.",
    )
)
