"""Pure pieces of the training path: LR schedule, bucket planning, checkpoint files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from gradsync.checkpoint import format as ckpt
from gradsync.core.config import OptimConfig
from gradsync.core.errors import CheckpointError
from gradsync.core.files import atomic_write_bytes
from gradsync.optim.schedule import lr_at
from gradsync.parallel.layout import param_buckets


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor() -> None:
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg, 110) == pytest.approx(0.1)
    assert lr_at(9, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, cfg, 110) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, cfg, 110) == pytest.approx(0.1)


def test_buckets_respect_caps_and_keep_order() -> None:
    params = [nn.Parameter(torch.zeros(n)) for n in (10, 10, 30, 5, 5, 100)]  # 4 bytes each
    groups = param_buckets(params, first_bytes=80, cap_bytes=160)
    assert [[p.numel() for p in g] for g in groups] == [[10, 10], [30, 5, 5], [100]]
    assert [p for g in groups for p in g] == params


def test_buckets_never_mix_dtypes() -> None:
    params = [nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(4, dtype=torch.float64))]
    assert len(param_buckets(params, 1 << 20, 1 << 20)) == 2


def test_checkpoint_round_trip_and_listing(tmp_path: Path) -> None:
    for step in (5, 10):
        ckpt.save_checkpoint(
            ckpt.checkpoint_path(tmp_path, step),
            {"step": step, "strategy": {"w": torch.ones(2)}, "data": {}, "rng": [], "config": {}, "world_size": 1},
        )
    found = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["ckpt_0000005.pt", "ckpt_0000010.pt"]
    assert ckpt.load_checkpoint(found[-1])["step"] == 10
    assert ckpt.resolve_resume("auto", tmp_path) == found[-1]
    assert ckpt.resolve_resume(str(tmp_path), tmp_path / "elsewhere") == found[-1]
    assert not list((tmp_path / "checkpoints").glob(".*tmp*")), "temporary files left behind"


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    good = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.save_checkpoint(good, {"step": 1, "strategy": {}, "data": {}, "rng": [], "config": {}, "world_size": 1})
    data = good.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt \\(checksum mismatch"):
        ckpt.load_checkpoint(bad)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF  # one damaged byte in the payload, same length
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        ckpt.load_checkpoint(tmp_path / "flipped.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        ckpt.load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a gradsync checkpoint"):
        ckpt.load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.resolve_resume(str(tmp_path / "missing.pt"), tmp_path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_a_metrics_line_cut_off_mid_write_is_dropped_and_resume_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import json

    from gradsync.core.errors import DataError, TrainingError
    from gradsync.training.metrics import MetricsWriter, read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"kind": "train", "step": s}) + "\n" for s in (1, 2, 3)) + '{"kind": "tr')
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert "dropped its last line, cut off mid-write" in capsys.readouterr().err
    writer = MetricsWriter(path, fresh=False, resume_step=2)  # what a resumed run does
    writer.write({"kind": "train", "step": 3})
    writer.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]

    path.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(DataError, match="damaged at line 2"):
        read_metrics(path)

    writer = MetricsWriter(tmp_path / "full.jsonl", fresh=True)

    def disk_full(text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    writer._f.write = disk_full  # type: ignore[method-assign]
    with pytest.raises(TrainingError, match="No space left on device; is the disk full"):
        writer.write({"kind": "train", "step": 1})
