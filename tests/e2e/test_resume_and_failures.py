"""Reliability: exact resume after SIGKILL (bit-identical adapter), SIGTERM checkpoints, atomic
checkpoints (partial ones skipped), non-finite losses, full disks, changed configs on resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO, metrics, toy_sentiment_files

RECIPE = "seq_cls_tiny_bert_lora"


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability-data")
    return toy_sentiment_files(tmp, 64, 16)


def overrides(files, run_dir: Path, *extra: str):
    # LoRA dropout stays on (0.1) so that the RNG stream matters for exactness.
    return [
        "data=files",
        f"+data.source.train={files['train']}",
        f"data.source.validation={files['validation']}",
        f"run_dir={run_dir}",
        "train.lr=3e-3",
        "peft.dropout=0.1",
        "data.max_length=16",
        "train.log_every=1",
        *extra,
    ]


def start(args, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "framework", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def run(args, timeout=300):
    proc = start(args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(predicate, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def checkpoint_events(run_dir: Path):
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return [r for r in rows if r.get("event") == "checkpoint"]


def adapter_tensors(run_dir: Path):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_bit_identical(a: Path, b: Path):
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{key} differs after resume"


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, extra, kill_after_step, steps_per_epoch",
    [
        # 64 examples / batch 8 = 8 optimizer steps per epoch.
        # No checkpoint step of these two cases is a multiple of 8: every kill lands mid-epoch.
        ("mid-epoch", ["train.max_steps=22", "train.save_every=3", "train.eval_every=5"], 3, 8),
        ("between epochs", ["train.epochs=5", "train.save_every=8"], 8, 8),
        # 64 / batch 4 = 16 micro-batches = 8 steps of 2 per epoch.
        (
            "with gradient accumulation",
            [
                "train.max_steps=24",
                "train.grad_accum=2",
                "train.batch_size=4",
                "train.save_every=5",
            ],
            5,
            8,
        ),
    ],
)
def test_sigkill_then_resume_is_bit_identical(
    case, extra, kill_after_step, steps_per_epoch, data_files, tmp_path
):
    reference = tmp_path / "reference"
    code, _, err = run(["train", RECIPE, *overrides(data_files, reference, *extra)])
    assert code == 0, err

    killed = tmp_path / "killed"
    proc = start(["train", RECIPE, *overrides(data_files, killed, *extra)])
    seen = wait_for(
        lambda: any(e["step"] >= kill_after_step for e in checkpoint_events(killed)), proc
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert seen, "the run ended before a checkpoint was written"
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    from framework.store.checkpoint import latest_checkpoint, read_trainer_state

    checkpoint = latest_checkpoint(killed)
    state = read_trainer_state(checkpoint)
    resumed_step = state["step"]
    assert resumed_step >= kill_after_step
    # Where the kill landed: inside an epoch (batches of it consumed, more to come), or at its end.
    micro_per_step = 2 if case == "with gradient accumulation" else 1
    at_epoch_end = resumed_step % steps_per_epoch == 0
    assert (
        state["batch_in_epoch"]
        == (resumed_step % steps_per_epoch or steps_per_epoch) * micro_per_step
    )
    assert at_epoch_end == (case == "between epochs"), (case, state)
    records_before = len((killed / "metrics.jsonl").read_text().splitlines())

    code, _, err = run(["train", RECIPE, *overrides(data_files, killed, *extra), "resume=auto"])
    assert code == 0, err
    assert_bit_identical(reference, killed)
    # The resumed process continued from that checkpoint, not from step 0: it says so, and the
    # first step it trained is the one after the checkpoint.
    assert f"resumed from {checkpoint} at step {resumed_step}" in err, err
    assert (killed / "config.resume-1.yaml").exists()
    appended = [
        json.loads(line)
        for line in (killed / "metrics.jsonl").read_text().splitlines()[records_before:]
    ]
    first_train = next(r for r in appended if r.get("split") == "train")
    assert first_train["step"] == resumed_step + 1, first_train


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_writes_a_checkpoint_and_exits_nonzero(sig, data_files, tmp_path):
    run_dir = tmp_path / "run"
    proc = start(["train", RECIPE, *overrides(data_files, run_dir, "train.max_steps=100000")])
    assert wait_for(
        lambda: (
            len(metrics(run_dir, "train")) >= 2 if (run_dir / "metrics.jsonl").exists() else False
        ),
        proc,
    )
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err  # 143 for SIGTERM, 130 for SIGINT
    assert f"{sig.name} received" in err and "checkpoint saved in" in err and "Traceback" not in err
    # The hint is a command that continues this run as it was (its saved config; no overrides).
    assert f"Resume with: ft train {RECIPE} resume=auto run_dir={run_dir.resolve()}" in err, err
    from framework.store.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    assert latest is not None and (latest / "COMPLETE").exists()
    assert (latest / "model.safetensors").exists() or list(latest.glob("*.safetensors"))


def test_second_sigint_aborts_at_once():
    """The first Ctrl-C only asks for a checkpoint at the next step boundary; the second raises
    KeyboardInterrupt right away (the CLI turns it into "aborted", exit 130)."""
    from framework.training.signals import StopSignals

    previous = signal.getsignal(signal.SIGINT)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # let the handler run
        assert signals.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored after training


def test_time_based_checkpoints(data_files, tmp_path):
    """train.save_every_minutes checkpoints by wall time, with no step interval set."""
    run_dir = tmp_path / "run"
    extra = ["train.max_steps=6", "train.save_every_minutes=0.0001", "train.keep_last=10"]
    code, _, err = run(["train", RECIPE, *overrides(data_files, run_dir, *extra)])
    assert code == 0, err
    from framework.store.checkpoint import complete_checkpoints

    saved = [int(p.name.split("-")[1]) for p in complete_checkpoints(run_dir)]
    assert len(saved) >= 3 and saved == sorted(saved), saved  # 6 ms interval: about every step


def test_partial_checkpoint_is_never_chosen(tmp_path):
    from framework.store.checkpoint import (
        COMPLETE_MARKER,
        find_resume_checkpoint,
        latest_checkpoint,
    )

    folder = tmp_path / "checkpoints"
    for step, complete in ((10, True), (20, True), (30, False)):
        ckpt = folder / f"checkpoint-{step:08d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
        if complete:
            (ckpt / COMPLETE_MARKER).write_text(str(step))
    (folder / ".tmp-checkpoint-00000040").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000020"
    assert find_resume_checkpoint("auto", tmp_path).name == "checkpoint-00000020"
    from framework.core.errors import UserError

    with pytest.raises(UserError, match="not a complete ft checkpoint"):
        find_resume_checkpoint(str(folder / "checkpoint-00000030"), tmp_path)


@pytest.mark.slow
def test_adalora_resume_mid_allocation_is_bit_identical(data_files, tmp_path):
    """AdaLoRA's importance averages and rank pattern live outside the model's state dict: the
    checkpoint must carry them, or a resumed run prunes different ranks than an uninterrupted one."""
    run_dir = tmp_path / "run"
    # 20 steps: full rank to step 2 (tinit), ranks pruned at every step to 16, then frozen.
    extra = [
        "peft=adalora",
        "train.max_steps=20",
        "train.save_every=5",
        "train.keep_last=5",
        "peft.dropout=0.1",
    ]
    code, _, err = run(["train", RECIPE, *overrides(data_files, run_dir, *extra)])
    assert code == 0, err
    reference = adapter_tensors(run_dir)
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["rank_pattern"]
    for later in ("checkpoint-00000015", "checkpoint-00000020"):  # resume from step 10
        (run_dir / "checkpoints" / later / "COMPLETE").unlink()
    (run_dir / "adapter" / "adapter_model.safetensors").unlink()
    code, _, err = run(["train", RECIPE, *overrides(data_files, run_dir, *extra), "resume=auto"])
    assert code == 0, err
    assert "checkpoint-00000010" in err
    resumed = adapter_tensors(run_dir)
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


@pytest.mark.slow
def test_resume_skips_partial_newest_checkpoint_end_to_end(data_files, tmp_path):
    run_dir = tmp_path / "run"
    extra = ["train.max_steps=12", "train.save_every=4", "train.keep_last=5"]
    code, _, err = run(["train", RECIPE, *overrides(data_files, run_dir, *extra)])
    assert code == 0, err
    reference = adapter_tensors(run_dir)
    # Simulate a crash in the middle of writing checkpoint 12: drop its completion marker,
    # and corrupt its weights. Resume must use checkpoint 8 and reproduce the same result.
    newest = run_dir / "checkpoints" / "checkpoint-00000012"
    (newest / "COMPLETE").unlink()
    for weights in newest.glob("*.safetensors"):
        weights.write_bytes(b"garbage")
    (run_dir / "adapter" / "adapter_model.safetensors").unlink()
    code, _, err = run(["train", RECIPE, *overrides(data_files, run_dir, *extra), "resume=auto"])
    assert code == 0, err
    assert "checkpoint-00000008" in err
    resumed = adapter_tensors(run_dir)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_rotation_keeps_last_k_and_never_the_only_complete(tmp_path):
    from framework.store.checkpoint import COMPLETE_MARKER, _rotate, complete_checkpoints

    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        (folder / f"checkpoint-{step:08d}").mkdir(parents=True)
        (folder / f"checkpoint-{step:08d}" / COMPLETE_MARKER).write_text("x")
    (folder / "checkpoint-00000005").mkdir()  # incomplete: never counted, never chosen
    _rotate(tmp_path, keep_last=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == [
        "checkpoint-00000003",
        "checkpoint-00000004",
    ]
    _rotate(tmp_path, keep_last=0)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-00000004"]


@pytest.mark.slow
def test_resume_with_changed_config_fails_before_training(data_files, tmp_path):
    run_dir = tmp_path / "run"
    extra = ["train.max_steps=4", "train.save_every=2"]
    code, _, err = run(["train", RECIPE, *overrides(data_files, run_dir, *extra)])
    assert code == 0, err
    before = sorted(p.name for p in run_dir.rglob("*"))
    code, _, err = run(
        [
            "train",
            RECIPE,
            *overrides(data_files, run_dir, *extra),
            "resume=auto",
            "peft.r=4",
            "train.batch_size=4",
        ]
    )
    assert code == 2, err
    assert "the config changed" in err and "peft" in err and "train.batch_size" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in run_dir.rglob("*")) == before, "a refused resume wrote files"


@pytest.mark.slow
@pytest.mark.parametrize("policy, expected_code", [("stop", 3), ("skip", 0)])
def test_non_finite_loss_policy(policy, expected_code, data_files, tmp_path):
    run_dir = tmp_path / policy
    # An absurd learning rate blows the weights up after the first step; later losses are inf/nan.
    code, _, err = run(
        [
            "train",
            RECIPE,
            *overrides(
                data_files,
                run_dir,
                "train.max_steps=6",
                "train.lr=1e30",
                "train.max_grad_norm=null",
                f"train.nan_policy={policy}",
            ),
        ]
    )
    assert code == expected_code, err
    events = [r for r in metrics(run_dir) if r.get("event") == "non_finite_loss"]
    assert events, "no non-finite step was detected"
    from framework.store.checkpoint import latest_checkpoint

    if policy == "stop":
        assert "last good state is saved" in err
        weights = [load_file(str(p)) for p in latest_checkpoint(run_dir).glob("*.safetensors")]
    else:
        weights = [adapter_tensors(run_dir)]
    for tensors in weights:
        for name, tensor in tensors.items():
            assert torch.isfinite(tensor).all(), f"{name} was corrupted by a non-finite step"


def test_failed_save_keeps_last_good_checkpoint(data_files, tmp_path, monkeypatch):
    """A disk-full error while saving: the partial checkpoint is removed, the previous one kept,
    and the run stops with a clear message and a non-zero exit code."""
    import accelerate

    from framework.cli.app import main

    real_save = accelerate.Accelerator.save_state
    calls = {"n": 0}

    def flaky_save(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(output_dir, "half-written.bin").write_bytes(b"x")
            raise OSError(28, "No space left on device")
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", flaky_save)
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            RECIPE,
            *overrides(data_files, run_dir, "train.max_steps=6", "train.save_every=2"),
        ]
    )
    assert code == 1
    from framework.store.checkpoint import complete_checkpoints

    assert [p.name for p in complete_checkpoints(run_dir)] == ["checkpoint-00000002"]
    assert not list((run_dir / "checkpoints").glob(".tmp-*")), "partial checkpoint left behind"


@pytest.fixture(scope="module")
def six_step_reference(data_files, tmp_path_factory):
    """The adapter of an uninterrupted 6-step run (checkpoints every 2 steps)."""
    from framework.cli.app import main

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    args = overrides(data_files, run_dir, "train.max_steps=6", "train.save_every=2")
    assert main(["train", RECIPE, *args]) == 0
    return run_dir


def fill_disk_at(monkeypatch, where: str, step: int) -> None:
    """Make the disk "fill" while checkpoint `step` is written: the write puts half its bytes
    down, then fails with ENOSPC, as a full disk does. `where`: in the training state that
    Accelerate writes (torch.save of the optimizer), or in ft's COMPLETE record written last."""
    import errno
    import pathlib

    folder = f"checkpoint-{step:08d}"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "optimizer state":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if folder in str(f):
                Path(f).write_bytes(b"\0" * 100)
                raise full
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    else:
        real_write = pathlib.Path.write_text

        def write_text(self, data, *args, **kwargs):
            if "COMPLETE" in self.name and folder in str(self.parent):
                real_write(self, data[: len(data) // 2], *args, **kwargs)
                raise full
            return real_write(self, data, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)


@pytest.mark.parametrize("where", ["optimizer state", "COMPLETE marker"])
def test_disk_full_during_a_checkpoint_write(
    where, data_files, six_step_reference, tmp_path, monkeypatch, capsys
):
    """ENOSPC while checkpoint 4 is written: exit non-zero with one line naming the checkpoint
    and the space it needs; the partial checkpoint is never selected, checkpoint 2 stays, loads,
    and resuming from it ends bit-identical to a run that never failed."""
    from framework.cli.app import main
    from framework.store.checkpoint import checkpoint_problem, complete_checkpoints

    run_dir = tmp_path / "run"
    args = overrides(data_files, run_dir, "train.max_steps=6", "train.save_every=2")
    with monkeypatch.context() as patches:
        fill_disk_at(patches, where, step=4)
        code = main(["train", RECIPE, *args])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith(("stopped:", "error:"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    kept = run_dir / "checkpoints" / "checkpoint-00000002"
    for fragment in (
        str(run_dir / "checkpoints" / "checkpoint-00000004"),
        "No space left on device",
        "MiB free",
        "needs about",
        f"{kept} is kept",
        "resume=auto",
    ):
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert complete_checkpoints(run_dir) == [kept], "a partial checkpoint could be selected"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [kept.name]
    assert checkpoint_problem(kept) is None
    assert main(["train", RECIPE, *args, "resume=auto"]) == 0
    assert f"resumed from {kept} at step 2" in capsys.readouterr().err
    assert_bit_identical(run_dir, six_step_reference)


def test_free_space_is_checked_before_training(data_files, tmp_path, monkeypatch, capsys):
    import shutil as shutil_module

    from framework.cli.app import main

    real = shutil_module.disk_usage
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: real(p)._replace(free=1024))
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            RECIPE,
            *overrides(data_files, run_dir, "train.max_steps=4", "train.save_every=2"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "train.save_every=2" in err and "MiB free" in err
    assert not (run_dir / "checkpoints").exists()
