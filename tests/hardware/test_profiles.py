"""Hardware profiles: presets validate, impossible settings are refused before launch naming the
keys, the generated DeepSpeed config follows `train`, launch commands and SLURM submissions are
what they should be, dry runs start nothing, and device_map trains an adapter on a base that is
partly offloaded to disk exactly like on a normally loaded one. (Real multi-process runs:
tests/e2e/test_multiprocess.py.)"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.cli.app import main
from framework.config.path import load_run
from framework.core.errors import UserError
from tests.helpers import REPO, cuda_available, train_losses, train_recipe

RECIPE = "seq_cls_tiny_bert_lora"
GPU_PRESETS = ["gpu", "ddp", "zero1", "zero2", "zero3", "zero3_offload", "fsdp", "device_map"]


def run_of(*overrides: str):
    return load_run(RECIPE, list(overrides))


def problems_of(*overrides: str) -> str:
    with pytest.raises(UserError) as error:
        run_of(*overrides)
    return str(error.value)


# ---- presets and validation ---------------------------------------------------------------------
@pytest.mark.parametrize("preset", GPU_PRESETS + ["zero3_nvme"])
def test_every_gpu_preset_validates_for_a_dry_run(preset):
    """A dry run (e.g. on a login node) skips the GPU count; everything else is checked."""
    extra = ["hardware.nvme_path=/local/nvme"] if preset == "zero3_nvme" else []
    run = run_of(f"hardware={preset}", "dry_run=true", *extra)
    assert run.hardware.name in ("gpu", "ddp", "deepspeed", "fsdp", "device_map")


@pytest.mark.parametrize("preset", ["ddp", "zero1", "zero2", "zero3"])
def test_multi_process_presets_validate_on_cpu(preset):
    run = run_of(f"hardware={preset}", "hardware.device=cpu")
    assert run.hardware.device == "cpu" and run.hardware.num_processes == 2


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["hardware=device_map", "hardware.num_processes=2", "dry_run=true"],
            ["hardware.num_processes=2", "hardware=device_map", "ONE process"],
        ),
        (
            ["hardware=zero3_nvme", "dry_run=true"],
            [
                "hardware.nvme_path: required",
                "hardware.deepspeed.zero_optimization.offload_param.device=nvme",
            ],
        ),
        (
            ["hardware=zero3", "peft=qlora", "dry_run=true"],
            ["peft=qlora", "ZeRO-3", "hardware=zero2"],
        ),
        (["hardware=fsdp", "peft=qlora", "dry_run=true"], ["peft=qlora with hardware=fsdp"]),
        (
            ["hardware=device_map", "peft=qlora", "dry_run=true"],
            ["peft=qlora with hardware=device_map"],
        ),
        (["hardware.precision=bf16"], ["hardware.precision=bf16: mixed precision needs a GPU"]),
        (
            ["hardware=ddp", "hardware.device=cpu", "hardware.precision=fp16"],
            ["hardware.precision=fp16: mixed precision needs a GPU"],
        ),
        (
            [
                "hardware=zero2",
                "hardware.device=cpu",
                "+hardware.deepspeed.gradient_accumulation_steps=4",
            ],
            [
                "hardware.deepspeed.gradient_accumulation_steps=4 disagrees with train.grad_accum (= 1)"
            ],
        ),
        (
            [
                "hardware=zero2",
                "hardware.device=cpu",
                "+hardware.deepspeed.train_micro_batch_size_per_gpu=2",
            ],
            [
                "hardware.deepspeed.train_micro_batch_size_per_gpu=2 disagrees with train.batch_size (= 8)"
            ],
        ),
        (
            ["hardware=zero2", "hardware.device=cpu", "+hardware.deepspeed.gradient_clipping=5"],
            ["hardware.deepspeed.gradient_clipping=5 disagrees with train.max_grad_norm (= 1.0)"],
        ),
        (
            [
                "hardware=zero2",
                "hardware.precision=fp16",
                "+hardware.deepspeed.bf16.enabled=true",
                "dry_run=true",
            ],
            ["hardware.deepspeed.bf16.enabled=True disagrees with hardware.precision=fp16"],
        ),
        (
            ["hardware=zero2", "hardware.device=cpu", "+hardware.deepspeed.optimizer.type=AdamW"],
            ["hardware.deepspeed.optimizer: ft builds the optimizer from train.optimizer"],
        ),
        (
            ["hardware=zero3_offload", "train.optimizer=sgd", "dry_run=true"],
            ["train.optimizer=sgd with hardware.deepspeed.zero_optimization.offload_optimizer"],
        ),
        (
            ["hardware=zero2", "hardware.deepspeed.zero_optimization.stage=5", "dry_run=true"],
            ["hardware.deepspeed.zero_optimization.stage=5: must be 0, 1, 2 or 3"],
        ),
        (
            ["hardware=device_map", "hardware.device=cpu", "hardware.max_memory={0:1GiB,cpu:lots}"],
            ["hardware.max_memory.0 with hardware.device=cpu", "hardware.max_memory.cpu='lots'"],
        ),
        (
            ["hardware=ddp", "hardware.machine_rank=2", "hardware.device=cpu"],
            ["hardware.machine_rank=2 must be in [0, hardware.num_machines=1)"],
        ),
    ],
)
def test_impossible_settings_are_refused_naming_the_keys(overrides, expected):
    message = problems_of(*overrides)
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
def test_more_processes_than_gpus_is_refused():
    message = problems_of("hardware=ddp", "hardware.num_processes=2")
    assert "hardware.num_processes=2: this machine has no CUDA GPU" in message
    assert "hardware.device=cpu" in message


def test_deepspeed_config_file_missing_or_not_json(tmp_path):
    message = problems_of(
        "hardware=deepspeed",
        "hardware.device=cpu",
        f"hardware.deepspeed_config_file={tmp_path / 'none.json'}",
    )
    assert "hardware.deepspeed_config_file=" in message and "no such file" in message
    bad = tmp_path / "bad.json"
    bad.write_text("{stage: 2")
    message = problems_of(
        "hardware=deepspeed", "hardware.device=cpu", f"hardware.deepspeed_config_file={bad}"
    )
    assert "not a DeepSpeed JSON config" in message


# ---- the generated DeepSpeed config ---------------------------------------------------------------
def test_deepspeed_config_takes_batch_accumulation_and_clipping_from_train():
    from framework.hardware.zero import deepspeed_config

    run = run_of(
        "hardware=zero3",
        "hardware.num_processes=4",
        "hardware.num_machines=2",
        "train.batch_size=3",
        "train.grad_accum=5",
        "train.max_grad_norm=0.5",
        "dry_run=true",
    )
    config = deepspeed_config(run.hardware, run.train, world_size=8)
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 5
    assert config["train_batch_size"] == 3 * 5 * 8
    assert config["gradient_clipping"] == 0.5
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert "fp16" not in config and "bf16" not in config  # Accelerate sets them from precision
    unclipped = run_of("hardware=zero2", "train.max_grad_norm=null", "dry_run=true")
    assert deepspeed_config(unclipped.hardware, unclipped.train, 2)["gradient_clipping"] == 0.0


def test_user_json_is_the_base_and_preset_keys_go_on_top(tmp_path):
    from framework.hardware.zero import deepspeed_config

    user = tmp_path / "ds.json"
    user.write_text(
        json.dumps(
            {
                "zero_optimization": {
                    "stage": 2,
                    "overlap_comm": False,
                    "reduce_bucket_size": 1000,
                },
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "bf16": {"enabled": "auto"},
                "wall_clock_breakdown": True,
            }
        )
    )
    run = run_of(
        "hardware=deepspeed",
        "hardware.device=cpu",
        f"hardware.deepspeed_config_file={user}",
        "+hardware.deepspeed.zero_optimization.overlap_comm=true",
        "train.batch_size=2",
    )
    config = deepspeed_config(run.hardware, run.train, world_size=2)
    assert config["zero_optimization"] == {
        "stage": 2,
        "overlap_comm": True,
        "reduce_bucket_size": 1000,
    }
    assert config["wall_clock_breakdown"] is True
    assert config["train_micro_batch_size_per_gpu"] == 2 and config["train_batch_size"] == 4


def test_nvme_path_fills_every_nvme_offload_section():
    from framework.hardware.zero import deepspeed_config

    run = run_of("hardware=zero3_nvme", "hardware.nvme_path=/local/nvme", "dry_run=true")
    zero = deepspeed_config(run.hardware, run.train, 1)["zero_optimization"]
    assert (
        zero["offload_param"]["nvme_path"]
        == zero["offload_optimizer"]["nvme_path"]
        == "/local/nvme"
    )


@pytest.mark.slow
def test_accelerate_plugin_carries_the_config_and_cpu_uses_gloo():
    """What the runner hands to Accelerator (imports accelerate/deepspeed, starts nothing)."""
    from framework.core.registry import HARDWARE

    run = run_of("hardware=zero3", "hardware.device=cpu", "train.grad_accum=2")
    kwargs = HARDWARE.get("deepspeed").accelerator_kwargs(run.hardware, run.train)
    plugin = kwargs["deepspeed_plugin"]
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 2
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 3
    assert plugin.zero3_init_flag is True and kwargs["cpu"] is False
    assert kwargs["kwargs_handlers"][0].backend == "gloo"
    assert HARDWARE.get("deepspeed").launch_env(run.hardware) == {"DS_ACCELERATOR": "cpu"}

    fsdp = run_of("hardware=fsdp", "dry_run=true")
    plugin_kwargs = HARDWARE.get("fsdp").plugin_kwargs(fsdp.hardware)
    assert (
        plugin_kwargs["fsdp_version"] == 2 and plugin_kwargs["state_dict_type"] == "FULL_STATE_DICT"
    )


# ---- launching ------------------------------------------------------------------------------------
def test_launch_command_runs_the_runner_on_the_saved_config():
    from framework.core.registry import HARDWARE
    from framework.hardware.base import launch_command

    run = run_of(
        "hardware=ddp",
        "hardware.device=cpu",
        "hardware.num_processes=2",
        "hardware.main_process_port=29601",
    )
    command = launch_command(HARDWARE.get("ddp"), run.hardware, Path("/runs/x"), "config.yaml")
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[-5:] == [
        "-m",
        "framework.training.trainer",
        "/runs/x",
        "--config",
        "config.yaml",
    ]
    args = " ".join(command)
    # torchrun-style launch (--multi_gpu): --cpu would start one process only.
    assert (
        "--num_processes 2 " in args
        and "--multi_gpu" in args
        and "--main_process_port 29601" in args
    )


def test_multi_node_world_size_and_slurm_supplied_rank(monkeypatch):
    from framework.core.registry import HARDWARE
    from framework.hardware.slurm import machine_settings

    run = run_of(
        "hardware=ddp", "hardware.num_processes=4", "hardware.num_machines=2", "dry_run=true"
    )
    profile = HARDWARE.get("ddp")
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    args = profile.launch_args(run.hardware)
    assert args[args.index("--num_processes") + 1] == "8"
    assert args[args.index("--machine_rank") + 1] == "0"
    slurm = {
        "SLURM_JOB_ID": "7",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_NTASKS_PER_NODE": "1",
    }
    assert machine_settings(run.hardware, slurm) == (1, "gpu07")
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    args = profile.launch_args(run.hardware)
    assert args[args.index("--machine_rank") + 1] == "1"
    assert args[args.index("--main_process_ip") + 1] == "gpu07"
    with pytest.raises(UserError, match=r"hardware.num_machines=3, but this SLURM job has 2"):
        machine_settings(
            run_of("hardware=ddp", "hardware.num_machines=3", "dry_run=true").hardware, slurm
        )


def test_dry_run_prints_the_launch_and_creates_nothing(tmp_path, capsys):
    code = main(
        [
            "train",
            RECIPE,
            "hardware=zero2",
            "hardware.num_machines=2",
            "dry_run=true",
            f"output_root={tmp_path}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "-m accelerate.commands.launch --num_processes 4 --num_machines 2" in out
    assert "-m framework.training.trainer RUN_DIR --config config.yaml" in out
    assert '"train_batch_size": 32' in out and '"stage": 2' in out
    assert "4 processes x batch_size 8 x grad_accum 1 = 32 examples per step" in out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_never_imports_torch(tmp_path):
    code = (
        "import sys; from framework.cli.app import main; "
        f"rc = main(['train', '{RECIPE}', 'hardware=zero3', 'dry_run=true', "
        f"'output_root={tmp_path}']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "accelerate.commands.launch" in result.stdout


# ---- SLURM ----------------------------------------------------------------------------------------
def test_slurm_launcher_sizes_the_job_from_the_hardware_preset():
    from omegaconf import OmegaConf

    from framework.config.compose import hydra_compose, hydra_overrides
    from framework.config.recipe import read_recipe

    cfg = hydra_compose(
        read_recipe(RECIPE),
        hydra_overrides(
            [
                "hydra/launcher=slurm",
                "hardware=ddp",
                "hardware.num_machines=3",
                "hardware.num_processes=8",
            ]
        ),
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (3, 1, 8)


def test_dry_run_shows_the_sbatch_script(capsys):
    code = main(
        [
            "train",
            RECIPE,
            "hydra/launcher=slurm",
            "hardware=ddp",
            "hardware.num_machines=2",
            "hardware.num_processes=4",
            "hydra.launcher.partition=gpu",
            "dry_run=true",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "-m submitit.core._submit",
    ):
        assert line in out, out
    assert "srun " in out


FAKE_SLURM = {
    # sbatch keeps the script it was given and answers like SLURM; the job then reads as FAILED,
    # so Hydra's launcher stops waiting (nothing runs).
    "sbatch": '#!/bin/sh\ncp "$1" "$FAKE_SLURM_RECORD"\necho "Submitted batch job 4242"\n',
    "srun": "#!/bin/sh\nexit 0\n",
    "sacct": "#!/bin/sh\nprintf 'JobID|State|NodeList\\n4242|FAILED|node1\\n'\n",
    "scancel": "#!/bin/sh\nexit 0\n",
}


@pytest.mark.slow
def test_multirun_on_slurm_submits_one_task_per_node(tmp_path):
    """The real `ft train -m hydra/launcher=slurm` path up to sbatch, with fake SLURM tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "submitted.sh"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        FAKE_SLURM_RECORD=str(record),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "framework",
            "train",
            RECIPE,
            "-m",
            "hydra/launcher=slurm",
            "hardware=ddp",
            "hardware.num_machines=2",
            "hardware.num_processes=4",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    script = record.read_text()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --job-name=ft",
    ):
        assert line in script, script
    assert "-m submitit.core._submit" in script.splitlines()[-1]


