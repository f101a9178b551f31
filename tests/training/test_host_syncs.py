"""Where the step loop waits: fused SGD skips a non-finite step on the device like AdamW, and a
multi-process step loop issues no collective between settle steps besides the loss normaliser's
device-side one (counted in a real 2-process DDP run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import REPO, metrics


def sgd_train(fused_optimizer: bool = True):
    return SimpleNamespace(lr=0.1, weight_decay=0.0, fused_optimizer=fused_optimizer)


def test_fused_sgd_skips_a_non_finite_first_step_on_the_device_then_matches_plain_sgd():
    """The first update non-finite (found_inf set by the guard): nothing changes, the momentum
    buffer stays zero (torch's kernel would leave it uninitialised), and the next steps follow
    unfused SGD's first steps (within float rounding)."""
    from framework.training.optim import build_sgd

    fused_param = torch.nn.Parameter(torch.linspace(-1, 1, 6))
    plain_param = torch.nn.Parameter(fused_param.detach().clone())
    fused = build_sgd([{"params": [fused_param]}], sgd_train())
    plain = build_sgd([{"params": [plain_param]}], sgd_train(fused_optimizer=False))
    assert fused.defaults["fused"] and fused._step_supports_amp_scaling
    before = fused_param.detach().clone()
    fused_param.grad = torch.full_like(fused_param, float("nan"))
    fused.grad_scale, fused.found_inf = None, torch.ones(())
    fused.step()
    assert torch.equal(fused_param.detach(), before)
    assert torch.equal(fused.state[fused_param]["momentum_buffer"], torch.zeros(6))
    fused.found_inf = torch.zeros(())
    for scale in (1.0, -0.5, 2.0):
        grad = torch.arange(6, dtype=torch.float32) * scale
        fused_param.grad, plain_param.grad = grad.clone(), grad.clone()
        fused.step()
        plain.step()
        # Fused and foreach kernels round differently in the last bit.
        assert torch.allclose(fused_param.detach(), plain_param.detach(), rtol=0, atol=1e-6)


def test_the_update_guard_skips_sgd_steps_on_the_device():
    """train.optimizer=sgd takes the guard's on-device path: no host read per step; the skipped
    count comes back at settle."""
    from accelerate import Accelerator

    from framework.training.optim import build_sgd
    from framework.training.steps import UpdateGuard

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    optimizer = accelerator.prepare(build_sgd([{"params": list(model.parameters())}], sgd_train()))
    guard = UpdateGuard(
        accelerator,
        optimizer,
        SimpleNamespace(reads_gradients=False),
        SimpleNamespace(max_grad_norm=1.0, nan_policy="skip"),
    )
    assert guard.on_device
    weight = model.weight.detach().clone()
    model(torch.tensor([[float("inf"), 1.0, 1.0]])).sum().backward()
    assert guard.update(model, step=0) is None  # only the device knows
    assert torch.equal(model.weight.detach(), weight)
    assert guard.settle() == (1, 1)


# Runs at the start of each rank: records every torch.distributed collective with the ft
# function that issued it and the optimizer step it was issued in (one JSON line per call).
COUNT_COLLECTIVES = """
import json, os, sys
import torch.distributed as dist

LOG = os.environ["FT_TEST_COLLECTIVES"] + "." + os.environ.get("RANK", "0")

def where():
    # (the ft function issuing the call, the step loop's position.step then, or None outside it)
    caller, step, frame = None, None, sys._getframe(2)
    while frame is not None:
        if caller is None and "/framework/" in frame.f_code.co_filename:
            caller = frame.f_code.co_name
        if frame.f_code.co_name == "run_steps" and "position" in frame.f_locals:
            step = frame.f_locals["position"].step
        frame = frame.f_back
    return caller, step

def wrap(name):
    real = getattr(dist, name)
    def counted(*args, **kwargs):
        caller, step = where()
        with open(LOG, "a") as out:
            out.write(json.dumps({"op": name, "caller": caller, "step": step}) + "\\n")
        return real(*args, **kwargs)
    setattr(dist, name, counted)

for name in ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier",
             "reduce_scatter_tensor", "all_gather_object", "broadcast_object_list"):
    wrap(name)
"""


@pytest.mark.slow
def test_multiprocess_step_loop_has_no_collective_between_settle_steps(tmp_path):
    """2 DDP processes on CPU, 8 steps, a log every 4: the stop/timed-save agreement (any_rank)
    runs at steps 4 and 8 only; between settle steps the only collective is the loss
    normaliser's all-reduce of the step's item count (loss_scale), whose result stays on the
    device. DDP's gradient all-reduce runs in C++ (its reducer), not through these functions."""
    import socket

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(COUNT_COLLECTIVES)
    log = tmp_path / "collectives"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=f"{site}:{REPO}", FT_TEST_COLLECTIVES=str(log))
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "framework",
            "train",
            "seq_cls_tiny_bert_lora",
            "hardware=ddp",
            "hardware.device=cpu",
            "hardware.num_processes=2",
            f"hardware.main_process_port={port}",
            "train.max_steps=8",
            "train.log_every=4",
            "train.batch_size=4",
            "data.max_train_examples=64",
            "data.max_eval_examples=8",
            f"run_dir={run_dir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in metrics(run_dir, "train")] == [4, 8]
    for rank in (0, 1):
        calls = [json.loads(line) for line in Path(f"{log}.{rank}").read_text().splitlines()]
        # In the step loop; "step" is position.step then: N after step N's update, N - 1 while
        # step N's micro-batches run.
        loop = [c for c in calls if c["step"] is not None]
        agreements = [c["step"] for c in loop if c["caller"] == "any_rank"]
        assert agreements == [4, 8], agreements
        normaliser = [c["step"] for c in loop if c["caller"] == "loss_scale"]
        assert normaliser == list(range(8)), normaliser  # one per step, before its backward
        between = [c for c in loop if c["caller"] != "loss_scale" and c["step"] not in (4, 8)]
        assert between == [], between
        assert {c["caller"] for c in loop if c["step"] in (4, 8)} >= {"any_rank", "flush"}
