"""The optimizer every strategy builds: weight decay on matrices only, and the kernel
``optim.kernel`` names (``auto``: torch's fused one where it exists)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gradsync.core.config import OptimConfig
from gradsync.optim.factory import optimizer_factory


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_auto_takes_the_fused_kernel_on_cpu_and_decays_matrices_only(name: str) -> None:
    opt = optimizer_factory(OptimConfig(name=name, weight_decay=0.1))(_model())
    assert OptimConfig().kernel == "auto" and opt.defaults["fused"] is True
    decayed, plain = opt.param_groups
    assert [p.dim() for p in decayed["params"]] == [2, 2] and decayed["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0


def test_auto_falls_back_where_torch_has_no_fused_kernel() -> None:
    class Complex(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, 3, dtype=torch.complex64))

    m = Complex()
    opt = optimizer_factory(OptimConfig())(m)
    assert not opt.defaults["fused"]
    m.w.grad = torch.ones_like(m.w)
    opt.step()  # the per-tensor loop takes complex parameters
    fused = optimizer_factory(OptimConfig(kernel="fused"))(m)
    with pytest.raises(RuntimeError):  # the reason auto falls back: the fused kernel refuses them
        fused.step()


def test_the_fused_and_default_updates_agree_to_rounding() -> None:
    torch.manual_seed(0)
    base = _model()
    copies = [_model() for _ in range(2)]
    for m in copies:
        m.load_state_dict(base.state_dict())
    opts = [optimizer_factory(OptimConfig(kernel=k, weight_decay=0.1))(m) for k, m in zip(("auto", "default"), copies)]
    x = torch.randn(16, 4)
    for _ in range(5):
        for m, o in zip(copies, opts):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for a, b in zip(copies[0].parameters(), copies[1].parameters()):
        # AdamW moves each weight by at most ~lr (1e-3 a step): a few float32 ulps of difference
        assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
