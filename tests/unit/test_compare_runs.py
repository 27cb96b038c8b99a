"""tools/compare_runs.py, the check that a refactor did not change training, finds a difference in
any training quantity or in the sample, and none between equal runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "tools" / "compare_runs.py")
assert spec is not None and spec.loader is not None
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def _run(folder: Path, losses: list[float], sample: str) -> Path:
    folder.mkdir()
    lines = [
        {"kind": "train", "step": i + 1, "loss": v, "lr": 1e-3, "tokens_per_sec": 100.0 + i}
        for i, v in enumerate(losses)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "sample.txt").write_text(sample)
    return folder


def test_equal_runs_agree_and_timings_are_ignored(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [2.0, 1.5], "def f")
    b = _run(tmp_path / "b", [2.0, 1.5], "def f")
    rec = json.loads((b / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["tokens_per_sec"] == 100.0
    assert compare_runs.differences(a, b) == []


def test_a_changed_loss_or_sample_is_found(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [2.0, 1.5], "def f")
    assert compare_runs.differences(a, _run(tmp_path / "b", [2.0, 1.5000001], "def f")) == [
        "train step 2: loss 1.5 != 1.5000001"
    ]
    assert compare_runs.differences(a, _run(tmp_path / "c", [2.0, 1.5], "def g")) == ["sample.txt differs"]
    assert compare_runs.differences(a, _run(tmp_path / "d", [2.0], "def f"))[0] == "metrics.jsonl: 2 records against 1"
