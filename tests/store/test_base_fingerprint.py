"""The base fingerprint a checkpoint records (store/checkpoint.py): cheap, and it changes when the
base's weights, shapes or config change, also for a file large enough to be sampled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from framework.core.errors import UserError
from framework.store import checkpoint as module
from framework.store.checkpoint import BASE_FILE, base_fingerprint, base_problem, check_base


def write_base(folder: Path, weight: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"layer.weight": weight, "layer.bias": torch.zeros(4)}, str(folder / "model.safetensors")
    )
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4}))
    return folder


def test_a_changed_value_shape_or_config_changes_the_fingerprint(tmp_path):
    weight = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    base = base_fingerprint(str(write_base(tmp_path / "a", weight)))
    assert base == base_fingerprint(str(write_base(tmp_path / "same", weight.clone())))
    changed = weight.clone()
    changed[3, 3] += 1
    other = base_fingerprint(str(write_base(tmp_path / "value", changed)))
    assert base_problem(base, other) == "model.safetensors changed (content differ)"
    reshaped = base_fingerprint(str(write_base(tmp_path / "shape", weight.reshape(2, 8))))
    assert "tensor names, dtypes or shapes" in base_problem(base, reshaped)
    (tmp_path / "same" / "config.json").write_text(json.dumps({"hidden_size": 8}))
    assert base_problem(base, base_fingerprint(str(tmp_path / "same"))) == (
        "config.json changed (sha256 differ)"
    )


def test_a_large_file_is_sampled_and_a_change_in_a_sampled_block_is_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(module, "HASH_WHOLE_BYTES", 1024)  # every test file counts as large
    monkeypatch.setattr(module, "SAMPLE_BYTES", 256)
    weight = torch.zeros(64, 64)
    base = base_fingerprint(str(write_base(tmp_path / "a", weight)))
    assert base["files"]["model.safetensors"]["content"].startswith("sampled:")
    changed = weight.clone()
    changed[-1, -1] = 1.0  # the file's last bytes: always inside the last sampled block
    assert base_problem(base, base_fingerprint(str(write_base(tmp_path / "b", changed))))


def test_check_base_names_the_change_and_passes_older_checkpoints(tmp_path):
    base = base_fingerprint(str(write_base(tmp_path / "base", torch.ones(4, 4))))
    saved = tmp_path / "checkpoint-00000004"
    saved.mkdir()
    check_base(saved, base, "my/base")  # no record (an older ft): nothing to check
    (saved / BASE_FILE).write_text(json.dumps(base))
    check_base(saved, base, "my/base")
    other = base_fingerprint(str(write_base(tmp_path / "other", torch.zeros(4, 4))))
    with pytest.raises(UserError, match=r"model.checkpoint=my/base is not the base "):
        check_base(saved, other, "my/base")
