"""bench/gpu.sh --smoke: issue 14's GPU benchmark, both routes (HF Trainer + PEFT, then ft train)
on a tiny Llama-shape model on CPU, a few steps. Proves the script runs end to end without a GPU
and that both routes train the same rows and report what the real run reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_bench_smoke(tmp_path):
    out = tmp_path / "gpu_smoke.json"
    done = subprocess.run(
        [str(REPO / "bench" / "gpu.sh"), "--smoke", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| HF Trainer + PEFT, padding per batch | CPU (smoke) |" in done.stdout
    assert "| ft train | CPU (smoke) |" in done.stdout
    assert "ratio ft / HF:" in done.stdout
    report = json.loads(out.read_text())
    hf, ft = report["results"]["hf"], report["results"]["ft"]
    # 2 timed steps of 4 rows, lengths in [16, 64]: both routes counted real tokens of 8 rows.
    for route in (hf, ft):
        assert 8 * 16 <= route["tokens"] <= 8 * 64 and route["tokens_per_s"] > 0
    # Same rows, same init, same seed and schedule: the routes' losses agree (no speed option
    # changes the loss; the smoke model's dropout is 0).
    assert abs(hf["loss_at_end"] - ft["loss_at_end"]) < 0.05, (hf, ft)
