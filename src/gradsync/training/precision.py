"""Mixed precision: the autocast context a run's ``train.precision`` asks for."""

from __future__ import annotations

import contextlib

import torch


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on ``device`` for ``precision == "bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
