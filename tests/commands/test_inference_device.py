"""`ft eval` / `ft predict` run on the GPU when there is one, under the run's own mixed precision
when it trained on a GPU, else on CPU; `--hardware PRESET` decides instead. The decision is
tested without a GPU; the `gpu`-marked test runs it on a real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TOY_CLS_RECIPE, ft_cli, toy_cls_overrides, write_jsonl


def run_with(*overrides: str):
    from framework.config.path import load_run

    return load_run(TOY_CLS_RECIPE, list(overrides))


def test_the_gpu_is_used_when_there_is_one_at_the_runs_own_precision():
    from framework.commands.inference import ON_CPU, Placement, choose_placement

    trained_on_cpu = run_with("hardware=cpu")
    assert choose_placement(trained_on_cpu, False, cuda_available=True) == Placement(
        "cuda", "no", {}
    )
    assert choose_placement(trained_on_cpu, False, cuda_available=False) == ON_CPU
    trained_on_gpu = run_with("hardware=gpu", "hardware.precision=bf16")
    assert choose_placement(trained_on_gpu, False, cuda_available=True) == Placement(
        "cuda", "bf16", {}
    )
    assert choose_placement(trained_on_gpu, False, cuda_available=False) == ON_CPU
    # A device_map run loads its base the way it trained (layers placed by transformers).
    big = run_with("hardware=device_map", "hardware.max_memory={0: 10GiB, cpu: 50GiB}")
    placement = choose_placement(big, False, cuda_available=True)
    assert placement.device == "cuda" and placement.load_kwargs["device_map"] == "auto"
    assert placement.load_kwargs["max_memory"] == {0: "10GiB", "cpu": "50GiB"}


def test_hardware_given_decides_and_a_gpu_preset_without_a_gpu_is_one_line(tmp_path):
    from framework.commands.inference import ON_CPU, Placement, choose_placement, with_hardware
    from framework.core.errors import UserError

    saved = run_with("hardware=gpu", "hardware.precision=fp16")
    as_cpu = with_hardware(saved, tmp_path, "cpu")
    assert as_cpu.hardware.name == "cpu" and as_cpu.model == saved.model
    assert choose_placement(as_cpu, True, cuda_available=True) == ON_CPU
    as_gpu = with_hardware(run_with("hardware=cpu"), tmp_path, "gpu")
    with pytest.raises(UserError, match="--hardware gpu: this machine has no CUDA GPU"):
        choose_placement(as_gpu, True, cuda_available=False)
    assert choose_placement(as_gpu, True, cuda_available=True).device == "cuda"
    assert choose_placement(saved, True, cuda_available=True) == Placement("cuda", "fp16", {})
    with pytest.raises(UserError, match="--hardware tpu: no such hardware preset; choose one of"):
        with_hardware(saved, tmp_path, "tpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_files, one_torch_thread) -> Path:
    """A one-step run of the toy classifier, trained on CPU."""
    from tests.helpers import train_recipe

    root = tmp_path_factory.mktemp("inference")
    args = toy_cls_overrides(toy_files, "train.max_steps=1", "hardware=cpu")
    return train_recipe(TOY_CLS_RECIPE, *args, output_root=root)


def test_eval_and_predict_say_where_they_run(trained, tmp_path, capsys):
    from framework.cli.app import main
    from tests.helpers import cuda_available

    assert main(["eval", str(trained), "--hardware", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert f"ft eval {trained}: on cpu, mixed precision no" in err
    assert "accuracy" in json.loads(out.splitlines()[-1])
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "the film was great"}])
    assert main(["predict", str(trained), "--input", str(rows)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["text"] == "the film was great"
    if not cuda_available():  # the GPU test below checks the default on a GPU
        assert f"ft predict {trained}: on cpu, mixed precision no" in err
        assert main(["eval", str(trained), "--hardware", "gpu"]) == 2
        err = capsys.readouterr().err
        assert "error: --hardware gpu: this machine has no CUDA GPU" in err
        assert "Traceback" not in err


@pytest.mark.gpu
def test_eval_and_predict_run_on_the_gpu_and_agree_with_cpu(trained, tmp_path):
    """In fresh processes, as a user runs them (this one may hold Accelerate on CPU)."""
    on_gpu = ft_cli("eval", str(trained))
    on_cpu = ft_cli("eval", str(trained), "--hardware", "cpu")
    assert on_gpu.returncode == 0 and on_cpu.returncode == 0, on_gpu.stderr[-2000:]
    assert f"ft eval {trained}: on cuda, mixed precision no" in on_gpu.stderr
    gpu, cpu = (json.loads(r.stdout.splitlines()[-1]) for r in (on_gpu, on_cpu))
    assert gpu["eval_loss"] == pytest.approx(cpu["eval_loss"], abs=1e-4)
    assert gpu["accuracy"] == cpu["accuracy"]
    bf16 = ft_cli("eval", str(trained), "--hardware", "gpu")
    assert bf16.returncode == 0, bf16.stderr[-2000:]
    assert "on cuda, mixed precision" in bf16.stderr
    assert json.loads(bf16.stdout.splitlines()[-1])["eval_loss"] == pytest.approx(
        cpu["eval_loss"], abs=2e-2
    )
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "the film was great"}])
    predicted = ft_cli("predict", str(trained), "--input", str(rows))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert f"ft predict {trained}: on cuda" in predicted.stderr
