"""The matmul peak behind MFU: a cached figure that a busy machine made too low is noticed and
measured again, and `fresh` (what calibrate uses) re-measures and re-caches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradsync.training.peak import device_name, peak_flops


def test_a_wrong_cached_peak_is_measured_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADSYNC_CACHE", str(tmp_path))
    cpu = torch.device("cpu")
    key = f"{device_name(cpu)}|{torch.float32}|threads=2|torch={torch.__version__}"
    (tmp_path / "peak_flops.json").write_text(json.dumps({key: 1e6}))  # 1 MFLOP/s: absurd
    one = peak_flops(cpu, torch.float32, 1, fresh=True)
    two = peak_flops(cpu, torch.float32, 2)
    assert two >= 0.5 * one > 1e8
    assert json.loads((tmp_path / "peak_flops.json").read_text())[key] == two
    assert peak_flops(cpu, torch.float32, 2) == two  # a sound cached value is used as it is
