"""What a strategy holds in memory, measured from the tensors themselves.

Each strategy lists the tensors it holds per category (parameters, gradients, optimizer state);
:func:`storage_bytes` sums their storages once each, so views into a flat buffer count once and a
ZeRO-3 layer whose storage was released counts zero. The strategy samples the total at the
moments of its highest use (after a gather, with buckets in flight) to keep a measured peak.
The ZeRO paper's accounting (Rajbhandari et al. 2020) for fp32 AdamW is the yardstick: 4Ψ bytes of
parameters, 4Ψ of gradients and 8Ψ of moments, divided by N for whatever is sharded.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

CATEGORIES = ("params", "grads", "optimizer")


def storage_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        if t is None:
            continue
        if hasattr(t, "to_local"):  # a DTensor (FSDP2): this rank's shard
            t = t.to_local()
        s = t.untyped_storage()
        key = (str(t.device), s.data_ptr())
        seen[key] = max(seen.get(key, 0), s.nbytes())
    return sum(seen.values())


def optimizer_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        v
        for state in opt.state.values()
        if isinstance(state, dict)  # torch's ZeRO keeps None
        for v in state.values()
        if isinstance(v, torch.Tensor)
    ]


def process_peak_bytes(device: torch.device) -> int:
    """The device allocator's peak on CUDA; the process's peak resident set on CPU (everything:
    interpreter, libraries, activations), for context next to the model-state numbers."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@dataclass
class MemoryReport:
    """Bytes per rank. ``peak`` is the highest sampled sum of the three categories (with transient
    buffers: gathered layers, buckets in flight); ``process_peak`` see :func:`process_peak_bytes`."""

    params: int
    grads: int
    optimizer: int
    peak: int
    process_peak: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        mb = 1 / 2**20
        return (
            f"params {self.params * mb:.2f} MiB, grads {self.grads * mb:.2f} MiB, "
            f"optimizer {self.optimizer * mb:.2f} MiB, peak model state {self.peak * mb:.2f} MiB "
            f"(process peak {self.process_peak * mb:.0f} MiB)"
        )
