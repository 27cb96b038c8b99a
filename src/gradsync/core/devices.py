"""Accelerators by their datasheets: what the cost model plans with and what MFU on a GPU is also
reported against. Torch-free (``gradsync plan`` runs anywhere).

Peaks are dense bf16 tensor-core FLOP/s from NVIDIA's datasheets (SXM parts); ``match`` are the
words of ``torch.cuda.get_device_name`` that identify the part (all must appear). ``efficiency``
is what the planner assumes a model reaches of that peak, fitted to a published run
(:mod:`gradsync.planning.published` says which and how; a unit test re-fits it).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class DeviceSheet:
    name: str
    peak_flops: float  # dense bf16
    memory_bytes: float
    mem_bw: float  # bytes/s
    match: tuple[str, ...]
    efficiency: float  # fraction of the peak a transformer's forward+backward reaches
    efficiency_source: str  # the published run it is fitted to (gradsync.planning.published)


_A100 = "fitted to torchtitan's Llama 3 8B on 64 A100s (58.2 % MFU)"
_H100 = "fitted to TorchTitan's Llama 3.1 8B on 8 H100s at a 500 W limit (35.6 % MFU)"
DATASHEETS: dict[str, DeviceSheet] = {
    "a100-40gb": DeviceSheet("A100 40GB", 312e12, 40 * GB, 1.555e12, ("A100", "40GB"), 0.59, _A100 + " (80GB part)"),
    "a100-80gb": DeviceSheet("A100 80GB", 312e12, 80 * GB, 2.039e12, ("A100", "80GB"), 0.59, _A100),
    "h100": DeviceSheet("H100 SXM", 989e12, 80 * GB, 3.35e12, ("H100",), 0.36, _H100 + "; a 700 W part runs faster"),
    "h200": DeviceSheet(
        "H200 SXM", 989e12, 141 * GB, 4.8e12, ("H200",), 0.36, "the H100's (same compute, no published run); " + _H100
    ),
}


def datasheet_for(device_name: str) -> DeviceSheet | None:
    """The datasheet of a device torch names ``device_name`` (e.g. "NVIDIA H200"), if known."""
    for sheet in DATASHEETS.values():
        if all(word in device_name for word in sheet.match):
            return sheet
    return None
