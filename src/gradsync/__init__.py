"""gradsync: data-parallel training on PyTorch and torch.distributed.

The public Python API — :func:`parallelize` (your loop), :class:`Trainer` and :class:`Task`
(gradsync's loop, your workload) — is imported on first use, so that ``import gradsync`` (and
``gradsync plan``) costs no torch import.
"""

from typing import Any

from gradsync.core.catalog import resolve

__version__ = "0.1.0"

_PUBLIC = {
    "parallelize": "gradsync.api:parallelize",
    "Parallel": "gradsync.api:Parallel",
    "Trainer": "gradsync.training.trainer:Trainer",
    "Task": "gradsync.tasks:Task",
    "build_config": "gradsync.core.config:build_config",
    "apply_activation_checkpointing": "gradsync.model.activation_checkpointing:apply_activation_checkpointing",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return resolve(_PUBLIC[name])
    raise AttributeError(f"module 'gradsync' has no attribute '{name}'")


__all__ = list(_PUBLIC)
