"""Run directories users can trust: a folder that is not an ft run is never written into (unless
the user opts in, and then nothing of theirs is overwritten); `overwrite=true` starts from
nothing, with the earlier run moved aside (or deleted) in one rename, so that no checkpoint,
metric, curve or adapter of it is read as the new run's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from framework.cli.app import main
from tests.helpers import TOY_CLS_RECIPE, toy_cls_overrides


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry below folder (directories too) -> (its bytes, its mtime in ns)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        data = path.read_bytes() if path.is_file() else b"<dir>"
        found[str(path.relative_to(folder))] = (data, path.stat().st_mtime_ns)
    return found


def inodes(folder: Path) -> dict[int, str]:
    return {p.stat().st_ino: str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def train(capsys, files, run_dir: Path, *extra: str) -> tuple[int, str]:
    code = main(["train", TOY_CLS_RECIPE, *toy_cls_overrides(files, f"run_dir={run_dir}", *extra)])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A user's own folder: notes, their own metrics.jsonl, a sub-folder."""
    folder = tmp_path / "my_project"
    (folder / "data").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "metrics.jsonl").write_text('{"mine": 1}\n')
    (folder / "data" / "raw.bin").write_bytes(bytes(range(256)))
    return folder


@pytest.mark.parametrize("extra", [[], ["overwrite=true"]], ids=["plain", "overwrite"])
def test_a_folder_that_is_not_a_run_is_refused_and_left_byte_identical(
    user_folder, toy_files, capsys, extra, one_torch_thread
):
    before = snapshot(user_folder)
    code, err = train(capsys, toy_files, user_folder, "train.max_steps=1", *extra)
    assert code == 2, err
    line = one_error_line(err)
    # What is there, and both ways out: another run_dir, or the explicit opt-in.
    for fragment in (f"run_dir='{user_folder}'", "not an ft run", "notes.txt", "metrics.jsonl"):
        assert fragment in line, line
    assert "another run_dir" in line and "allow_nonempty_run_dir=true" in line, line
    assert snapshot(user_folder) == before, "the refused run wrote into the user's folder"
    assert [p.name for p in user_folder.parent.iterdir()] == ["my_project"]


def test_opting_in_writes_the_run_beside_the_users_files_never_over_them(
    user_folder, toy_files, capsys, one_torch_thread
):
    # The user's metrics.jsonl has the name of ft's metrics log: refused even with the opt-in.
    before = snapshot(user_folder)
    code, err = train(
        capsys, toy_files, user_folder, "train.max_steps=1", "allow_nonempty_run_dir=true"
    )
    assert code == 2, err
    line = one_error_line(err)
    assert "metrics.jsonl" in line and "notes.txt" not in line, line
    assert snapshot(user_folder) == before
    # Without that file, the run is written beside the user's own files, which stay as they were.
    (user_folder / "metrics.jsonl").unlink()
    before = snapshot(user_folder)
    code, err = train(
        capsys, toy_files, user_folder, "train.max_steps=1", "allow_nonempty_run_dir=true"
    )
    assert code == 0, err
    after = snapshot(user_folder)
    assert {k: v for k, v in after.items() if k in before} == before
    assert (user_folder / "summary.json").is_file() and (user_folder / "adapter").is_dir()


def test_an_empty_folder_or_a_new_path_is_used_and_a_file_is_refused(
    tmp_path, toy_files, capsys, one_torch_thread
):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(capsys, toy_files, empty, "train.max_steps=1")[0] == 0
    assert (empty / "summary.json").is_file()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, err = train(capsys, toy_files, a_file, "train.max_steps=1")
    assert code == 2 and "not a directory" in one_error_line(err)
    assert a_file.read_text() == "x"


def test_overwrite_starts_from_nothing_and_moves_the_earlier_run_aside(
    tmp_path, toy_files, capsys, one_torch_thread
):
    run_dir = tmp_path / "run"
    first = ["train.max_steps=4", "train.save_every=2", "train.eval_every=2", "train.keep_last=5"]
    assert train(capsys, toy_files, run_dir, *first)[0] == 0
    assert (run_dir / "checkpoints" / "checkpoint-00000004").is_dir()
    earlier = snapshot(run_dir)
    earlier_inodes = inodes(run_dir)

    code, err = train(capsys, toy_files, run_dir, "train.max_steps=1", "overwrite=true")
    assert code == 0, err
    # No file of the earlier run is readable in run_dir: every file there is a new one ...
    reused = {name for ino, name in inodes(run_dir).items() if ino in earlier_inodes}
    assert not reused, f"files of the earlier run still in {run_dir}: {reused}"
    assert not (run_dir / "checkpoints").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {1}, "metrics of the earlier run were kept"
    # ... and the earlier run is whole, byte for byte, beside it; the log says where it went.
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert {k: v[0] for k, v in snapshot(aside).items()} == {k: v[0] for k, v in earlier.items()}
    log = (run_dir / "train.log").read_text()
    assert f"overwrite=true: moved the earlier run in {run_dir} to {aside}" in log, log
    # resume=auto there finds no checkpoint of the earlier run.
    code, err = train(capsys, toy_files, run_dir, "resume=auto")
    assert code == 2 and "no complete checkpoint" in one_error_line(err)


