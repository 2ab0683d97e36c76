"""Training on several processes (issue 22, point 2): the ``accelerate launch`` command of every strategy as
accelerate's own parser and config classes read it, the shipped ``configs/distributed`` files as accelerate loads
them, which plan each machine gets and what it refuses (naming the field), and a real DDP job over 2 CPU
processes (gloo) run by the job body the worker runs, whose loss curve matches a one-process run of the same
examples. DeepSpeed and FSDP cannot run without CUDA: their tiny runs are in tests/integration/test_cuda.py."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.errors import BackendUnavailableError, ValidationError
from studio.training.config import FinetuneConfig, parse_config
from studio.training.launch import (
    DISTRIBUTED_CONFIG_DIR,
    OWNER_ENV,
    LaunchPlan,
    build_launch_command,
    distributed_config_file,
    plan_launch,
)
from studio.training.methods import Device

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"
CPU = Device("cpu", False, 0)
TWO_GPUS = Device("cuda", True, 2)

# strategy, cpu_offload → the launcher flags accelerate sees (multi_gpu, use_deepspeed, use_fsdp), the config file
LAUNCHES: list[tuple[str, bool, tuple[bool, bool, bool], str]] = [
    ("ddp", False, (True, False, False), "ddp.yaml"),
    ("deepspeed_zero2", False, (False, True, False), "deepspeed_zero2.yaml"),
    ("deepspeed_zero2", True, (False, True, False), "deepspeed_zero2_offload.yaml"),
    ("deepspeed_zero3", False, (False, True, False), "deepspeed_zero3.yaml"),
    ("deepspeed_zero3", True, (False, True, False), "deepspeed_zero3_offload.yaml"),
    ("fsdp", False, (False, False, True), "fsdp.yaml"),
    ("fsdp", True, (False, False, True), "fsdp_offload.yaml"),
]


def config(**values: Any) -> FinetuneConfig:
    return FinetuneConfig(**{"name": "dist", "dataset": "d", **values})


# -- the command line and the config files, as accelerate reads them ----------------------------------------------
@pytest.mark.parametrize(("strategy", "offload", "flags", "file_name"), LAUNCHES)
def test_launch_command_parses_as_accelerate_launch_of_the_strategy(
    strategy: Any, offload: bool, flags: tuple[bool, bool, bool], file_name: str, tmp_path: Path
) -> None:
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType

    request = tmp_path / "launch" / "request.json"
    command = build_launch_command(request, 4, bf16=True, strategy=strategy, cpu_offload=offload)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]

    args = launch_command_parser().parse_args(command[3:])
    assert args.num_processes == 4 and args.num_machines == 1 and args.mixed_precision == "bf16"
    assert Path(args.config_file) == DISTRIBUTED_CONFIG_DIR / file_name
    assert (args.multi_gpu, args.use_deepspeed, args.use_fsdp) == flags
    assert args.module and args.training_script == "studio.training.launch"
    assert args.training_script_args == [str(request)]

    # accelerate merges the config file into the launch exactly as `accelerate launch` does
    merged, defaults, _ = _validate_launch_command(args)
    expected_type = {
        (True, False, False): DistributedType.MULTI_GPU,
        (False, True, False): DistributedType.DEEPSPEED,
        (False, False, True): DistributedType.FSDP,
    }[flags]
    assert defaults.distributed_type == expected_type  # the file and the flag name the same launcher
    assert merged.num_processes == 4  # the job's process count wins over anything in the file
    assert merged.main_process_port == 0  # a free port: two jobs side by side do not collide


@pytest.mark.parametrize(
    ("strategy", "offload", "stage", "optimizer_to", "params_to"),
    [
        ("deepspeed_zero2", False, 2, "none", "none"),
        ("deepspeed_zero2", True, 2, "cpu", "none"),
        ("deepspeed_zero3", False, 3, "none", "none"),
        ("deepspeed_zero3", True, 3, "cpu", "cpu"),
    ],
)
def test_deepspeed_plugin_built_from_the_launch_has_the_stage_and_offload(
    strategy: Any, offload: bool, stage: int, optimizer_to: str, params_to: str, tmp_path: Path
) -> None:
    """What each rank's accelerate builds from the environment the DeepSpeed launcher gives it (DeepSpeed itself is
    not needed to build the plugin, only to run it)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, patch_environment
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    command = build_launch_command(tmp_path / "request.json", 2, bf16=True, strategy=strategy, cpu_offload=offload)
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
    _cmd, env = prepare_deepspeed_cmd_env(args)
    rank_env = {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}
    assert rank_env["ACCELERATE_USE_DEEPSPEED"] == "true" and rank_env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in rank_env  # "auto": the job's own value applies

    with patch_environment(**rank_env):
        plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == optimizer_to and zero["offload_param"]["device"] == params_to
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert plugin.zero3_init_flag is (stage == 3)  # ZeRO-3 builds the model already sharded
    assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)  # the artifact is one 16-bit model


