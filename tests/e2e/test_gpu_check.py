"""benchmarks/gpu_check.py is ready for a GPU: its every part (random-token shard, the largest
micro-batch, ours vs torch-ddp, calibrate, the cost model's step time, the profiled step and its
timeline) runs here on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--cpu",
            "--model",
            "tiny",
            "--seq-len",
            "64",
            "--steps",
            "4",
            "--no-compile",
            "--micro-batch",
            "4",
            "--out-dir",
            "out",
            "--profile-first",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("| ")}
    for measure in (
        "tokens/s (median)",
        "MFU vs measured matmul peak",
        "calibrated fraction of peak (presets assume 45%)",
        "step time: cost model (calibrated) vs measured",
    ):
        assert measure in rows, r.stdout
    ratio = float(rows["tokens/s (median)"].split("|")[4])
    assert 0.3 < ratio < 3, r.stdout  # ours and torch's reference, same model and batch
    out = tmp_path / "out"
    assert "command: `python benchmarks/gpu_check.py --cpu" in (out / "gpu_check.md").read_text()
    timeline = (out / "timeline-gpu.txt").read_text()
    assert "| bucket 0 | all_reduce |" in timeline and "predicted by the cost model" in timeline, timeline
    assert (out / "timeline-gpu.png").stat().st_size > 0 and (out / "trace-gpu.json.gz").stat().st_size > 0