def test_overwrite_can_delete_the_earlier_run_and_then_keeps_nothing_of_it(
    tmp_path, toy_files, capsys, one_torch_thread
):
    run_dir = tmp_path / "run"
    assert train(capsys, toy_files, run_dir, "train.max_steps=2", "train.save_every=1")[0] == 0
    code, err = train(
        capsys,
        toy_files,
        run_dir,
        "train.max_steps=1",
        "overwrite=true",
        "overwrite_old_run=delete",
    )
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "nothing left aside"
    assert not (run_dir / "checkpoints").exists()
    assert (
        f"overwrite=true: deleted the earlier run in {run_dir}"
        in (run_dir / "train.log").read_text()
    )


def test_delete_refuses_a_run_dir_that_also_holds_the_users_files(
    tmp_path, toy_files, capsys, one_torch_thread
):
    run_dir = tmp_path / "run"
    assert train(capsys, toy_files, run_dir, "train.max_steps=1")[0] == 0
    (run_dir / "my_analysis.ipynb").write_text("{}")
    before = snapshot(run_dir)
    code, err = train(
        capsys,
        toy_files,
        run_dir,
        "overwrite=true",
        "overwrite_old_run=delete",
        "train.max_steps=1",
    )
    assert code == 2, err
    line = one_error_line(err)
    assert "my_analysis.ipynb" in line and "overwrite_old_run=move" in line, line
    assert snapshot(run_dir) == before


def test_an_overwrite_that_fails_before_training_puts_the_earlier_run_back(
    tmp_path, toy_files, capsys, one_torch_thread
):
    run_dir = tmp_path / "run"
    assert train(capsys, toy_files, run_dir, "train.max_steps=1")[0] == 0
    before = snapshot(run_dir)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    files = {**toy_files, "train": empty}
    code, err = train(capsys, files, run_dir, "train.max_steps=1", "overwrite=true")
    assert code == 2 and "is empty" in one_error_line(err)
    assert {k: v[0] for k, v in snapshot(run_dir).items()} == {k: v[0] for k, v in before.items()}
    assert not [p for p in tmp_path.iterdir() if ".replaced-" in p.name]


def test_create_run_dir_unit_cases(tmp_path):
    """The decisions themselves, without training."""
    from framework.core.errors import UserError
    from framework.store.run_dir import create_run_dir, is_run_dir

    hydra_job = tmp_path / "sweep" / "0"
    (hydra_job / ".hydra").mkdir(parents=True)
    with pytest.raises(UserError, match="not an ft run"):
        create_run_dir(str(tmp_path), "r", str(hydra_job), overwrite=False)
    assert (
        create_run_dir(
            str(tmp_path), "r", str(hydra_job), overwrite=False, allow_nonempty=True
        ).path
        == hydra_job.resolve()
    )
    # config.yaml alone (a user's own) is not an ft run: ft's provenance goes with it.
    lookalike = tmp_path / "lookalike"
    lookalike.mkdir()
    (lookalike / "config.yaml").write_text("a: 1\n")
    assert not is_run_dir(lookalike)
    with pytest.raises(UserError, match="config.yaml"):
        create_run_dir(str(tmp_path), "r", str(lookalike), overwrite=True)
    assert os.listdir(lookalike) == ["config.yaml"]


def test_a_machine_of_rank_above_0_joins_the_run_machine_0_made(tmp_path):
    """Multi-node: every machine runs the same `ft train ... run_dir=SHARED`; machine 0 creates
    the run, a machine of rank > 0 joins it (nothing is refused, moved or deleted)."""
    from framework.config.path import load_run
    from framework.run.execute import prepare_run_dir

    shared = tmp_path / "shared"
    common = [
        f"run_dir={shared}",
        "hardware=ddp",
        "hardware.device=cpu",
        "hardware.num_machines=2",
        "train.max_steps=1",
    ]
    first = load_run(TOY_CLS_RECIPE, [*common, "hardware.machine_rank=0"])
    second = load_run(TOY_CLS_RECIPE, [*common, "hardware.machine_rank=1", "overwrite=true"])
    assert not first.plugins.profile.joins_run_dir(first.hardware)
    assert second.plugins.profile.joins_run_dir(second.hardware)
    made = prepare_run_dir(first)
    joined = prepare_run_dir(second)
    assert joined.run_dir == made.run_dir == shared.resolve()
    assert joined.created.note.startswith("joined the run in")
    assert [p.name for p in tmp_path.iterdir()] == ["shared"], "the run was moved aside"