@pytest.mark.parametrize("offload", [False, True])
def test_fsdp_launch_environment_saves_a_full_state_dict(offload: bool, tmp_path: Path) -> None:
    """The FSDP variables the launcher hands every rank (what accelerate's FSDP plugin reads there): a full state
    dict (else the trainer saves no artifact), PEFT's LoRA settings, and the offload switch."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    command = build_launch_command(tmp_path / "request.json", 2, bf16=True, strategy="fsdp", cpu_offload=offload)
    args, _defaults, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "1"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    assert env["FSDP_OFFLOAD_PARAMS"] == ("true" if offload else "false")
    assert env["FSDP_USE_ORIG_PARAMS"] == "false" and env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert args.nproc_per_node == "2"


def test_every_shipped_config_file_loads_in_accelerate_and_belongs_to_a_strategy() -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    used = {distributed_config_file(strategy, offload) for strategy, offload, _, _ in LAUNCHES}
    shipped = set(DISTRIBUTED_CONFIG_DIR.glob("*.yaml"))
    assert shipped == used, f"unused: {shipped - used}; missing: {used - shipped}"
    for path in sorted(shipped):
        loaded = load_config_from_file(str(path))  # accelerate refuses unknown keys
        assert isinstance(loaded, ClusterConfig), path
        assert loaded.num_machines == 1 and loaded.main_process_port == 0, path
        assert path.read_text(encoding="utf-8").startswith("#"), f"{path.name} has no explanation for its reader"


def test_ddp_has_no_offload_variant() -> None:
    with pytest.raises(ValueError, match="no CPU offloading"):
        distributed_config_file("ddp", cpu_offload=True)
    with pytest.raises(ValueError, match="two or more"):
        build_launch_command(Path("request.json"), 1, strategy="ddp")
    one_gpu = build_launch_command(Path("request.json"), 1, strategy="fsdp")  # sharding (offload) pays on one GPU too
    assert "--use_fsdp" in one_gpu and one_gpu[one_gpu.index("--num_processes") + 1] == "1"


# -- the launched processes' lifetime --------------------------------------------------------------------------
def _ended(pid: int, within_s: float = 10.0) -> bool:
    import psutil

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True  # dead, waiting for a reaper that is not ours
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_an_aborted_launch_leaves_no_rank_behind(tmp_path: Path) -> None:
    """The job process gives up on a launch (an error while it relays): the launcher and the processes it started
    (the ranks, grandchildren of the job process) end with it."""
    from studio.jobs.reporter import MemoryReporter
    from studio.training.launch import LaunchRequest, run_launched

    request = LaunchRequest(tmp_path / "launch", tmp_path / "model", tmp_path / "adapter")
    request.launch_dir.mkdir()
    rank_pid = tmp_path / "rank.pid"
    launcher = (
        "import subprocess, sys, time\n"
        "rank = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "open(sys.argv[1], 'w').write(str(rank.pid))\n"
        "time.sleep(120)\n"
    )

    class GivesUp(MemoryReporter):
        def should_stop(self) -> bool:
            if rank_pid.is_file() and rank_pid.read_text():
                raise RuntimeError("the job body failed")
            return False

    with pytest.raises(RuntimeError, match="the job body failed"):
        run_launched(request, [sys.executable, "-c", launcher, str(rank_pid)], GivesUp())
    assert _ended(int(rank_pid.read_text())), "a launched rank outlived the job process's abort"


def test_a_rank_ends_when_its_job_process_is_gone() -> None:
    """A job process killed outright (SIGKILL, out of memory) cannot stop its ranks: they notice and exit."""
    rank = "import sys, time; from studio.training.launch import watch_owner; watch_owner(0.1); time.sleep(1.5)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphaned = subprocess.run([sys.executable, "-c", rank], env={**env, OWNER_ENV: str(gone.pid)}, timeout=60)
    assert orphaned.returncode == 3
    owned = subprocess.run([sys.executable, "-c", rank], env={**env, OWNER_ENV: str(os.getpid())}, timeout=60)
    assert owned.returncode == 0  # its job process is alive: it runs to the end


# -- which plan each machine gets, and what it refuses ------------------------------------------------------------
def test_plans_on_a_cpu_machine() -> None:
    assert plan_launch(config(), CPU) is None  # auto, one process: in-process, as always
    assert plan_launch(config(num_processes=2), CPU) == LaunchPlan("ddp", 2, "cpu", False)
    assert plan_launch(config(strategy="ddp", num_processes=3), CPU) == LaunchPlan("ddp", 3, "cpu", False)
    with pytest.raises(ValidationError, match="num_processes to 2 or more") as no_count:
        plan_launch(config(strategy="ddp"), CPU)
    assert no_count.value.param == "num_processes"
    for strategy in ("deepspeed_zero2", "deepspeed_zero3", "fsdp"):
        with pytest.raises(ValidationError, match=f"strategy {strategy} needs CUDA GPUs") as no_cuda:
            plan_launch(config(strategy=strategy), CPU)
        assert no_cuda.value.param == "strategy"


def test_plans_on_a_cuda_machine() -> None:
    assert plan_launch(config(), TWO_GPUS) == LaunchPlan("ddp", 2, "cuda", True)  # today's auto: every GPU
    assert plan_launch(config(), Device("cuda", True, 1)) is None
    fsdp = plan_launch(config(strategy="fsdp", cpu_offload=True), TWO_GPUS)
    assert fsdp == LaunchPlan("fsdp", 2, "cuda", True, cpu_offload=True)
    assert fsdp.config_file.name == "fsdp_offload.yaml"
    assert plan_launch(config(strategy="fsdp", num_processes=1), TWO_GPUS) == LaunchPlan("fsdp", 1, "cuda", True)
    with pytest.raises(ValidationError, match="more than the 2 GPUs") as too_many:
        plan_launch(config(num_processes=4), TWO_GPUS)
    assert too_many.value.param == "num_processes"
    with pytest.raises(ValidationError, match="only one GPU") as one_gpu:
        plan_launch(config(strategy="ddp"), Device("cuda", True, 1))
    assert one_gpu.value.param == "num_processes"
    with pytest.raises(ValidationError, match="bfloat16") as no_bf16:
        plan_launch(config(method="qlora", strategy="fsdp"), Device("cuda", False, 2))
    assert no_bf16.value.param == "strategy"
    zero3 = config(strategy="deepspeed_zero3")
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(BackendUnavailableError, match="pip install deepspeed") as missing:
            plan_launch(zero3, TWO_GPUS)
        assert missing.value.param == "strategy"
    else:
        assert plan_launch(zero3, TWO_GPUS) == LaunchPlan("deepspeed_zero3", 2, "cuda", True)


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"method": "prefix", "strategy": "fsdp"}, "strategy", "lora, qlora and full methods only"),
        ({"method": "kto", "strategy": "deepspeed_zero2"}, "strategy", "use strategy ddp or auto"),
        ({"strategy": "ddp", "num_processes": 1}, "num_processes", "single process"),
        ({"cpu_offload": True}, "cpu_offload", "needs strategy deepspeed_zero2, deepspeed_zero3 or fsdp"),
        ({"strategy": "ddp", "cpu_offload": True}, "cpu_offload", "DDP keeps everything on the GPUs"),
        (
            {"method": "qlora", "strategy": "deepspeed_zero3", "cpu_offload": True},
            "cpu_offload",
            "uses more GPU memory",
        ),
        ({"strategy": "zero3"}, "strategy", "'auto', 'ddp', 'deepspeed_zero2', 'deepspeed_zero3' or 'fsdp'"),
        ({"num_processes": 0}, "num_processes", "allowed range: 1 to 1,024"),
    ],
)
def test_bad_combinations_are_refused_naming_the_field(values: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_config({"name": "x", "dataset": "d", **values})
    assert refused.value.param == field
    assert f"{field}: " in refused.value.message and says in refused.value.message


def test_good_combinations_pass() -> None:
    for values in (
        {"method": "qlora", "strategy": "fsdp", "cpu_offload": True},
        {"method": "full", "strategy": "deepspeed_zero3", "cpu_offload": True},
        {"method": "lora", "strategy": "deepspeed_zero2", "num_processes": 1},
        {"method": "prefix", "strategy": "ddp", "num_processes": 2},
    ):
        assert parse_config({"name": "x", "dataset": "d", **values}).strategy == values["strategy"]


def test_wizard_form_carries_the_strategy_fields() -> None:
    """The Training step's Strategy / Processes / CPU offload widgets reach the config (0 processes = empty)."""
    from studio.training.service import FORM_FIELDS, config_from_form, form_values

    assert {"strategy", "num_processes", "cpu_offload"} <= set(FORM_FIELDS)
    values = form_values(config()) | {"strategy": "fsdp", "num_processes": 0, "cpu_offload": True}
    made = config_from_form(values)
    assert (made.strategy, made.num_processes, made.cpu_offload) == ("fsdp", None, True)
    with pytest.raises(ValidationError) as refused:
        config_from_form(form_values(config()) | {"cpu_offload": True})
    assert refused.value.param == "cpu_offload"


