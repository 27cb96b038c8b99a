"""Profiling chosen steps (``--train.profile``) and ``gradsync timeline``, end to end with 2
workers: the traces and timelines are written, the picture and the table come out, and the
profiled run trains exactly as the unprofiled one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FLAGS = "--model tiny --seq-len 32 --micro-batch 4 --global-batch 8 --max-steps 6 --eval-interval 100 --no-progress"


def gradsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "gradsync.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r.get("kind") == "train"]


def test_a_profiled_run_leaves_traces_a_timeline_and_the_same_losses(tmp_path: Path) -> None:
    for name, extra in (("plain", []), ("profiled", ["--train.profile", "3:5"])):
        r = gradsync("train", *FLAGS.split(), "--sample-tokens", "0", "--run-dir", name, *extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    assert _losses(tmp_path / "profiled") == _losses(tmp_path / "plain")  # profiling changes nothing
    assert not (tmp_path / "plain" / "profile").exists()
    profile = tmp_path / "profiled" / "profile"
    for rank in (0, 1):
        trace = json.loads((profile / f"rank{rank}.trace.json").read_text())
        names = {e.get("name") for e in trace["traceEvents"]}
        assert {"gradsync/forward", "gradsync/backward", "gradsync/optimizer"} <= names
        tl = json.loads((profile / f"rank{rank}.timeline.json").read_text())
        assert tl["steps"] == [3, 5] and {e["step"] for e in tl["events"]} == {3, 4}

    r = gradsync("timeline", "profiled", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "step 4, rank 0" in r.stdout and "| bucket 0 | all_reduce |" in r.stdout
    assert "rank 1: forward" in r.stdout and "blocked on communication" in r.stdout
    assert (profile / "timeline-step4.png").read_bytes()[:4] == b"\x89PNG"

    bad = gradsync("timeline", "plain", cwd=tmp_path)
    assert bad.returncode == 2 and "train it with --train.profile FIRST:LAST" in bad.stderr
    bad = gradsync("train", *FLAGS.split(), "--train.profile", "5:3", cwd=tmp_path)
    assert bad.returncode == 2 and "train.profile must be FIRST:LAST with 0 <= FIRST < LAST" in bad.stderr
