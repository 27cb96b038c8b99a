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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

CATEGORIES = ("params", "grads", "optimizer")
SAMPLED_STEPS = 3  # steps whose memory use is measured (later steps repeat them)
Holdings = dict[str, Sequence[torch.Tensor | None]]  # the tensors a rank holds, per category


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


class MemoryMeter:
    """A strategy's part that measures what it holds: ``holdings`` lists the tensors per category
    (the strategy knows them), the meter sums their storages at the moments the strategy samples
    and keeps the peak and the steady state the report describes."""

    def __init__(self, holdings: Callable[[], Holdings], device: torch.device) -> None:
        self.holdings = holdings
        self.device = device
        self.peak_bytes = 0
        self.steps = 0  # optimizer steps taken (or skipped) so far
        self._steady: dict[str, int] | None = None

    def held(self) -> dict[str, int]:
        return {k: storage_bytes(v) for k, v in self.holdings().items()}

    def sample(self, steady: bool = False) -> dict[str, int] | None:
        """Measure what is held now and raise the peak if it is higher. ``steady`` marks the
        moment the report describes: after the update, before gradients are zeroed, when every
        strategy holds its parameters, gradients and optimizer state and nothing transient.

        Only the first :data:`SAMPLED_STEPS` steps are sampled (None after): every later step
        holds the same tensors at the same moments (ZeRO-3 prefetches from its second step on),
        and a scan of every held tensor at each gather would be per-step overhead."""
        if self.steps >= SAMPLED_STEPS:
            return None
        held = self.held()
        self.peak_bytes = max(self.peak_bytes, sum(held.values()))
        if steady:
            self._steady = held
        return held

    def report(self) -> MemoryReport:
        held = self._steady or self.held()
        return MemoryReport(
            held["params"], held["grads"], held["optimizer"], self.peak_bytes, process_peak_bytes(self.device)
        )
