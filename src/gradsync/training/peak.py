"""Peak FLOP/s of this worker, measured (a short matmul benchmark, cached) rather than assumed.

MFU = achieved model FLOP/s / peak FLOP/s. No accelerator's peak is hard-coded: the peak is the
best dense-matmul rate this worker reaches with its thread count and precision, cached per
(device, threads, dtype) in the gradsync cache folder. ``train.peak_tflops`` overrides it (e.g.
with a datasheet number).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gradsync.core.files import cache_dir, write_cache

if TYPE_CHECKING:
    from gradsync.core.config import Config


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Best achieved FLOP/s of an n x n matmul over a few timed repetitions."""
    n = 4096 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    reps = 4
    while True:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        best = max(best, 2.0 * n**3 * reps / dt)
        if time.perf_counter() > deadline:
            return best


def worker_peak_flops(cfg: Config, device: torch.device, local_workers: int, fresh: bool = False) -> float:
    """Per-worker peak FLOP/s for MFU: ``train.peak_tflops`` if given, else measured (cached) for
    the run's precision and this worker's thread count; ``fresh`` measures again (calibrate)."""
    if cfg.train.peak_tflops > 0:
        return cfg.train.peak_tflops * 1e12
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
    return peak_flops(device, dtype, cfg.parallel.threads_per_worker(local_workers), fresh)


def peak_flops(device: torch.device, dtype: torch.dtype, threads: int, fresh: bool = False) -> float:
    """The matmul peak of ``threads`` threads (cached per device, dtype, threads and torch).

    One measurement taken while the machine was busy would stay wrong for good (every later MFU
    too high), so the peak is the best of several rounds; it must reach at least half the
    one-thread rate (more threads are never slower on an idle machine), else it is measured again
    and, failing that, the one-thread rate is used and nothing is cached; a cached value is
    checked on every use against a quick one-thread measurement (0.1 s) and measured afresh when
    it falls below half of it."""
    key = f"{device_name(device)}|{dtype}|threads={threads}|torch={torch.__version__}"
    path = cache_dir() / "peak_flops.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    cached = table.get(key)
    if (
        isinstance(cached, (int, float))
        and not fresh
        and (device.type == "cuda" or threads == 1 or cached >= 0.5 * _with_threads(1, device, dtype, 0.1))
    ):
        return float(cached)
    # the one-thread rate a many-thread peak must reach half of (one thread is its own yardstick)
    one = _with_threads(1, device, dtype, 0.2) if device.type != "cuda" and threads > 1 else 0.0
    value = 0.0
    for _ in range(2):
        value = max(value, _with_threads(threads, device, dtype, 0.5))
        if value >= 0.5 * one:
            break
    if value < 0.5 * one:  # far below one thread's rate: the machine is busy; use one thread's, uncached
        return one
    table[key] = value
    write_cache(path, json.dumps(table, indent=1).encode())
    return value


def _with_threads(threads: int, device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return max(measure_matmul_flops(device, dtype, seconds / 3) for _ in range(3))
    finally:
        torch.set_num_threads(old)
