"""Parameters that a step did not use, with torch DDP's ``find_unused_parameters=True`` semantics.

A model with branches (routing, an auxiliary head used on some batches, a layer frozen by control
flow) leaves some parameters without a gradient on some ranks. gradsync's gradient paths never
hang on them: an unused parameter contributes zeros to its bucket, so the average is the mean over
all ranks of the gradients, counting the ranks that did not use it as zero (what DDP does). What
remains is the parameter that *no* rank used: DDP leaves its gradient ``None``, so the optimizer
leaves it alone (no momentum, no weight decay, no step count), while a zero gradient would still
move it under AdamW. :class:`UsageTracker` finds those: every trainable parameter's
post-accumulate-grad hook marks it used on this rank, and at the step one small all-reduce of the
marks (one number per parameter) tells every rank which parameters nobody used; the strategy then
hides their gradients from the optimizer (:meth:`gradsync.parallel.base.Strategy.step`).

It costs that one collective per step, which is why, as in DDP, it is an option
(``find_unused_parameters=True`` in :func:`gradsync.parallelize`, ``--parallel.find_unused true``).
Strategies that step on each rank's own gradient (local SGD, DiLoCo) need no tracker: a parameter
this rank did not use has no gradient there, and its optimizer skips it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gradsync.runtime.dist import Comm


class UsageTracker:
    """Marks the trainable parameters that received a gradient since the last step on this rank
    (over every micro-step of gradient accumulation) and agrees with the other ranks on which
    received none anywhere."""

    def __init__(self, model: nn.Module, comm: Comm) -> None:
        self.comm = comm
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._used = [False] * len(self.params)
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._mark)

    def _mark(self, p: torch.Tensor) -> None:
        self._used[self._index[id(p)]] = True

    def unused_everywhere(self) -> list[nn.Parameter]:
        """The parameters no rank used since the last call (collective: every rank calls it at
        every step); the marks start over."""
        counts = torch.tensor(self._used, dtype=torch.float32, device=self.comm.env.device)
        self.comm.all_reduce(counts)
        self._used = [False] * len(self.params)
        return [p for p, n in zip(self.params, counts.tolist()) if n == 0]
