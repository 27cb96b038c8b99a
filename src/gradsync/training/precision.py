"""Mixed precision: the autocast context a run's ``train.precision`` asks for, and a model whose
forward runs under it (``precision=`` in :func:`gradsync.parallelize`)."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
import torch.nn as nn

from gradsync.core.config import PRECISIONS
from gradsync.core.errors import ConfigError


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on ``device`` for ``precision == "bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_fp32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_fp32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_fp32(v) for k, v in out.items()}
    return out


def autocast_forward(model: nn.Module, precision: str, device: torch.device) -> None:
    """Run ``model``'s forward under :func:`autocast` from now on, its floating outputs cast back
    to fp32 so that the loss a script computes from them is fp32 (as Accelerate's
    ``mixed_precision="bf16"``); nothing for fp32. Parameters, gradients and optimizer state stay
    fp32: only the forward's matmuls and convolutions run in bf16."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is unknown; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    inner = model.forward

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        with autocast(precision, device):
            return _to_fp32(inner(*args, **kwargs))

    model.forward = forward