# -- a real DDP job over two CPU processes ------------------------------------------------------------------------
EXAMPLES: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
    }
    for a in range(1, 5)
    for b in range(1, 5)
]


@pytest.fixture(scope="module")
def tiny_home(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A studio home with a 2-layer random Llama (the bundled tokenizer and chat template) and a 16-example dataset."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from studio.datasets.store import DatasetStore
    from studio.db.engine import Database
    from studio.settings import Settings

    settings = Settings(home=tmp_path_factory.mktemp("dist-home"))
    settings.ensure_dirs()
    tiny = settings.home / "models" / "tiny-llama"
    tiny.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR), local_files_only=True)
    llama = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(llama).save_pretrained(str(tiny), safe_serialization=True)
    tokenizer.save_pretrained(str(tiny))
    db = Database(settings.db_url)
    DatasetStore(settings, db).create_version("arith", EXAMPLES, source="upload")
    yield settings, db, tiny
    db.dispose()


def run_finetune_job(home: Any, **values: Any) -> Any:
    """Queue a fine-tuning job and run it as the worker's job process does (``run_job``: the job body, its runtime
    writing progress, curves and the log to the job's row); returns the finished job."""
    from studio.jobs import queue
    from studio.jobs.child import run_job
    from studio.jobs.queue import Lease
    from studio.training.job import prepare_finetune

    settings, db, tiny = home
    job_config = FinetuneConfig(
        name=f"dist-{values.get('strategy', 'auto')}", dataset="arith", base_model=str(tiny), method="lora",
        max_steps=4, max_length=64, validation_split=0.0, checkpoint_every_steps=100, warmup_ratio=0.0,
        lr_scheduler="constant", learning_rate=5e-2, logging_steps=1, seed=0, **values,
    )  # fmt: skip
    queue.submit(db, "finetune", prepare_finetune(settings, db, job_config).model_dump(mode="json"))
    claimed = queue.claim_next(db, "test:1")
    assert claimed is not None
    run_job(settings, db, Lease.of(claimed))
    return queue.get_job(db, claimed.id)


