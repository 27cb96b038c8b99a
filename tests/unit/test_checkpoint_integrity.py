"""Saved work is never lost: checksummed checkpoints, fallback to the newest intact one, the last K
kept, and a write that fails or is killed midway leaves the previous checkpoints as they were."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from gradsync.checkpoint import format as ckpt
from gradsync.core.errors import CheckpointError


def _save(run: Path, step: int, keep: int = 0) -> Path:
    path = ckpt.checkpoint_path(run, step)
    ckpt.save_checkpoint(
        path,
        {
            "step": step,
            "strategy": {"w": torch.full((64,), float(step))},
            "data": {},
            "rng": [],
            "config": {},
            "world_size": 1,
        },
        keep=keep,
    )
    return path


def test_damaged_latest_falls_back_to_the_previous_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for step in (10, 20, 30):
        _save(tmp_path, step)
    latest = ckpt.checkpoint_path(tmp_path, 30)
    latest.write_bytes(latest.read_bytes()[:-100])  # truncated, e.g. by a full disk outside our rename
    middle = ckpt.checkpoint_path(tmp_path, 20)
    raw = bytearray(middle.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit
    middle.write_bytes(bytes(raw))
    assert ckpt.resolve_resume("auto", tmp_path) == ckpt.checkpoint_path(tmp_path, 10)
    err = capsys.readouterr().err
    assert "ckpt_0000030.pt' is corrupt (checksum mismatch" in err and "ckpt_0000020.pt' is corrupt" in err
    assert ckpt.resolve_resume(str(tmp_path / "checkpoints"), tmp_path) == ckpt.checkpoint_path(tmp_path, 10)
    with pytest.raises(CheckpointError, match="checksum mismatch"):  # a file named explicitly is not replaced
        ckpt.load_checkpoint(ckpt.resolve_resume(str(latest), tmp_path))


def test_no_intact_checkpoint_is_an_error(tmp_path: Path) -> None:
    _save(tmp_path, 5).write_bytes(b"GRADSYNC-CHECKPOINT v2\n" + b"\0" * 40)
    with pytest.raises(CheckpointError, match="no intact checkpoint .* all 1 are damaged"):
        ckpt.resolve_resume("auto", tmp_path)


def test_only_the_newest_k_are_kept(tmp_path: Path) -> None:
    for step in range(1, 8):
        _save(tmp_path, step, keep=3)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [f"ckpt_000000{s}.pt" for s in (5, 6, 7)]
    for step in (8, 9):
        _save(tmp_path, step, keep=0)  # 0 keeps everything
    assert len(ckpt.list_checkpoints(tmp_path)) == 5


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path, 1)
    before = ckpt.checkpoint_path(tmp_path, 1).read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match=r"could not write .*\(No space left on device\); the previous"):
        _save(tmp_path, 2)
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt_0000001.pt"]
    assert ckpt.checkpoint_path(tmp_path, 1).read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


def _write_and_hang(run: str, ready: mp.synchronize.Event) -> None:
    def stall(fd: int) -> None:  # the data is in the temporary file; the rename has not happened
        ready.set()
        time.sleep(60)

    os.fsync = stall  # type: ignore[assignment]
    _save(Path(run), 1)  # overwrites the same name: the old content must survive the kill


def test_a_writer_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    old = _save(tmp_path, 1)
    before = old.read_bytes()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_write_and_hang, args=(str(tmp_path), ready))
    child.start()
    assert ready.wait(60), "the writer never reached fsync"
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    assert old.read_bytes() == before and ckpt.load_checkpoint(old)["step"] == 1
    assert list((tmp_path / "checkpoints").glob(".*tmp*")), "the dead writer's temporary file"
    _save(tmp_path, 2)  # the next save clears what the dead writer left
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))
