"""``gradsync calibrate``: measure what the cost model needs, on this machine and process group.

Run like ``gradsync train`` (same launcher, same flags: ``--nproc``, ``--nnodes``, the model,
sequence length, micro-batch, precision), every worker measures, and rank 0 writes a JSON profile:

* per collective (all-reduce, reduce-scatter, all-gather, broadcast): the time of each message
  size from 4 KiB to ``--max-mb`` (trimmed mean of many operations, each the slowest rank's; see
  :func:`measure_collectives`), and latency alpha and inverse
  bandwidth beta fitted to the ring formulas by least squares on relative error, with the fit's
  residual;
* the model's forward and backward time at the configured micro-batch (all workers computing at
  once, as in training) and the FLOP/s that achieves;
* the optimizer update (clipping + step + zeroing) per parameter, and one element-wise pass per
  element (prices casts and error feedback);
* this worker's matmul peak (for MFU).

``gradsync plan --device PROFILE.json`` and ``gradsync train --strategy auto`` read the profile.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from gradsync.core.args import ArgParser
from gradsync.core.config import Config
from gradsync.core.files import atomic_write_bytes
from gradsync.core.ring import OPS, ring_factors
from gradsync.model.compilation import compile_per_block
from gradsync.optim.factory import optimizer_factory
from gradsync.parallel.grad_paths.quantize import codec_work
from gradsync.planning.costmodel import CostModelError
from gradsync.runtime.dist import Comm, DistEnv
from gradsync.tasks import Task, build_task
from gradsync.training.peak import device_name, worker_peak_flops

# all-to-all is priced with the all-gather's link (same bytes per hop): not measured, to keep calibration short
MEASURED_OPS = tuple(op for op in OPS if op != "all_to_all")


def message_sizes(max_mb: float, min_bytes: int = 4096) -> list[int]:
    """4 KiB, 16 KiB, ... (powers of 4) up to ``max_mb`` MiB."""
    out, n = [], min_bytes
    while n <= max_mb * 2**20:
        out.append(n)
        n *= 4
    return out


def fit_alpha_beta(points: Sequence[tuple[float, float]], op: str, p: int) -> dict[str, float]:
    """Fit time = f_a * alpha + f_b * n * beta (ring factors of ``op`` at ``p`` ranks) to
    ``points`` of (bytes, seconds), minimising the squared *relative* error so that 4 KiB and
    256 MiB messages count alike. Returns alpha, beta and the RMS relative residual."""
    if len(points) < 2:
        raise CostModelError("fitting alpha and beta needs at least two message sizes")
    fb, fa = ring_factors(op, p)
    if fb == 0:
        raise CostModelError("a world of one rank has no collectives to fit")
    # weighted least squares of t = a + b*n with weights 1/t
    sw = swn = swnn = swt = swnt = 0.0
    for n, t in points:
        w = 1.0 / (t * t)
        sw, swn, swnn, swt, swnt = sw + w, swn + w * n, swnn + w * n * n, swt + w * t, swnt + w * n * t
    det = sw * swnn - swn * swn
    a = (swnn * swt - swn * swnt) / det
    b = (sw * swnt - swn * swt) / det
    if a < 0:  # latency cannot be negative: refit the bandwidth alone
        a, b = 0.0, swnt / swnn
    b = max(b, 1e-18)
    resid = math.sqrt(statistics.fmean(((a + b * n) / t - 1) ** 2 for n, t in points))
    return {"alpha_s": a / fa, "beta_s_per_byte": b / fb, "residual": resid}


# ---------------------------------------------------------------------------------------------
# Measuring (on every worker)


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def _slowest(times: Sequence[float]) -> list[float]:
    """Each of ``times`` replaced by its maximum over the ranks (a synchronous step waits for the
    slowest); unchanged in a world of one."""
    t = torch.tensor(list(times), dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _collective(comm: Any, op: str, buf: Any, chunk: Any) -> Callable[[], None]:
    """One ``op`` on ``buf`` (the full buffer) / ``chunk`` (this rank's part)."""

    def run() -> None:
        if op == "all_reduce":
            comm.all_reduce(buf)
        elif op == "reduce_scatter":
            comm.reduce_scatter(chunk, buf)
        elif op == "all_gather":
            comm.all_gather(buf, chunk)
        else:
            comm.broadcast(buf)

    return run


def trimmed_mean(values: Sequence[float], cut: float = 0.1) -> float:
    """Mean of ``values`` without the lowest and highest ``cut`` fraction of them."""
    v = sorted(values)
    k = int(len(v) * cut)
    return statistics.fmean(v[k : len(v) - k] or v)


def measure_collectives(
    comm: Any,
    sizes: Sequence[int],
    device: Any,
    sync: Callable[[], None],
    budget_s: float = 1.0,
    rounds: int = 4,
    min_ops: int = 6,
    max_ops: int = 400,
) -> dict[str, list[tuple[int, float]]]:
    """Time of each collective and size: every operation is timed on its own, its time is the
    slowest rank's, and the estimate is the 10%-trimmed mean over ``min_ops`` ... ``max_ops``
    operations (about ``budget_s`` seconds of them), taken in ``rounds`` interleaved passes over
    all collectives and sizes.

    Why this estimator: on a busy host a share of operations wait for a scheduler tick (on a
    2-core box up to a third of 4 KiB all-reduces take 4 ms instead of 0.4 ms), and that share
    drifts over seconds. Training pays the *mean* over many operations, tails included, so the
    mean is what the cost model needs; trimming the extremes keeps it from following one stall;
    hundreds of operations make it repeatable; and interleaving makes a slow phase of the machine
    touch every size alike instead of bending the line that alpha and beta are fitted to."""
    p = comm.world_size
    runs: dict[tuple[str, int], Callable[[], None]] = {}
    for nbytes in sizes:
        n = max(p, nbytes // 4 // p * p)
        buf, chunk = torch.ones(n, device=device), torch.ones(n // p, device=device)
        for op in MEASURED_OPS:
            runs[op, 4 * n] = _collective(comm, op, buf, chunk)
    per_round: dict[tuple[str, int], int] = {}
    for key, run in runs.items():
        run()  # warm up (connections, buffers)
        dist.barrier()
        # every rank must run the same number of operations: size it from a shared probe
        probe = max(_slowest([_timed(run, sync) for _ in range(2)]))
        count = min(max_ops, max(min_ops, int(budget_s / max(probe, 1e-9))))
        per_round[key] = max(1, math.ceil(count / rounds))
    times: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            dist.barrier()
            times[key] += [_timed(run, sync) for _ in range(per_round[key])]
    out: dict[str, list[tuple[int, float]]] = {op: [] for op in MEASURED_OPS}
    for (op, nbytes), ts in times.items():
        out[op].append((nbytes, trimmed_mean(_slowest(ts))))
    return out


def measure_compute(cfg: Config, task: Task, device: Any, sync: Callable[[], None], reps: int = 10) -> dict[str, float]:
    """Forward and backward of the task's model on its first train examples at the configured
    micro-batch,
    the optimizer update (clip + step + zero) per parameter, one element-wise pass per element,
    and, with several workers, what communication overlapped with compute costs.

    Every worker computes at once, as in training, and each repetition counts the slowest rank's
    time (a synchronous step waits for it); the median over repetitions resists the outliers of
    a shared machine."""
    multi = dist.is_initialized() and dist.get_world_size() > 1

    def barrier() -> None:
        if multi:
            dist.barrier()

    torch.manual_seed(0)
    model = task.build_model().to(device)
    if cfg.train.compile:  # timed as training runs it; the first repetitions, dropped, compile
        compile_per_block(model)
    flops_per_token = task.flops_per_sample(model) / task.tokens_per_sample
    opt = optimizer_factory(cfg.optim)(model)
    b = cfg.train.micro_batch
    ids = np.arange(b) % len(task.train_examples())
    batch = tuple(x.to(device) for x in task.train_examples().batch(ids, ids, True))
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)  # what travels and is updated
    cast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if cfg.train.precision == "bf16" else contextlib.nullcontext()
    )
    fwd, bwd, upd = [], [], []
    for _ in range(reps + 2):
        barrier()
        sync()
        t0 = time.perf_counter()
        with cast:
            loss = task.loss(model, batch)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=False)
        sync()
        t3 = time.perf_counter()
        f, g, u = _slowest([t1 - t0, t2 - t1, t3 - t2])
        fwd.append(f)
        bwd.append(g)
        upd.append(u)
    big = torch.ones(1 << 22, device=device)
    # medians of many repetitions: on a shared machine a few take twice as long (5 repetitions of
    # the codec gave 1.6e-8 and 2.9e-8 s per element in two calibrations of the same setting)
    ew = statistics.median(_timed(lambda: big.mul_(1.0000001), sync) for _ in range(15)) / big.numel()
    vec = torch.randn(1 << 20, device=device)
    codec_work(vec, 8)  # warm the allocator
    qe = statistics.median(_timed(lambda: codec_work(vec, 8), sync) for _ in range(15)) / vec.numel()
    out = {
        "forward_s": statistics.median(fwd[2:]),
        "backward_s": statistics.median(bwd[2:]),
        "optimizer_s_per_param": statistics.median(upd[2:]) / n_params,
        "elementwise_s_per_elem": ew,
        "quantize_s_per_elem": qe,
        "flops_per_token": flops_per_token,
        "tokens": b * task.tokens_per_sample,
        "n_params": n_params,
        "overlap_penalty": 0.0,
    }
    if multi:
        out["overlap_penalty"] = _overlap_penalty(model, lambda: task.loss(model, batch), cast, sync, barrier)
    return out


