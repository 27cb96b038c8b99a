"""Streaming DiLoCo in a real 2-process gloo world: its special case is DiLoCo (checked against
DiLoCo as first written, kept here as the reference), fragments and quantisation cut the bytes
of an outer step as they say, a run stopped with fragments in flight resumes bitwise, and keep=true
keeps the progress made while a fragment travelled."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from gradsync.parallel.localsgd import LocalSGDStrategy
from gradsync.testing import run_world, train_each


class ReferenceDiLoCo(LocalSGDStrategy):
    """DiLoCo as it was before fragments: average the parameters every H steps, step the outer
    Nesterov SGD on θ_outer − mean θ, restart every worker from θ_outer."""

    name = "diloco-reference"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.outer = torch.nn.Parameter(parameters_to_vector(self._params).detach().clone())
        self.outer_optimizer = torch.optim.SGD(
            [self.outer], lr=float(self.spec["outer_lr"]), momentum=float(self.spec["momentum"]), nesterov=True
        )

    def synchronize(self) -> None:
        self.outer.grad = self.outer.detach() - self.averaged_parameters()
        self.outer_optimizer.step()
        self.outer.grad = None
        self.set_parameters(self.outer.detach())


def _train_with_reference(rank: int, configs: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    from gradsync.core import catalog

    entry = catalog.STRATEGIES["diloco"]
    catalog.STRATEGIES["diloco-reference"] = dataclasses.replace(
        entry, name="diloco-reference", cls=f"{__name__}:ReferenceDiLoCo"
    )
    catalog.STRATEGY_SCHEMA["diloco-reference"] = entry.options  # type: ignore[index]
    return train_each(rank, configs)


STREAM = "diloco:4,fragments=2,overlap=3,quant=int8,keep=true"  # at step 10 two fragments are in flight
RUNS = {
    "reference": ("diloco-reference:4", {}),
    "diloco": ("diloco:4", {}),
    "fragments": ("diloco:4,fragments=2", {}),
    "int8": ("diloco:4,fragments=2,quant=int8", {}),
    "straight": (STREAM, {"model.dropout": 0.1}),
    "first": (STREAM, {"model.dropout": 0.1, "train.stop_after": 10}),
    "second": (STREAM, {"model.dropout": 0.1, "train.resume": "auto"}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("streaming")
    configs = []
    for name, (spec, over) in RUNS.items():
        folder = root / ("split" if name in ("first", "second") else name)
        configs.append(
            merge(
                TINY,
                {
                    "parallel.nproc": 2,
                    "parallel.strategy": spec,
                    "train.micro_batch": 4,
                    "train.global_batch": 8,
                    "train.max_steps": 20,
                    "train.run_dir": str(folder),
                    **over,
                },
            )
        )
    return dict(zip(RUNS, run_world(2, _train_with_reference, configs)[0]))


def test_one_fragment_no_overlap_fp32_is_diloco(runs: dict[str, Any]) -> None:
    a, b = runs["reference"]["params"], runs["diloco"]["params"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in runs["reference"]["history"]] == [r["loss"] for r in runs["diloco"]["history"]]


def _outer_bytes(run: dict[str, Any]) -> dict[int, float]:
    """Bytes each rank sent, per step that sent any (ring algorithms' wire bytes)."""
    return {r["step"]: r["comm_wire_bytes"] for r in run["history"] if r["comm_wire_bytes"]}


def test_fragments_and_quantisation_cut_the_bytes_of_an_outer_step(runs: dict[str, Any]) -> None:
    whole, halves, int8 = (_outer_bytes(runs[n]) for n in ("diloco", "fragments", "int8"))
    assert list(whole) == [4, 8, 12, 16, 20]
    assert list(halves) == list(int8) == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # staggered: H/2 apart
    full = whole[4]
    # the tiny model's fragments: 2 blocks + embeddings, balanced by size
    assert 0.3 * full < max(halves.values()) < 0.7 * full
    assert sum(halves[s] for s in (2, 4)) == full  # both fragments = the whole model
    # 8-bit codes + a fp32 scale per 128 (+ padding to whole blocks): about a quarter of fp32
    assert max(int8.values()) < 0.3 * max(halves.values())


def test_resume_with_fragments_in_flight_is_bitwise(runs: dict[str, Any]) -> None:
    full, half, rest = runs["straight"], runs["first"], runs["second"]
    assert [r["step"] for r in half["history"]] == list(range(1, 11))
    assert [r["step"] for r in rest["history"]] == list(range(11, 21))
    a, b = full["params"], rest["params"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed parameters differ from the straight run"
    assert [r["loss"] for r in full["history"][10:]] == [r["loss"] for r in rest["history"]]


def test_keep_adds_the_outer_correction_to_the_progress_made_in_flight(tmp_path: Any) -> None:
    """One worker, outer lr 1 without momentum: the outer step returns what was sent, so keeping the
    progress made while it travelled is training with no outer step at all (localsgd on one
    worker), to rounding, also when each send lands just before the next (overlap = H = 1);
    replacing the fragment (mix=0) drops that progress and trains differently.
    The inner optimizer is SGD with momentum, which carries the rounding of θ_outer + (θ_local -
    θ_sent) forward linearly (~ 12 steps x 2^-24 of the scale), where AdamW would magnify it on
    near-zero gradients by a machine-dependent factor."""
    from conftest import TINY, merge

    keep_and_mix = (f"diloco:4,fragments=2,overlap=1,outer_lr=1.0,momentum=0{k}" for k in (",keep=true", ""))
    # overlap = H: every step's send lands at the next step, just before that step's send
    every_step = "diloco:1,overlap=1,outer_lr=1.0,momentum=0,keep=true"
    specs = ["localsgd:4", *keep_and_mix, every_step]
    configs = [
        merge(
            TINY,
            {
                "parallel.nproc": 1,
                "parallel.strategy": s,
                "train.micro_batch": 4,
                "train.global_batch": 4,
                "train.max_steps": 12,
                "train.run_dir": str(tmp_path / str(i)),
                "optim.name": "sgd",
                "optim.momentum": 0.9,
                "optim.lr": 0.01,
            },
        )
        for i, s in enumerate(specs)
    ]
    plain, kept, replaced, each_step = (r["params"] for r in run_world(1, train_each, configs)[0])
    scale = max(t.abs().max().item() for t in plain.values())
    for run in (kept, each_step):
        d = max((plain[k] - run[k]).abs().max().item() for k in plain) / scale
        assert d < 1e-5, f"{d:.3g}"
    replaced_d = max((plain[k] - replaced[k]).abs().max().item() for k in plain) / scale
    assert replaced_d > 1e-3, f"{replaced_d:.3g}"
