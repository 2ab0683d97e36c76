"""The trainer callback that connects a TRL/transformers ``Trainer`` to a :class:`JobReporter`.

Per optimizer step it reports progress with an ETA from measured step times and asks whether the job was
cancelled (then it saves a checkpoint and stops the trainer after that step). Per logging step it reports the
curves (train loss, eval loss, learning rate, grad norm); per save it reports the checkpoint; per evaluation
it applies early stopping on eval loss.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from studio.jobs.reporter import JobReporter

log = logging.getLogger(__name__)

# transformers' log keys → the names the studio's curves use
METRIC_NAMES = {
    "loss": "train_loss",
    "eval_loss": "eval_loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
}


def _all_ranks_agree(flag: bool) -> bool:
    """Under ``accelerate launch`` every rank must stop at the same step (else DDP hangs): true if any says so."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return flag
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


class ReporterCallback(TrainerCallback):  # type: ignore[misc]
    """Progress, metrics, checkpoints, cancellation and early stopping for one training run."""

    def __init__(
        self,
        reporter: JobReporter,
        *,
        early_stopping_patience: int = 0,
        early_stopping_threshold: float = 0.0,
        eta_window: int = 20,
    ) -> None:
        self.reporter = reporter
        self.patience = early_stopping_patience
        self.threshold = early_stopping_threshold
        self.step_times: deque[float] = deque(maxlen=eta_window)
        self._step_started: float | None = None
        self.cancelled = False
        self.stopped_early = False
        self.best_eval_loss: float | None = None
        self.last_eval_loss: float | None = None
        self.last_train_loss: float | None = None
        self._bad_evals = 0
        self.first_step = 0

    # -- helpers -------------------------------------------------------------------------------------------
    def seconds_per_step(self) -> float | None:
        """Median of the recent measured step times (robust to one slow step, e.g. an evaluation)."""
        return statistics.median(self.step_times) if self.step_times else None

    def _eta(self, state: TrainerState) -> float | None:
        per_step = self.seconds_per_step()
        if per_step is None or not state.max_steps:
            return None
        return max(0, state.max_steps - state.global_step) * per_step

    # -- trainer events ------------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.first_step = state.global_step
        if state.is_world_process_zero:
            where = f" (resumed at step {state.global_step})" if state.global_step else ""
            self.reporter.log(f"training started: {state.max_steps} steps{where}")
            self.reporter.progress(state.global_step, state.max_steps, state.epoch or 0.0, None, "training")

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._step_started = time.perf_counter()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if self._step_started is not None:
            self.step_times.append(time.perf_counter() - self._step_started)
            self._step_started = None
        if state.is_world_process_zero:
            # the trainer evaluates right after this step when the flow callback (called first) asked for it
            doing = "evaluating on the held-out examples" if control.should_evaluate else "training"
            self.reporter.progress(state.global_step, state.max_steps, state.epoch, self._eta(state), doing)
            wants_stop = self.reporter.should_stop()
        else:
            wants_stop = False
        if _all_ranks_agree(wants_stop) and not control.should_training_stop:
            # Save first, then stop: the trainer checks should_save before should_training_stop after this step.
            self.cancelled = True
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                self.reporter.log(f"cancel requested: saving a checkpoint at step {state.global_step} and stopping")
        return control

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        values = {
            METRIC_NAMES[k]: float(v)
            for k, v in logs.items()
            if k in METRIC_NAMES and isinstance(v, int | float) and math.isfinite(float(v))
        }
        if "train_loss" in values:
            self.last_train_loss = values["train_loss"]
        if values:
            self.reporter.metrics(state.global_step, state.epoch, values)
            shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
            self.reporter.log(f"step {state.global_step}/{state.max_steps} {shown}")

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        loss = (metrics or {}).get("eval_loss")
        if loss is None or not math.isfinite(loss):
            return control
        self.last_eval_loss = float(loss)
        if self.best_eval_loss is None or self.best_eval_loss - loss > self.threshold:
            self.best_eval_loss = float(loss) if self.best_eval_loss is None else min(self.best_eval_loss, loss)
            self._bad_evals = 0
            return control
        self._bad_evals += 1
        if self.patience and self._bad_evals >= self.patience and not control.should_training_stop:
            self.stopped_early = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                self.reporter.log(
                    f"early stopping at step {state.global_step}: eval loss did not improve by more than "
                    f"{self.threshold:g} for {self._bad_evals} evaluations (best {self.best_eval_loss:.4g})"
                )
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            path = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            self.reporter.checkpoint_saved(path)  # the reporter logs it (it logged twice when this did too)


class StepTimer(TrainerCallback):  # type: ignore[misc]
    """Measures each optimizer step's wall time, and each evaluation and checkpoint save that follows a step (for
    duration estimates and the benchmark)."""

    def __init__(self) -> None:
        self.times: list[float] = []  # each step's seconds
        self.started: list[float] = []  # when each step began (perf_counter)
        self.eval_seconds: list[float] = []  # each evaluation pass
        self.save_seconds: list[float] = []  # each checkpoint save
        self._started: float | None = None
        self._mark: float | None = None  # the end of the last step or evaluation

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._started = time.perf_counter()
        self.started.append(self._started)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._mark = time.perf_counter()
        if self._started is not None:
            self.times.append(self._mark - self._started)
            self._started = None

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        now = time.perf_counter()
        if self._mark is not None:  # the trainer logs, evaluates, then saves, right after a step
            self.eval_seconds.append(now - self._mark)
        self._mark = now

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.save_seconds.append(now - self._mark)
        self._mark = None
