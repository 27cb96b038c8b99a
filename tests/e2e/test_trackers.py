"""``--loggers tensorboard,wandb,trackio`` for real (W&B offline, trackio local): every metric of
``metrics.jsonl`` reaches each tracker, and after a kill (SIGKILL, with steps logged past the
last checkpoint) and a resume, each tracker run holds exactly one value per step."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradsync.training.metrics import read_metrics

for _package in ("tensorboard", "wandb", "trackio"):  # the 'track' extra, which the README's set-up installs
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed", allow_module_level=True)

# trackio reads TRACKIO_DIR when imported, so its store is read in a process of its own
TRACKIO_READ = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
runs = SQLiteStorage.get_runs("gradsync")
print(json.dumps({r: [x["step"] for x in SQLiteStorage.get_logs("gradsync", r) if "train/loss" in x] for r in runs}))
"""

ARGS = (
    "--nproc 2 --model tiny --data synthetic --seq-len 32 --micro-batch 4 --global-batch 8 "
    "--ckpt-interval 50 --eval-interval 25 --eval-sequences 8 --sample-tokens 0 --no-progress "
    "--loggers tensorboard,wandb,trackio --run-dir run"
).split()


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        TRACKIO_DIR=str(tmp_path / "trackio"),
        PYTHONUNBUFFERED="1",
    )


def _tensorboard(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def _wandb_history(path: Path) -> list[dict[str, str]]:
    """The history rows of an offline W&B run file: a LevelDB-style log (32 KiB blocks of
    records: CRC-32, length, type; after a 7-byte ':W&B' header) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, rows, pending = 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending += chunk
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item})
    return rows


def test_trackers_mirror_the_metrics_and_hold_one_value_per_step_after_kill_and_resume(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = subprocess.Popen(
        [sys.executable, "-m", "gradsync.cli", "train", *ARGS, "--max-steps", "100000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None:  # past checkpoint 50, so steps 51.. run twice
        if metrics.exists() and any(r.get("step", 0) >= 65 for r in read_metrics(metrics)):
            break
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()[1][-2000:]
    first.kill()
    first.communicate(timeout=30)
    time.sleep(1)  # its workers die with it
    second = subprocess.run(
        [sys.executable, "-m", "gradsync.cli", "train", *ARGS, "--max-steps", "100", "--resume"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-3000:]

    records = read_metrics(metrics)
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    assert sorted(train) == list(range(1, 101))
    run = tmp_path / "run"

    tb = _tensorboard(run, "train/loss")
    assert [s for s, _ in tb] == list(range(1, 101))
    assert all(abs(v - train[s]["loss"]) < 1e-6 for s, v in tb)
    assert [s for s, _ in _tensorboard(run, "eval/val_loss")] == [25, 50, 75, 100]
    assert len(_tensorboard(run, "train/comm_blocked_s")) == 100 and _tensorboard(run, "memory/optimizer")

    offline = sorted(run.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    assert len(offline) == 2  # the killed run's and the resumed run's
    rows = [r for r in _wandb_history(offline[-1]) if "train/loss" in r]
    assert [int(r["_step"]) for r in rows] == list(range(1, 101))
    assert all(abs(json.loads(r["train/loss"]) - train[int(r["_step"])]["loss"]) < 1e-6 for r in rows)

    r = subprocess.run([sys.executable, "-c", TRACKIO_READ], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = json.loads(r.stdout.strip().splitlines()[-1])
    # trackio writes from a background thread: the killed run holds what it had flushed before the
    # SIGKILL — a prefix of its steps, or nothing at all (then trackio has no run of that name)
    assert set(steps) - {"run"} == {"run (resumed at step 50)"}
    assert steps["run (resumed at step 50)"] == list(range(1, 101))
    killed = steps.get("run", [])
    assert killed == list(range(1, len(killed) + 1))
