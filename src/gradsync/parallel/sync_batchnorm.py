"""BatchNorm over the global batch: statistics summed across ranks, on any device and backend.

Plain BatchNorm under data parallelism normalises each rank's micro-batch with that micro-batch's
own mean and variance; with small per-rank batches (detection, segmentation, large images) those
statistics are noisy and training differs from one process with the whole batch. SyncBatchNorm
(Peng et al., "MegDet", CVPR 2018; ``torch.nn.SyncBatchNorm``) computes them over the global batch.
torch's own module only runs on GPUs; this one runs wherever a :class:`~gradsync.runtime.dist.Comm`
does (gloo on CPU included).

What holds, and is tested: on N ranks with micro-batches b_1..b_N, forward, backward and the
running statistics equal plain BatchNorm on one process over the concatenated batch, to float
rounding: the mean and the biased variance are sums over every rank (two passes, so the variance
is as accurate as BatchNorm's own), the running variance uses the unbiased count of the global
batch, and the backward pass sums the statistics' gradients over ranks (the all-reduce's adjoint
is an all-reduce). The cost is two all-reduces of one number per channel in each forward and
two in each backward, per layer. In evaluation mode it is BatchNorm with the running statistics,
and nothing is communicated.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from gradsync.runtime.dist import Comm


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce`` as a differentiable function: the gradient of a sum over ranks is the sum
    over ranks of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, comm: Comm) -> torch.Tensor:
        ctx.comm = comm
        out = t.clone()
        comm.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = grad.clone()
        ctx.comm.all_reduce(out)
        return out, None


def sum_over_ranks(t: torch.Tensor, comm: Comm) -> torch.Tensor:
    out: torch.Tensor = _SumOverRanks.apply(t, comm)
    return out


class SyncBatchNorm(_BatchNorm):
    """A BatchNorm of any dimension (1d, 2d, 3d) whose training statistics are those of the batch
    of every rank together. Made by :func:`convert_sync_batchnorm`, which keeps the parameters and
    buffers of the module it replaces."""

    def __init__(self, bn: _BatchNorm, comm: Comm) -> None:
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.comm = comm
        # the same Parameter objects: an optimizer already built over the model still holds them
        self.weight, self.bias = bn.weight, bn.bias
        self.running_mean, self.running_var = bn.running_mean, bn.running_var
        self.num_batches_tracked = bn.num_batches_tracked
        self.train(bn.training)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm: expected an input of at least 2 dimensions, got {input.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or self.comm.world_size == 1:
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)])
        total = sum_over_ranks(local, self.comm)
        n = total[-1].detach()
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = sum_over_ranks(centred.square().sum(dims), self.comm) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), f)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), f)
        return y


def convert_sync_batchnorm(model: nn.Module, comm: Comm) -> int:
    """Replace every BatchNorm of ``model`` in place by a :class:`SyncBatchNorm` over ``comm``
    (the same parameters and buffers); returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and not isinstance(child, SyncBatchNorm):
                setattr(parent, name, SyncBatchNorm(child, comm))
                replaced += 1
    return replaced
