"""Sharded checkpoints (``train.checkpoint_format=dcp``, torch.distributed.checkpoint) in real gloo
worlds: every rank writes its slices; resuming at the same world size is bitwise; a checkpoint
written by 2 workers resumes on 1 or 4 exactly as the single-file checkpoint of the same step does;
a background (async) save completes at the next save or the end; a truncated shard is detected and
the previous checkpoint used; keep-K holds for folders."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from gradsync.checkpoint import format as ckpt
from gradsync.core.errors import CheckpointError
from gradsync.testing import max_rel_diff, run_world, train_each

STRATEGIES = ["bucketed", "zero3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, str], Any]]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("dcp")
    base = {
        s: merge(
            TINY,
            {
                "parallel.strategy": s,
                "parallel.nproc": 2,
                "train.micro_batch": 2,
                "train.global_batch": 8,
                "train.max_steps": 20,
                "model.dropout": 0.1,
            },
        )
        for s in STRATEGIES
    }
    dcp = {"train.checkpoint_format": "dcp"}
    first, names = [], []
    for s in STRATEGIES:
        for name, over in (
            ("straight", {}),
            ("file", {"train.stop_after": 10}),
            ("dcp", {**dcp, "train.stop_after": 10, "train.ckpt_interval": 5}),
            ("async", {**dcp, "train.async_checkpoint": True, "train.ckpt_interval": 5, "train.keep_checkpoints": 2}),
        ):
            first.append(merge(base[s], {"train.run_dir": str(root / f"{s}-{name}"), **over}))
            names.append((s, name))
    results = dict(zip(names, run_world(2, train_each, first)[0]))
    for world in (2, 1, 4):
        resumed, keys = [], []
        for s in STRATEGIES:
            for kind in ("file", "dcp"):
                if world == 2 and kind == "file":
                    continue
                target = root / f"{s}-{kind}-w{world}"
                shutil.copytree(root / f"{s}-{kind}", target)
                resumed.append(
                    merge(base[s], {"parallel.nproc": world, "train.resume": "auto", "train.run_dir": str(target)})
                )
                keys.append((s, f"{kind}-w{world}"))
        results.update(zip(keys, run_world(world, train_each, resumed)[0]))
    return root, results


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_rank_writes_its_slices_and_the_same_world_resumes_bitwise(runs: Any, strategy: str) -> None:
    root, results = runs
    found = ckpt.list_checkpoints(root / f"{strategy}-dcp")
    assert [p.name for p in found] == ["ckpt_0000005.dcp", "ckpt_0000010.dcp"]
    assert sorted(f.name for f in found[-1].glob("__*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    straight, resumed = results[(strategy, "straight")], results[(strategy, "dcp-w2")]
    assert [r["step"] for r in resumed["history"]] == list(range(11, 21))
    assert all(torch.equal(straight["params"][k], resumed["params"][k]) for k in straight["params"])
    assert [r["loss"] for r in straight["history"][10:]] == [r["loss"] for r in resumed["history"]]


@pytest.mark.parametrize("world", [1, 4])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_two_worker_checkpoint_resumes_on_another_world_as_the_file_does(
    runs: Any, strategy: str, world: int
) -> None:
    _, results = runs
    from_file, from_dcp = results[(strategy, f"file-w{world}")], results[(strategy, f"dcp-w{world}")]
    diff = max_rel_diff(from_file["params"], from_dcp["params"])
    assert diff < 1e-6, f"{strategy} 2 -> {world}: {diff:.3g}"  # measured: 0 (the same state is loaded)
    assert [r["step"] for r in from_dcp["history"]] == list(range(11, 21))
    # (not compared with the 2-worker run: dropout draws per rank, so another world trains differently;
    # tests/dist/test_world_change.py shows the continuation without dropout)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_background_saves_complete_and_keep_k_holds(runs: Any, strategy: str) -> None:
    root, results = runs
    run = root / f"{strategy}-async"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt_0000015.dcp", "ckpt_0000020.dcp"]
    assert not list((run / "checkpoints").glob(".*tmp*"))
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])  # read whole, without a world
    assert state["step"] == 20 and state["world_size"] == 2
    final = results[(strategy, "async")]["params"]
    assert all(torch.equal(final[k], state["strategy"]["model"][k]) for k in final)
    assert all(torch.equal(final[k], results[(strategy, "straight")]["params"][k]) for k in final)


def test_a_truncated_shard_is_detected_and_the_previous_checkpoint_used(
    runs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = runs
    run = tmp_path / "run"
    shutil.copytree(root / "zero3-dcp", run)
    newest = ckpt.list_checkpoints(run)[-1]
    shard = newest / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="__1_0.distcp is truncated or damaged"):
        ckpt.load_checkpoint(newest)
    assert ckpt.resolve_resume("auto", run) == ckpt.checkpoint_path(run, 5, sharded=True)
    assert "is truncated or damaged (checksum mismatch); using an older one" in capsys.readouterr().err
    (ckpt.checkpoint_path(run, 5, sharded=True) / "gradsync.pt").unlink()
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        ckpt.resolve_resume("auto", run)
