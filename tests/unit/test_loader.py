"""Your own Dataset or DataLoader through gradsync's sharding (``dp.loader``): the same global
batch at any world size, seeded by epoch, every example once per epoch, resumable mid-epoch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gradsync.core.errors import DataError
from gradsync.data.loader import ShardedLoader

DATA = TensorDataset(torch.arange(96).unsqueeze(1), torch.arange(96) % 3)


def _steps(loader: ShardedLoader, n: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    while len(out) < n:
        for micro in loader:
            out.append(micro)
            if len(out) == n:
                break
    return out


def _ids(micro: list[Any]) -> list[int]:
    return [int(i) for x, _ in micro for i in x[:, 0]]


def test_the_global_batch_is_the_same_at_any_world_size_and_split_in_micro_batches() -> None:
    one = _steps(ShardedLoader(DATA, 16, None, 0, 1, seed=3), 8)
    two = [_steps(ShardedLoader(DATA, 16, 4, r, 2, seed=3), 8) for r in (0, 1)]
    for step in range(8):
        assert _ids(one[step]) == _ids(two[0][step]) + _ids(two[1][step])
        assert [len(x) for x, _ in two[0][step]] == [4, 4]  # 8 per rank in micro-batches of 4
    epoch0 = sorted(i for micro in one[:6] for i in _ids(micro))
    assert epoch0 == list(range(96))  # every example once in an epoch (96 / 16 = 6 steps)
    assert _ids(one[0]) != _ids(_steps(ShardedLoader(DATA, 16, None, 0, 1, seed=4), 1)[0])  # seeded


def test_resuming_mid_epoch_continues_with_the_same_batches() -> None:
    straight = _steps(ShardedLoader(DATA, 16, None, 1, 2), 10)
    first = ShardedLoader(DATA, 16, None, 1, 2)
    done = _steps(first, 4)
    state = first.state_dict()
    again = ShardedLoader(DATA, 16, None, 1, 2)
    again.load_state_dict(state)
    assert again.step == 4 and again.epoch == 0
    rest = list(again)  # to the end of the epoch only: steps 4 and 5
    assert len(rest) == 2 and again.epoch == 1
    rest += _steps(again, 4)
    assert [_ids(m) for m in done + rest] == [_ids(m) for m in straight]


def test_a_dataloader_gives_its_batch_size_as_the_global_batch_and_its_collate() -> None:
    def collate(rows: list[Any]) -> dict[str, torch.Tensor]:
        return {"x": torch.stack([r[0] for r in rows])}

    loader = ShardedLoader(DataLoader(DATA, batch_size=24, shuffle=True, collate_fn=collate), None, None, 0, 2)
    (micro,) = _steps(loader, 1)[0]
    assert set(micro) == {"x"} and micro["x"].shape == (12, 1) and len(loader) == 4


def test_bad_sizes_are_one_clear_error() -> None:
    with pytest.raises(DataError, match="not a positive multiple of the world size 2"):
        ShardedLoader(DATA, 15, None, 0, 2)
    with pytest.raises(DataError, match="give global_batch"):
        ShardedLoader(DATA, None, None, 0, 2)
    with pytest.raises(DataError, match="fewer than one global batch"):
        ShardedLoader(DATA, 128, None, 0, 2)
    with pytest.raises(DataError, match="not divisible by world size × micro-batch"):
        ShardedLoader(DATA, 16, 3, 0, 2)
