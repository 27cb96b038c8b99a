"""The zoo (``zoo.py``: a ConvNet with BatchNorm and a 0-dim parameter trained by an AdamW in two
groups under a torch scheduler, a frozen backbone, an LSTM, tied embeddings, a model with branches
under ``find_unused_parameters``) under the strategies ``test_your_model.py`` does not compare
with torch DDP, in a real 2-process gloo world:

- torch's ZeRO-1 and FSDP2 give torch DDP's per-step losses within 1e-5 relative (exact math);
- every compressor, local SGD and DiLoCo train each model to finite losses (they are not exact:
  their convergence is measured in test_compression.py, test_local_sgd.py and the benchmarks);
- under every strategy, a run saved with ``dp.save`` at step 5 and resumed with ``dp.load`` in a
  fresh model ends bitwise equal to the unbroken 10-step run, losses included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from zoo import NAMES, branchy, convbn, train_steps, two_groups, zoo

from gradsync.testing import run_world

MODELS = ["convbn", *NAMES, "branchy"]
REFS = ["torch-zero1", "torch-fsdp"]
INEXACT = [
    "bucketed+fp16",
    "bucketed+powersgd:rank=2",
    "bucketed+topk:ratio=0.1",
    "bucketed+int8",
    "localsgd:4",
    "diloco:4",
]
EXACT = ["allreduce", "bucketed", "zero1", "zero2", "zero3"]
STEPS, SPLIT = 10, 5


def _skip(model: str, strategy: str) -> str:
    """Combinations that refuse to run, with the reason they give (tested below)."""
    if model == "branchy" and strategy == "torch-fsdp":
        return "torch-fsdp has no find_unused_parameters"
    if model == "convbn" and strategy == "torch-fsdp":
        return "torch's FSDP2 does not shard 0-dim parameters (temperature)"
    return ""


def _build(model: str, strategy: str) -> Any:
    import torch

    import gradsync

    net = convbn() if model == "convbn" else branchy() if model == "branchy" else zoo(model)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = two_groups(net) if model == "convbn" else torch.optim.AdamW(trainable, lr=3e-3)
    name, _, compress = strategy.partition("+")
    dp = gradsync.parallelize(
        net, opt, name, compress or "none", find_unused_parameters=model == "branchy", timeout_s=60
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4)) if model == "convbn" else None
    return dp, sched


def _steps(dp: Any, sched: Any, rank: int, first: int, last: int) -> list[float]:
    return train_steps(dp, rank, first, last, sched=sched, grad_clip=1.0)


def _world(rank: int, root: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in MODELS:
        for strategy in ["torch-ddp", *REFS, *INEXACT, *EXACT]:
            if _skip(model, strategy):
                continue
            dp, sched = _build(model, strategy)
            straight = _steps(dp, sched, rank, 0, STEPS)
            end = dp.full_model_state()
            dp, sched = _build(model, strategy)
            first = _steps(dp, sched, rank, 0, SPLIT)
            path = Path(root) / f"{model}-{strategy}.pt"
            dp.save(path, sched=sched.state_dict() if sched else None)
            dp, sched = _build(model, strategy)
            saved = dp.load(path)
            if sched is not None:
                sched.load_state_dict(saved["sched"])
            rest = _steps(dp, sched, rank, SPLIT, STEPS)
            resumed = dp.full_model_state()
            out[f"{model}/{strategy}"] = {
                "losses": straight,
                "resumed_losses": first + rest,
                "bitwise": all(end[k].equal(resumed[k]) for k in end),
            }
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_world(2, _world, str(tmp_path_factory.mktemp("zoo")), timeout=600)


def _runs(model: str, strategies: list[str]) -> list[tuple[str, str]]:
    return [(m, s) for m in MODELS if m == model or model == "*" for s in strategies if not _skip(m, s)]


@pytest.mark.parametrize("model,strategy", _runs("*", REFS))
def test_torch_references_give_torch_ddp_losses(world: list[dict[str, Any]], model: str, strategy: str) -> None:
    ref, got = world[0][f"{model}/torch-ddp"]["losses"], world[0][f"{model}/{strategy}"]["losses"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(ref, got))
    assert worst <= 1e-5, f"{model} under {strategy}: per-step losses {worst:.3g} relative from torch DDP's"


@pytest.mark.parametrize("model,strategy", _runs("*", INEXACT))
def test_compressors_and_local_methods_train_every_model(
    world: list[dict[str, Any]], model: str, strategy: str
) -> None:
    import math

    for rank in (0, 1):
        losses = world[rank][f"{model}/{strategy}"]["losses"]
        assert len(losses) == STEPS and all(math.isfinite(x) for x in losses), (rank, losses)


@pytest.mark.parametrize("model,strategy", _runs("*", ["torch-ddp", *REFS, *INEXACT, *EXACT]))
def test_resuming_mid_run_is_bitwise_the_unbroken_run(world: list[dict[str, Any]], model: str, strategy: str) -> None:
    for rank in (0, 1):
        run = world[rank][f"{model}/{strategy}"]
        assert run["bitwise"], f"rank {rank}: resumed parameters differ from the unbroken run's"
        assert run["resumed_losses"] == run["losses"], rank


@pytest.mark.parametrize("model", ["branchy", "convbn"])
def test_what_torch_fsdp_cannot_do_is_one_clear_error(model: str) -> None:
    import re

    import torch

    import gradsync
    from gradsync.core.errors import ConfigError

    net = branchy() if model == "branchy" else convbn()
    with pytest.raises(ConfigError, match=re.escape(_skip(model, "torch-fsdp"))):
        gradsync.parallelize(
            net, torch.optim.AdamW(net.parameters()), "torch-fsdp", find_unused_parameters=model == "branchy"
        )
