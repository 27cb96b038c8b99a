"""Helpers for tests and benchmarks: real multi-process gloo worlds, run comparisons, and
network namespaces (:mod:`gradsync.testing.netns`).

:func:`run_world` starts ``world_size`` fresh Python processes, sets the same environment
variables torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, ...), runs ``fn(rank, *args)`` in each and
returns their results. Any failing rank fails the call with its traceback; a world that does not
finish within ``timeout`` is killed and reported, so a bug that hangs a collective fails a test
instead of hanging the suite. Where the platform has it, the processes fork from a server that
imported torch and the trainer once (``forkserver``) rather than each spawning a bare interpreter:
the import costs a process 1.5 s of CPU, more than most test worlds then spend training.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue as queue_mod
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradsync.core.config import build_config
from gradsync.runtime.dist import shutdown
from gradsync.training.trainer import Trainer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(
    rank: int,
    world: int,
    port: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    queue: mp.Queue[tuple[int, bool, Any]],
    environ: dict[str, str],
) -> None:
    os.environ.clear()  # the caller's environment now, not the fork server's when it started
    os.environ.update(environ)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)

    try:
        buf = io.BytesIO()  # tensors travel as bytes: no shared memory that dies with the child
        torch.save(fn(rank, *args), buf)
        queue.put((rank, True, buf.getvalue()))
    except BaseException:  # report everything, including SystemExit, to the parent
        queue.put((rank, False, traceback.format_exc()))
        return  # no teardown: peers may be stuck in a collective; the parent kills this world
    shutdown(clean=True)


def _context() -> Any:
    """``forkserver`` with torch and the trainer imported in the server, else ``spawn``. Both start
    each process without the caller's threads or state (``fork`` would copy them)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["gradsync.testing"])  # read when the server starts, once
    return ctx


def run_world(world_size: int, fn: Callable[..., Any], *args: Any, timeout: float = 240.0) -> list[Any]:
    """Run ``fn(rank, *args)`` on ``world_size`` new processes; return results by rank."""
    ctx = _context()
    queue = ctx.Queue()
    port = free_port()
    environ = dict(os.environ)
    procs = [
        ctx.Process(target=_entry, args=(r, world_size, port, fn, args, queue, environ), daemon=True)
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors: list[str] = []
    try:
        for _ in range(world_size):
            try:
                rank, ok, value = queue.get(timeout=timeout)
            except queue_mod.Empty:
                raise TimeoutError(
                    f"world of {world_size} did not finish within {timeout:.0f}s (finished ranks: {sorted(results)})"
                ) from None
            if ok:
                results[rank] = torch.load(io.BytesIO(value), weights_only=False)
            else:
                errors.append(f"rank {rank} failed:\n{value}")
                break
        if errors:  # a peer's "connection closed" often follows the first failure: collect the rest
            errors += _other_failures(queue, procs, reported={*results, rank})
    finally:
        for p in procs:
            p.join(timeout=5 if not errors else 0.5)
            if p.is_alive():
                p.kill()
    if errors:
        raise RuntimeError("\n".join(errors))
    return [results[r] for r in range(world_size)]


def _other_failures(queue: Any, procs: list[Any], reported: set[int], wait_s: float = 3.0) -> list[str]:
    """After one rank failed: the other ranks' reports that arrive within ``wait_s``, and every rank
    that died without one (a crash: its exit code or signal), so the cause is not hidden behind
    the first rank to notice it."""
    out = []
    deadline = time.monotonic() + wait_s
    while len(reported) < len(procs):
        try:
            rank, ok, value = queue.get(timeout=0.1)
        except queue_mod.Empty:
            alive = any(p.is_alive() for r, p in enumerate(procs) if r not in reported)
            if not alive or time.monotonic() > deadline:
                break
            continue
        reported.add(rank)
        if not ok:
            out.append(f"rank {rank} failed too:\n{value}")
    for r, p in enumerate(procs):
        if r not in reported and not p.is_alive() and p.exitcode not in (None, 0):
            how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
            out.append(f"rank {r} died without a report ({how})")
    return out


def train_and_collect(rank: int, config: dict[str, dict[str, Any]], out: str | None = None) -> dict[str, Any]:
    """Train with ``config`` (nested dict, as ``Config.to_dict()``) in this world; rank 0 returns
    the final parameters (and writes them to ``out`` when given) plus the logged history."""
    cfg = build_config(config)
    trainer = Trainer(cfg)
    result = trainer.fit()
    params = {k: v.detach().cpu().clone() for k, v in trainer.strategy.full_model_state().items()}
    if out and rank == 0:
        torch.save(params, Path(out))
    return {
        "params": params if rank == 0 else None,
        "history": result.history,
        "val_loss": result.val_loss,
        "entropy_rate": trainer.task.entropy_rate,
        "metrics": result.metrics,
    }


def train_each(rank: int, configs: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """:func:`train_and_collect` for each config in turn, in this one world (saves a world per run)."""
    return [train_and_collect(rank, c) for c in configs]


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max |a - b| over all tensors, divided by the parameter scale max |a|: how the equivalence
    tests compare two runs' parameters."""
    scale = max(t.abs().max().item() for t in a.values())
    return max((a[k] - b[k]).abs().max().item() for k in a) / scale
