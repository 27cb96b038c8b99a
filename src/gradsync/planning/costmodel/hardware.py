"""Devices: peak FLOP/s (datasheet or measured), the fraction the model reaches, memory, and the
cost of element-wise passes; presets from NVIDIA's datasheets (:mod:`gradsync.core.devices`)."""

from __future__ import annotations

from dataclasses import dataclass

from gradsync.core.devices import DATASHEETS
from gradsync.planning.costmodel.network import CostModelError


@dataclass(frozen=True)
class Hardware:
    """One device and what it achieves on the workload.

    ``peak_flops`` is the datasheet (or measured matmul) peak used for MFU; ``efficiency`` the
    fraction of it the model's forward+backward reaches (calibrated profiles measure it).
    ``mem_bw`` (bytes/s) prices element-wise passes (optimizer, casts, error feedback)."""

    name: str
    peak_flops: float
    memory_bytes: float
    mem_bw: float
    efficiency: float = 0.45
    backward_ratio: float = 2.0  # backward time / forward time
    optimizer_s_per_param: float | None = None  # measured; else priced from mem_bw
    elementwise_s_per_elem: float | None = None  # one read-modify-write pass over fp32 elements
    overlap_penalty: float = 0.0  # step seconds lost per second of communication hidden behind compute
    quantize_s_per_elem: float | None = None  # measured 8/4-bit encode/decode of a two-stage mean, per element
    # collectives on a stream of their own beside compute (CUDA); on CPU torch's FSDP2 issues its
    # all-gathers and reduce-scatters synchronously (``unshard_async_op`` is off), so nothing overlaps
    streams: bool = True

    def __post_init__(self) -> None:
        if not (self.peak_flops > 0 and self.memory_bytes > 0 and self.mem_bw > 0 and 0 < self.efficiency <= 1):
            raise CostModelError(
                f"device '{self.name}' needs positive peak FLOP/s, memory and memory bandwidth, "
                "and an efficiency in (0, 1]"
            )

    @property
    def achieved_flops(self) -> float:
        return self.peak_flops * self.efficiency

    @property
    def optimizer_cost(self) -> float:
        """Seconds per parameter of clip + AdamW step: ~28 bytes moved (read p, g, m, v; write p, m, v)."""
        return self.optimizer_s_per_param if self.optimizer_s_per_param is not None else 28.0 / self.mem_bw

    @property
    def elementwise_cost(self) -> float:
        return self.elementwise_s_per_elem if self.elementwise_s_per_elem is not None else 8.0 / self.mem_bw

    @property
    def quantize_cost(self) -> float:
        """Seconds per element of a rank's 8/4-bit encode/decode work in a two-stage mean
        (:func:`gradsync.parallel.grad_paths.quantize.codec_work`): measured, else ~12 bandwidth-bound passes
        (what a GPU's kernels approach; a CPU pays far more, in allocations)."""
        return self.quantize_s_per_elem if self.quantize_s_per_elem is not None else 12 * self.elementwise_cost


GB = 1e9
DEVICES: dict[str, Hardware] = {  # dense bf16 peaks from NVIDIA's datasheets, efficiencies from published runs
    key: Hardware(d.name, d.peak_flops, d.memory_bytes, d.mem_bw, d.efficiency) for key, d in DATASHEETS.items()
}


def device_preset(name: str) -> Hardware:
    if name not in DEVICES:
        raise CostModelError(
            f"unknown device '{name}'; choose one of {', '.join(DEVICES)} or a profile "
            "written by `gradsync calibrate` (--device PROFILE.json)"
        )
    return DEVICES[name]
