"""bench/data_scale.py on a 300-row file, one round: every route runs in its own process, ft and
the plain datasets.map tokenize the same rows into the same columns, the cold run misses and the
last run hits, and the table and JSON hold what the README's table shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_data_scale_bench_smoke(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BENCH_ROWS": "300",
        "BENCH_ROUNDS": "1",
        "BENCH_NUM_PROC": "1",
        "BENCH_DATA": str(tmp_path / "data"),
        "BENCH_OUT": str(tmp_path / "out"),
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "data_scale.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| 300 |" in done.stdout
    report = json.loads((tmp_path / "out" / "data_scale.json").read_text())
    (result,) = report["results"]
    assert result["rows_tokenized"] == 300 + 1_000  # the train file and the validation file
    cold, hit, (peer,), (ft,) = (
        result["cold"],
        result["hit"],
        result["peer_rounds"],
        result["ft_rounds"],
    )
    assert not cold["hit"] and not ft["hit"] and hit["hit"]
    assert (
        cold["columns"]
        == peer["columns"]
        == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    )
    assert result["ft_rows_per_s"] > 0 and result["peer_rows_per_s"] > 0
    assert all(r["peak_rss_mib"] > 0 and r["anon_mib"] > 0 for r in (cold, hit, peer, ft))
    rows = [json.loads(line) for line in (tmp_path / "data" / "train_300_v1.jsonl").open()]
    assert len(rows) == 300 and {r["label"] for r in rows} == {"negative", "neutral", "positive"}