def loss_curve(home: Any, job_id: str) -> list[tuple[int, float]]:
    from studio.jobs import queue

    _settings, db, _tiny = home
    return [(p.step, p.values["train_loss"]) for p in queue.job_metrics(db, job_id) if "train_loss" in p.values]


@pytest.mark.slow
def test_ddp_over_two_cpu_processes_trains_like_one_process(tiny_home: Any) -> None:
    """Two gloo processes with batch 2 each see the same 4 examples per step as one process with batch 4: the job
    succeeds through accelerate launch, rank 0 alone reports (one point per step), and its loss curve has the
    single run's length, falls like it, and stays close to it."""
    from studio.jobs import queue

    settings, _db, _tiny = tiny_home
    single = run_finetune_job(tiny_home, batch_size=4)
    ddp = run_finetune_job(tiny_home, batch_size=2, strategy="ddp", num_processes=2)

    log = queue.log_tail(settings, ddp.id, 200)
    assert single.state == "succeeded", single.message
    assert ddp.state == "succeeded", f"{ddp.message}\n{log}"
    assert "ddp over 2 CPU processes (gloo) (ddp.yaml): " in log and "--multi_gpu" in log
    assert "on 2 cpu processes" in log  # rank 0's own report, relayed from the launched processes
    assert (Path(ddp.artifact_path) / "adapter_config.json").is_file()
    assert not (settings.home / "runs" / single.id / "launch").exists()  # one process trains in the job process

    one, two = loss_curve(tiny_home, single.id), loss_curve(tiny_home, ddp.id)
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3, 4], (one, two)
    for curve in (one, two):
        losses = [loss for _, loss in curve]
        assert all(b < a for a, b in itertools.pairwise(losses)), (one, two)  # learning: the loss falls every step
    # step 1: the same weights on the same four examples, so the same loss; after that Adam's first, sign-like
    # steps amplify float noise a little (measured: within 0.3%); a run that does not learn is 1.8% off by step 4
    assert abs(one[0][1] - two[0][1]) <= 1e-3 * one[0][1], (one, two)
    for (step, a), (_, b) in zip(one, two, strict=True):
        assert abs(a - b) <= 0.01 * a, f"step {step}: one process {a:.4f}, two processes {b:.4f}"


def test_a_sharded_strategy_on_a_cpu_worker_fails_the_job_naming_strategy(tiny_home: Any) -> None:
    """Submitted from anywhere, refused where it runs: the job ends failed and says which field to change."""
    job = run_finetune_job(tiny_home, strategy="fsdp")
    assert job.state == "failed"
    assert job.message.startswith("strategy fsdp needs CUDA GPUs"), job.message
    assert job.artifact_path is None
