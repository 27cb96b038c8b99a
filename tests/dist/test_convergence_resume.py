"""Training learns (reaches the known optimum of a synthetic source) and resumes exactly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from gradsync.testing import run_world, train_and_collect


def test_converges_to_the_entropy_rate_of_a_markov_source(tiny_config: Callable[..., Any]) -> None:
    cfg = tiny_config(**{
        "model.preset": "mini", "data.seq_len": 32, "data.synthetic_vocab": 8, "data.synthetic_order": 2,
        "data.synthetic_tokens": 300_000, "optim.lr": 1e-2, "optim.warmup_steps": 20,
        "parallel.nproc": 2, "train.micro_batch": 16, "train.global_batch": 32, "train.max_steps": 500,
        "train.eval_interval": 100, "train.eval_sequences": 256})
    out = run_world(2, train_and_collect, cfg)[0]
    h = out["entropy_rate"]
    assert 0.5 < h < math.log(8) - 0.5  # a source with real structure to learn
    assert out["val_loss"] - h < 0.1, f"val loss {out['val_loss']:.4f} vs entropy rate {h:.4f}"


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_resume_is_bitwise_identical(tiny_config: Callable[..., Any], tmp_path: Path) -> None:
    common = {"parallel.nproc": 2, "train.micro_batch": 2, "train.global_batch": 8,
              "train.max_steps": 20, "model.dropout": 0.1}  # dropout: the RNG state must resume too
    straight = tiny_config(**common)
    first = tiny_config(**common, **{"train.stop_after": 10})
    second = dict(first, train=dict(first["train"], stop_after=0, resume="auto"))

    full = run_world(2, train_and_collect, straight, str(tmp_path / "full.pt"))[0]
    half = run_world(2, train_and_collect, first)[0]
    assert [r["step"] for r in half["history"]] == list(range(1, 11))
    rest = run_world(2, train_and_collect, second, str(tmp_path / "resumed.pt"))[0]
    assert [r["step"] for r in rest["history"]] == list(range(11, 21))

    a, b = _params(tmp_path / "full.pt"), _params(tmp_path / "resumed.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed parameters differ from the straight run"
    assert [r["loss"] for r in full["history"][10:]] == [r["loss"] for r in rest["history"]]
