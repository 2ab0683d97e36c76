"""How long a fine-tuning job will take, measured on this machine before it is queued (the wizard's Review step).

A job's time is more than its training steps: a small job spends most of it loading the model, tokenising the
data, paying the first step's one-off costs, evaluating and writing checkpoints. :func:`estimate_duration`
builds the job's trainer exactly as the job will (same model, same data, same settings) and runs a short probe::

    load model     load_model()                           measured once
    tokenise       SFTTrainer(...) on every training row  measured (scaled to the eval rows left out of the probe)
    first step     train() up to the end of step 1        measured, with one-off costs (optimizer, kernels)
    train steps    steps 2..warmup+1                      measured: the rest of the job at their pace
    evaluation     one pass over a slice of the eval rows measured per batch, times the job's eval passes
    checkpoints    one checkpoint save                    measured, times the job's saves (+ the final artifact)

Each part has a range (``low``..``high``): the fastest and slowest of what was measured, and at least
``MIN_SPREAD`` either way, since one timing on a shared machine varies about that much from run to run. The
total's range is the sum of the parts' ranges. Nothing the probe writes is kept (a temporary directory).

Not measured here: starting the job's own process (imports, reading the dataset), which
:func:`studio.training.service.estimate_yaml` adds from the jobs that already ran on this studio.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from studio.training.config import FinetuneConfig
from studio.training.data import split_examples
from studio.training.methods import pick_device
from studio.training.train import _build_trainer, format_duration

#: a single timing on a 2-core machine shared with other work varied by about a fifth between identical runs
MIN_SPREAD = 0.2
#: eval rows the probe evaluates on (in batches of the job's size): enough for a per-batch time, cheap on big sets
PROBE_EVAL_BATCHES = 2


@dataclass(frozen=True)
class EstimatePart:
    """One part of a duration estimate: its expected seconds, the range it may take, and how it was found."""

    name: str
    seconds: float
    low: float
    high: float
    measured: bool = True
    detail: str = ""

    @classmethod
    def timed(
        cls, name: str, seconds: float, samples: Sequence[float] = (), count: float = 1, detail: str = ""
    ) -> EstimatePart:
        """``count`` times a measured ``seconds`` (e.g. 6 evaluations of 0.4 s), its range from ``samples`` (the
        single timings it came from) widened to at least ``MIN_SPREAD`` either way."""
        each = [s for s in samples if s >= 0] or [seconds]
        low = min(min(each), seconds * (1 - MIN_SPREAD))
        high = max(max(each), seconds * (1 + MIN_SPREAD))
        return cls(name, seconds * count, low * count, high * count, True, detail)

    def line(self) -> str:
        """``"tokenise: 1.4 s (1.1 s – 1.7 s), 45 examples"``."""
        how = "" if self.measured else ", not measured"
        detail = f", {self.detail}" if self.detail else ""
        return f"{self.name}: {_seconds(self.seconds)} ({_seconds(self.low)} – {_seconds(self.high)}){how}{detail}"


def _seconds(value: float) -> str:
    """Durations under 10 s with a decimal (a tiny job's parts are fractions of a second)."""
    return f"{value:.1f} s" if value < 10 else format_duration(value)


@dataclass
class EstimateResult:
    """A duration estimate: its measured parts, their sum and range, and what it took to compute."""

    total_steps: int
    seconds_per_step: float
    measured_steps: int
    device: str
    parts: list[EstimatePart] = field(default_factory=list)
    estimate_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        """The expected duration: the sum of the parts."""
        return sum(p.seconds for p in self.parts)

    @property
    def low_seconds(self) -> float:
        """The fast end of the range (every part at its fastest)."""
        return sum(p.low for p in self.parts)

    @property
    def high_seconds(self) -> float:
        """The slow end of the range (every part at its slowest)."""
        return sum(p.high for p in self.parts)

    def part(self, name: str) -> EstimatePart | None:
        """The part called ``name`` (None when this job has no such part, e.g. no evaluation)."""
        return next((p for p in self.parts if p.name == name), None)

    def with_part(self, part: EstimatePart) -> EstimateResult:
        """A copy with ``part`` first (the job's start, known only to the service that knows past jobs)."""
        return replace(self, parts=[part, *self.parts], notes=list(self.notes))

    def range_text(self) -> str:
        """``"48 s – 1 min 22 s"``."""
        return f"{format_duration(self.low_seconds)} – {format_duration(self.high_seconds)}"

    def summary(self) -> str:
        """``"about 1 min 5 s (48 s – 1 min 22 s) for 30 steps x 1.52 s/step on cpu"``."""
        return (
            f"about {format_duration(self.total_seconds)} ({self.range_text()}) for {self.total_steps} steps x "
            f"{self.seconds_per_step:.2f} s/step on {self.device}"
        )

    def breakdown(self) -> list[str]:
        """One line per part, in the order the job goes through them."""
        return [p.line() for p in self.parts]


def _evaluations(config: FinetuneConfig, total_steps: int, steps_per_epoch: int) -> int:
    """How many evaluation passes the job makes: every ``eval_every_steps`` and once more at the end when the last
    step is not a multiple (transformers' flow), or once per epoch."""
    if config.eval_every_steps:
        return math.ceil(total_steps / config.eval_every_steps)
    return math.ceil(total_steps / steps_per_epoch)


def estimate_duration(
    config: FinetuneConfig,
    examples: Sequence[Mapping[str, Any]],
    model_path: Path,
    *,
    warmup_steps: int = 2,
) -> EstimateResult:
    """Build the job's trainer here, run ``warmup_steps`` + 1 real steps, one evaluation and one checkpoint save,
    and extrapolate each part to the whole job (see the module docstring). Steps are counted the way the trainer
    will (packing and gradient accumulation included)."""
    from studio.training.callbacks import StepTimer

    started = time.perf_counter()
    train_rows, eval_rows = split_examples(examples, config.validation_split, config.seed, kto=config.method == "kto")
    probe_eval = eval_rows[: PROBE_EVAL_BATCHES * config.batch_size]
    device = pick_device()
    timer = StepTimer()
    notes: list[str] = []
    # one checkpoint and one evaluation, both at the probe's last step (transformers saves and, with a step
    # schedule, evaluates at the end of training): their cost is measured without extra steps
    probe = config.model_copy(update={"checkpoint_every_steps": 1_000_000, "eval_every_steps": 1_000_000})
    with tempfile.TemporaryDirectory(prefix="whetstone-estimate-") as tmp:
        trainer, times = _build_trainer(
            probe, train_rows, probe_eval, model_path, Path(tmp), device, [timer], max_steps=warmup_steps + 1
        )
        batches_per_epoch = len(trainer.get_train_dataloader())
        train_started = time.perf_counter()
        trainer.train()
    steps = timer.times
    measured = steps[1:] or steps  # the first step pays one-off costs (allocations, kernels), counted apart
    per_step = sum(measured) / len(measured)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.gradient_accumulation))
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))

    tokenised = len(train_rows) + len(probe_eval)
    scale = (len(train_rows) + len(eval_rows)) / max(1, tokenised)
    first_begin = timer.started[0] if timer.started else train_started
    first = max(0.0, first_begin - train_started) + (steps[0] if steps else per_step)
    parts = [
        EstimatePart.timed("load model", times.load_seconds),
        EstimatePart.timed(
            "tokenise", times.tokenise_seconds * scale, detail=f"{len(train_rows) + len(eval_rows)} examples"
        ),
        EstimatePart.timed("first step", first, detail="with its one-off costs: optimizer, data loader, kernels"),
        EstimatePart.timed(
            "train steps",
            per_step,
            measured,
            count=max(0, total_steps - 1),
            detail=f"{max(0, total_steps - 1)} more steps x {per_step:.2f} s",
        ),
    ]
    if eval_rows and config.validation_split > 0 and timer.eval_seconds:
        probe_batches = math.ceil(len(probe_eval) / config.batch_size)
        per_batch = timer.eval_seconds[0] / probe_batches
        passes = _evaluations(config, total_steps, steps_per_epoch)
        batches = math.ceil(len(eval_rows) / config.batch_size)
        parts.append(
            EstimatePart.timed(
                "evaluation",
                per_batch,
                count=passes * batches,
                detail=f"{passes} passes x {batches} batches x {per_batch:.2f} s",
            )
        )
    if timer.save_seconds:
        saves = math.ceil(total_steps / config.checkpoint_every_steps) + 1  # checkpoints, then the artifact
        parts.append(
            EstimatePart.timed(
                "checkpoints",
                timer.save_seconds[0],
                count=saves,
                detail=f"{saves - 1} checkpoints and the final save x {timer.save_seconds[0]:.2f} s",
            )
        )
    if device.count > 1:
        notes.append(f"{device.count} GPUs: measured on one; accelerate launch divides the steps between them")
    return EstimateResult(
        total_steps=total_steps,
        seconds_per_step=per_step,
        measured_steps=len(measured),
        device=device.name,
        parts=parts,
        estimate_seconds=time.perf_counter() - started,
        notes=notes,
    )