# ---- device_map: training on a base that does not fit -----------------------------------------------
DM_COMMON = [
    "train.max_steps=5",
    "train.log_every=1",
    "peft.dropout=0",
    "data.max_train_examples=40",
    "data.max_eval_examples=8",
    "data.max_length=48",
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_device_map_offloads_to_disk_and_trains_like_a_normal_load(tmp_path):
    """max_memory.cpu below the model size: the later layers go to disk. The adapter (including
    its layers on offloaded modules) must train exactly as on a normally loaded model, and the
    base checkpoint must be left untouched."""
    import torch
    from safetensors.torch import load_file

    from framework.models.loading import resolve_checkpoint

    run = load_run("sft_tiny_llama_lora", [])
    weights = Path(resolve_checkpoint(run.plugins.family, run.model)) / "model.safetensors"
    before = _sha(weights)
    # 80% of the weights' size: accelerate keeps room for the largest layer, so the embeddings and
    # layer 0 stay in "RAM" and layer 1, the final norm and the LM head go to disk.
    budget = int(weights.stat().st_size * 0.8)

    normal = train_recipe("sft_tiny_llama_lora", *DM_COMMON, output_root=tmp_path / "normal")
    offload = train_recipe(
        "sft_tiny_llama_lora",
        *DM_COMMON,
        "hardware=device_map",
        "hardware.device=cpu",
        f"hardware.max_memory={{cpu:{budget}}}",
        f"hardware.offload_folder={tmp_path / 'offload'}",
        output_root=tmp_path / "offloaded",
    )
    log = (offload / "train.log").read_text()
    placement = log.split("device_map: modules per device ")[1].splitlines()[0]
    assert "'disk'" in placement and "'cpu'" in placement, placement
    assert int(placement.split("; ")[1].split()[0]) > 0  # offloaded weights were stood in for

    assert max(abs(a - b) for a, b in zip(train_losses(offload), train_losses(normal))) < 1e-5
    a = load_file(str(offload / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(normal / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # Adapters of the disk-offloaded last layer trained too (lora_B starts at zero).
    last = [k for k in a if "layers.1." in k and "lora_B" in k]
    assert last and all(a[k].abs().max() > 0 for k in last)
    assert _sha(weights) == before  # the frozen base was only read


def test_gpu_check_script_commands_are_valid_configs():
    """bench/gpu_check.sh's checks stay in step with the presets (validated as dry runs here;
    qlora also needs bitsandbytes and CUDA, which this check cannot assume)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    found = gpu_check.checks(model_bytes=10_000_000)
    assert list(found) == ["gpu", "zero2", "zero3_offload", "device_map", "qlora"]
    assert "hardware.max_memory={0:5000000,cpu:64GiB}" in found["device_map"]
    for name, overrides in found.items():
        if name == "qlora":
            continue
        run = load_run(
            "sft_tiny_llama_lora", [*gpu_check.common_overrides(5), *overrides, "dry_run=true"]
        )
        assert run.train.max_steps == 5


# ---- GPU (skipped without CUDA) ---------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_preset_trains_in_bf16_or_fp16(tmp_path):
    import torch

    run_dir = train_recipe(
        RECIPE, "hardware=gpu", "train.max_steps=5", "train.log_every=1", output_root=tmp_path
    )
    losses = train_losses(run_dir)
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses), losses
    # The run computed on the GPU in the precision the card supports (bf16, else fp16 + scaler).
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    log = (run_dir / "train.log").read_text()
    assert f"device: cuda:0; mixed precision: {expected}" in log, log


@pytest.mark.gpu
@pytest.mark.slow
def test_device_map_on_gpu_with_cpu_offload(tmp_path):
    run_dir = train_recipe(
        "sft_tiny_llama_lora",
        *DM_COMMON,
        "hardware=device_map",
        "hardware.max_memory={0:300KB,cpu:10GiB}",
        output_root=tmp_path,
    )
    placement = (run_dir / "train.log").read_text().split("device_map: modules per device ")[1]
    placed = ast.literal_eval(placement.split(";")[0])  # {"0": n, "cpu": m}: modules per device
    assert placed.get("0", 0) > 0 and placed.get("cpu", 0) > 0, placement  # GPU and CPU both used
    losses = train_losses(run_dir)
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses), losses
