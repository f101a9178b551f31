"""bench/gpu.sh --smoke: the GPU script (HF Trainer + PEFT, TRL padding-free, ft, ft compiled, then
the GPU checks) on a tiny Llama-shape model on CPU, a few steps. Proves the script runs end to
end without a GPU, that every route trains the same rows and reports what the real run reports,
that the wheels script names exactly the packages the GPU image lacks, and that gpu.sh runs the
image's python3 unless told otherwise."""

from __future__ import annotations

import json
import os
import re
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
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    for route in ("hf_plain", "trl", "ft", "ft_compiled"):
        assert results[route]["ok"], (route, results[route])
        assert f"| {route} |" in done.stdout
    # Liger is CUDA-only: on CPU the row says it did not run, and why.
    assert not results["trl_liger"]["ok"] and "not run" in results["trl_liger"]["note"]
    # 2 timed steps of 4 rows, lengths in [16, 64]: every route counted real tokens of 8 rows,
    # the same rows (file order for the peers, ft's packed rows of the same examples).
    tokens = {route: results[route]["tokens"] for route in ("hf_plain", "trl", "ft", "ft_compiled")}
    assert all(8 * 16 <= n <= 8 * 64 for n in tokens.values()), tokens
    assert tokens["ft"] == tokens["ft_compiled"]
    # Same rows, same init, same seed and schedule: the routes' losses agree (dropout is 0), and
    # compiling changes nothing.
    losses = {route: results[route]["loss_at_end"] for route in tokens}
    assert max(losses.values()) - min(losses.values()) < 0.05, losses
    assert abs(losses["ft"] - losses["ft_compiled"]) < 1e-4, losses
    assert "sdpa per example, between the compiled graphs" in results["ft_compiled"]["speed_line"]
    assert results["ft_compiled"]["compiled_graphs"] > 0
    # The GPU checks: composed and validated on CPU, each named in the table.
    checks = {c["check"]: c for c in report["checks"]}
    assert set(checks) == {"qlora", "bf16", "device_map", "zero3_offload", "fsdp2"}
    assert all(c["ok"] for c in checks.values()), checks
    assert {checks[n]["result"] for n in ("bf16", "device_map", "zero3_offload", "fsdp2")} == {
        "VALIDATED (no GPU)"
    }


def test_gpu_script_uses_the_images_python_and_carries_the_missing_wheels():
    script = (REPO / "bench" / "gpu.sh").read_text()
    assert 'PY="${PYTHON:-python3}"' in script and ".venv" not in script
    assert "--no-index" in script and "bench/wheels/*.whl" in script
    wheels = (REPO / "bench" / "gpu_wheels.sh").read_text()
    pinned = set(re.search(r"PINNED=\(([^)]*)\)", wheels).group(1).split())
    # ft's own dependencies the GPU image lacks, the peers' and the checks' packages, and the
    # libraries whose versions must be this checkout's.
    assert {
        "hydra-core",
        "omegaconf",
        "antlr4-python3-runtime",
        "datasets",
        "trl",
        "deepspeed",
    } <= (pinned)
    assert {"transformers", "peft", "accelerate"} <= pinned
    assert "liger-kernel==" in wheels and "bitsandbytes==" in wheels
    assert "/bench/wheels/" in (REPO / ".gitignore").read_text()
