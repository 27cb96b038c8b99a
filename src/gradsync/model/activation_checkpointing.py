"""Activation checkpointing per block (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
Cost"; selective: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models").

A *block* is an element of an ``nn.ModuleList`` — the same rule by which ZeRO-3 makes its units,
so it finds the transformer blocks of gradsync's GPT and BERT and of Hugging Face models. Each
block's ``forward`` is replaced by one that runs under ``torch.utils.checkpoint`` (non-reentrant):

* ``full``: nothing inside the block is kept for backward but its input; the backward pass runs
  the block's forward again (one extra forward of every block: about a third more compute).
* ``selective``: the outputs of the matrix multiplications and of attention are kept, and only the
  cheap element-wise parts (layer norms, GELU, dropout, reshapes) are recomputed: most of the
  memory of ``full`` is saved at a few percent of extra compute.

The module's hooks stay outside the checkpointed function, so ZeRO-3 gathers a block's parameters
for the recomputation exactly once, when the gradient reaches the block's output (its backward
hook), and releases them when the block's gradients are done. Random ops (dropout) replay the
same draws: ``torch.utils.checkpoint`` restores the RNG state, so losses do not change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from gradsync.core.config import CHECKPOINTING as MODES
from gradsync.core.errors import ConfigError

_aten = torch.ops.aten
# what selective checkpointing keeps: matmul and attention outputs
KEEP = {
    getattr(_aten, name).default
    for name in (
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    if hasattr(_aten, name)
}


def _keep_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in KEEP else CheckpointPolicy.PREFER_RECOMPUTE


def blocks(model: nn.Module) -> list[nn.Module]:
    """The elements of every ``nn.ModuleList`` of ``model``."""
    return [m for lst in model.modules() if isinstance(lst, nn.ModuleList) for m in lst]


def apply_activation_checkpointing(model: nn.Module, mode: str) -> int:
    """Checkpoint every block of ``model`` (``mode``: none, selective or full); returns how many.
    One line of :class:`ConfigError` when the model has no blocks to checkpoint."""
    if mode not in MODES:
        raise ConfigError(f"activation checkpointing '{mode}' is unknown; choose one of {', '.join(MODES)}")
    if mode == "none":
        return 0
    found = blocks(model)
    if not found:
        raise ConfigError(
            f"--activation-checkpointing {mode}: {type(model).__name__} has no blocks (elements of an "
            "nn.ModuleList) to checkpoint"
        )
    for block in found:
        block.forward = _checkpointed(block.forward, mode)
    return len(found)


def _checkpointed(forward: Callable[..., Any], mode: str) -> Callable[..., Any]:
    context = functools.partial(create_selective_checkpoint_contexts, _keep_matmuls) if mode == "selective" else None

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():  # evaluation and sampling: nothing to save anyway
            return forward(*args, **kwargs)
        extra: dict[str, Any] = {"context_fn": context} if context is not None else {}
        return checkpoint(forward, *args, use_reentrant=False, **extra, **kwargs)

    return run
