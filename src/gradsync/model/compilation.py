"""``torch.compile`` a model in place so that data parallelism can still overlap communication with
backward: one graph per block.

A graph compiled from the whole model runs its backward as one autograd node, which hands back
every parameter's gradient only when it ends; no gradient bucket can then be sent while backward
runs (measured on an H100 with GPT-2 124M: all 18 buckets became ready within 1.3 ms of the end of
a 44 ms backward). Compiling each block separately keeps the fusion inside a block, where nearly
all of it is, and hands back a block's gradients as soon as its backward ends, as eager mode does;
torchtitan compiles per transformer block for the same reason. (torch DDP solves it another way:
its DDPOptimizer splits a whole-model graph at bucket boundaries, which only DDP can use.)

A *block* is an element of an ``nn.ModuleList`` (:func:`gradsync.model.activation_checkpointing.blocks`,
the same rule as ZeRO-3's units) that no other block contains; a model with none is compiled whole.
"""

from __future__ import annotations

import torch.nn as nn

from gradsync.model.activation_checkpointing import blocks


def compile_per_block(model: nn.Module) -> int:
    """Compile each block of ``model`` in place (``nn.Module.compile``: names, hooks and state dicts
    stay the module's), or the whole model if it has no blocks; return how many graphs."""
    parts = blocks(model)
    inside = {id(m) for b in parts for m in b.modules() if m is not b}
    parts = [b for b in parts if id(b) not in inside]  # a block's own blocks (experts) compile with it
    if not parts:
        model.compile()
        return 1
    for block in parts:
        block.compile()
    return len(parts)