def _overlap_penalty(
    model: Any,
    loss_fn: Callable[[], Any],
    cast: Any,
    sync: Callable[[], None],
    barrier: Callable[[], None],
    reps: int = 15,
) -> float:
    """Seconds a step loses per second of communication run *behind* compute: an all-reduce of
    the model's gradient size is timed alone, forward+backward alone, then both at once.
    0 = communication hides perfectly (a NIC or NVLink moves the bytes); 1 or more = it
    competes for the same cores (gloo over loopback on a busy CPU)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    buf = torch.ones(sum(p.numel() for p in trainable), device=trainable[0].device)

    def compute() -> None:
        with cast:
            loss = loss_fn()
        loss.backward()
        model.zero_grad(set_to_none=False)

    def timed(with_comm: bool, with_compute: bool) -> float:
        barrier()
        sync()
        t0 = time.perf_counter()
        work = dist.all_reduce(buf, async_op=True) if with_comm else None
        if with_compute:
            compute()
        if work is not None:
            work.wait()
        sync()
        return _slowest([time.perf_counter() - t0])[0]

    # interleaved, so that a slow phase of a shared machine hits the three alike
    samples = [[timed(c, k) for c, k in ((True, False), (False, True), (True, True))] for _ in range(reps)]
    tm, tc, both = (statistics.median(column) for column in zip(*samples))
    return max(0.0, (both - max(tc, tm)) / min(tc, tm))


def _memory_bytes(device: Any) -> float:
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16e9


def run_worker(cfg: Config, env: DistEnv, out: Path, max_mb: float) -> dict[str, Any]:
    """Measure on this worker (collectively with the others); rank 0 writes and returns the profile."""
    torch.set_num_threads(cfg.parallel.threads_per_worker(env.local_world_size))

    def sync() -> None:
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)

    comm = Comm(env, timeout_s=cfg.parallel.timeout_s)
    task = build_task(cfg)
    compute = measure_compute(cfg, task, env.device, sync)
    coll_points = measure_collectives(comm, message_sizes(max_mb), env.device, sync) if env.world_size > 1 else {}
    profile: dict[str, Any] = {
        "version": 1,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": socket.gethostname(),
        "device": device_name(env.device),
        "backend": env.backend,
        "world_size": env.world_size,
        "nnodes": cfg.parallel.nnodes,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "peak_flops": worker_peak_flops(cfg, env.device, env.local_world_size, fresh=True),  # and re-cache it
        "memory_bytes": _memory_bytes(env.device),
        "optimizer": cfg.optim.name,
        "optimizer_s_per_param": compute.pop("optimizer_s_per_param"),
        "elementwise_s_per_elem": compute.pop("elementwise_s_per_elem"),
        "quantize_s_per_elem": compute.pop("quantize_s_per_elem"),
        "compute": {
            "task": task.name,
            "model": {
                "preset": cfg.model.preset,
                "n_layer": cfg.model.n_layer,
                "n_head": cfg.model.n_head,
                "n_embd": cfg.model.n_embd,
                "vocab": getattr(task, "vocab_size", None),
            },
            "seq_len": cfg.data.seq_len,
            "micro_batch": cfg.train.micro_batch,
            "precision": cfg.train.precision,
            **compute,
        },
        "collectives": {
            op: {**fit_alpha_beta(pts, op, env.world_size), "points": pts} for op, pts in coll_points.items()
        },
    }
    if env.is_main:
        atomic_write_bytes(out, json.dumps(profile, indent=1).encode())
    return profile


def worker_job(cfg: Config, env: DistEnv, argv: Sequence[str]) -> None:
    """The job ``gradsync calibrate`` starts on every worker (through :mod:`gradsync.runtime.worker`):
    ``--out PROFILE.json --max-mb M``."""
    p = ArgParser(prog="gradsync calibrate (worker)")
    p.add_argument("--out", required=True)
    p.add_argument("--max-mb", type=float, default=256.0)
    ns = p.parse_args(argv)
    run_worker(cfg, env, Path(ns.out), ns.max_mb)
