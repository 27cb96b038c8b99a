"""The process group and the collectives gradsync uses, counted.

:class:`DistEnv` says who this worker is (rank, world size, device, backend). :func:`init_distributed`
joins the group that torch's elastic agent (``gradsync train`` or ``torchrun``) describes in the
environment, or makes a world of one when there is none. :class:`Comm` is the only door to the
network for strategies: it counts the payload bytes of every collective and the wall time this
worker spends blocked on them, and every collective inherits the group's timeout, so a dead peer
is an error after ``parallel.timeout_s`` rather than a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from gradsync.core.errors import DistributedError, PeerFailed
from gradsync.core.ring import wire_bytes
from gradsync.runtime import timeline


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_backend(requested: str) -> tuple[str, torch.device]:
    """nccl on CUDA, gloo on CPU; ``requested`` may force one."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if requested == "nccl" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DistributedError("parallel.backend=nccl needs CUDA, and no GPU is visible; use gloo")
        torch.cuda.set_device(local_rank)
        return "nccl", torch.device("cuda", local_rank)
    return "gloo", torch.device("cpu")


def init_distributed(backend: str = "auto", timeout_s: float = 300.0) -> DistEnv:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
    ...), or create a one-process group when no launcher set them. ``backend`` is
    ``parallel.backend`` (auto, gloo, nccl); every collective fails after ``timeout_s``."""
    backend, device = choose_backend(backend)
    timeout = timedelta(seconds=timeout_s)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if not dist.is_initialized():
            dist.init_process_group(
                backend, timeout=timeout, rank=rank, world_size=world, store=_attempt_store(world, timeout)
            )
    else:
        rank, world = 0, 1
        if not dist.is_initialized():
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return DistEnv(rank, world, local_rank, local_world, device, backend)


def _attempt_store(world: int, timeout: timedelta) -> dist.Store | None:
    """Under torch's elastic agent with its own store (``gradsync train``'s standalone launch), a
    store whose keys are private to this restart attempt: the agent's store outlives a failed
    attempt, and gloo would otherwise read the dead workers' addresses from it and fail to
    connect. None (torch's env:// default) everywhere else."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False, timeout=timeout
    )
    return dist.PrefixStore(f"gradsync/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown(clean: bool = True) -> None:
    """Leave the process group. On a clean exit, wait for every rank first: a rank that tears its
    group down while a peer still works (rank 0 writing plots, say) can abort inside gloo. After an
    error, skip the barrier, which would only wait for a peer that may never come."""
    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


@dataclass
class CommStats:
    bytes: int = 0  # payload bytes this worker handed to collectives (its input tensors)
    wire_bytes: float = 0.0  # bytes this worker sends under ring algorithms (gradsync.core.ring)
    raw_bytes: int = 0  # payload the uncompressed gradient would have needed (0 = not compressing)
    blocked_s: float = 0.0  # wall time this worker waited on collectives
    calls: int = 0


# How gloo and NCCL report a peer that stalled, died or became unreachable.
_PEER_FAILURE = (
    "imed out",
    "Connection reset",
    "Connection closed",
    "Connection refused",
    "Broken pipe",
    "connectFullMesh",
    "was aborted",
    "Socket Timeout",
)

_all_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
# torch 2.13 deprecates reduce_scatter_tensor for reduce_scatter_single (same arguments);
# older torch has only the former.
_reduce_scatter_into = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class Comm:
    """Collectives over one process group, with byte and blocked-time accounting.

    ``stats.bytes`` counts each call's input (for an all-gather, this rank's contribution);
    ``stats.wire_bytes`` what the ring algorithm makes this rank send, the figure to compare
    across strategies: a reduce-scatter plus an all-gather cost what one all-reduce costs.

    ``stats.blocked_s`` is the time training waited for communication. On CPU (gloo) that is the
    host's wall time inside a collective or a wait. On CUDA (NCCL) the host does not wait — a
    wait makes the compute stream wait for the communication stream — so a CUDA event is recorded
    on the compute stream before and after each wait (and around each synchronous collective),
    and the time between them, read when the step's stats are taken, is how long the compute
    stream stood still: the same quantity, measured where it happens.
    """

    def __init__(self, env: DistEnv, group: dist.ProcessGroup | None = None, timeout_s: float = 300.0) -> None:
        self.env = env
        self.group = group
        self.timeout_s = timeout_s  # the group's collective timeout, for messages
        self._stats = CommStats()
        # in-flight async work -> (the collective's name for errors, its timeline event if recording)
        self._in_flight: dict[int, tuple[str, timeline.Event | None]] = {}
        self._label = ""  # what the next collectives are for, on a profiled timeline
        self._bytes = 0  # of the collective being issued (for the timeline)
        self._cuda = env.device.type == "cuda"
        self._events: list[tuple[Any, Any]] = []  # (before, after) on the compute stream, not yet read
        self._root = self  # where a subgroup's collectives are accounted

    def subgroup(self, group: dist.ProcessGroup) -> Comm:
        """Collectives over ``group`` (a subset of the ranks), accounted in this Comm's stats."""
        sub = Comm(self.env, group, self.timeout_s)
        sub._root = self._root
        return sub

    @property
    def stats(self) -> CommStats:
        return self._root._stats

    @property
    def world_size(self) -> int:
        return self.env.world_size if self.group is None else dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        """This rank's index in the group (its global rank for the whole world)."""
        return self.env.rank if self.group is None else dist.get_rank(self.group)

    def take_stats(self) -> CommStats:
        """Return the stats since the last call and start counting afresh (on CUDA, after the
        compute stream has passed the last wait recorded)."""
        root = self._root
        if root._events:
            root._events[-1][1].synchronize()
            root._stats.blocked_s += sum(a.elapsed_time(b) for a, b in root._events) / 1e3
            root._events.clear()
        s, root._stats = root._stats, CommStats()
        return s

    @contextlib.contextmanager
    def _blocked(self) -> Iterator[None]:
        """Account the time inside as blocked: host time on CPU, compute-stream time on CUDA."""
        if self._cuda:
            before = torch.cuda.Event(enable_timing=True)
            after = torch.cuda.Event(enable_timing=True)
            before.record()
            yield
            after.record()
            self._root._events.append((before, after))
            return
        t0 = time.perf_counter()
        yield
        self.stats.blocked_s += time.perf_counter() - t0

    def count(self, op: str, t: torch.Tensor) -> None:
        """Account one collective of ``t`` (also used for collectives that torch issues itself)."""
        n = t.numel() * t.element_size()
        self._bytes = n
        self.stats.bytes += n
        self.stats.wire_bytes += wire_bytes(op, n, self.world_size)
        self.stats.calls += 1

    @contextlib.contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        """Turn a collective that failed because a peer stalled, died or lost its network into
        one line naming this rank, the collective and the timeout."""
        try:
            yield
        except RuntimeError as e:
            if not any(sign in str(e) for sign in _PEER_FAILURE):
                raise  # a bug (a shape, a dtype), not the network: keep the traceback
            first = str(e).strip().splitlines()[0]
            raise PeerFailed(
                f"rank {self.env.rank}: {op} failed while waiting up to {self.timeout_s:.0f}s for the other "
                f"ranks: a peer stalled, died or lost its network ({first[:200]})"
            ) from None

    @contextlib.contextmanager
    def labelled(self, label: str) -> Iterator[None]:
        """Name the collectives issued inside (``bucket 3``) on a profiled timeline."""
        before, self._label = self._label, label
        try:
            yield
        finally:
            self._label = before

    def _run(self, op: str, launch: Callable[[], Any], async_op: bool) -> dist.Work | None:
        rec = timeline.current()
        if async_op:
            start, stamp = (rec.now(), rec.stamp()) if rec else (0.0, None)
            with self._guard(op):
                work = launch()
            ev = self._record_async(rec, work, self._label or op, op, start, stamp) if rec is not None else None
            self._in_flight[id(work)] = (op, ev)
            return work
        with self._blocked(), self._guard(op):
            if rec is None:
                launch()
            else:
                with timeline.span(self._label or op, "comm", op=op, bytes=self._bytes, sync=True):
                    launch()
        return None

    def _record_async(
        self, rec: timeline.Recorder, work: dist.Work, name: str, op: str, start: float, stamp: Any
    ) -> timeline.Event:
        """A collective in flight from ``start`` until its future completes (on the communication
        thread; where a backend gives no future, until the wait returns). On a GPU the callback's
        stream waits for the collective, so a stamp taken there is when it finished on the device."""
        ev = rec.add(name, "comm", start, start, op=op, bytes=self._bytes, done=False)
        rec.on_device(ev, start=stamp)

        def done(_: Any) -> None:
            if not ev.detail["done"]:
                ev.end, ev.detail["done"] = rec.now(), True
                rec.on_device(ev, end=rec.stamp())

        with contextlib.suppress(RuntimeError):  # no future for this backend or op: the wait ends it
            work.get_future().add_done_callback(done)
        return ev

    def all_reduce(self, t: torch.Tensor, async_op: bool = False) -> dist.Work | None:
        """Sum ``t`` in place over all ranks; with ``async_op`` return the work to :meth:`wait` on."""
        self.count("all_reduce", t)
        return self._run("all_reduce", lambda: dist.all_reduce(t, group=self.group, async_op=async_op), async_op)

    def reduce_scatter(self, out: torch.Tensor, inp: torch.Tensor, async_op: bool = False) -> dist.Work | None:
        """Sum ``inp`` over ranks; rank r receives the r-th of ``world_size`` equal chunks in ``out``."""
        self.count("reduce_scatter", inp)
        return self._run(
            "reduce_scatter", lambda: _reduce_scatter_into(out, inp, group=self.group, async_op=async_op), async_op
        )

    def all_gather(self, out: torch.Tensor, inp: torch.Tensor, async_op: bool = False) -> dist.Work | None:
        """Concatenate every rank's ``inp`` (equal sizes) into ``out``, in rank order."""
        self.count("all_gather", inp)
        return self._run(
            "all_gather", lambda: _all_gather_into(out, inp, group=self.group, async_op=async_op), async_op
        )

    def all_to_all(self, out: torch.Tensor, inp: torch.Tensor, async_op: bool = False) -> dist.Work | None:
        """Rank r receives, as the s-th of ``world_size`` equal chunks of ``out``, the r-th chunk of
        rank s's ``inp``."""
        self.count("all_to_all", inp)
        return self._run(
            "all_to_all", lambda: dist.all_to_all_single(out, inp, group=self.group, async_op=async_op), async_op
        )

    def broadcast(self, t: torch.Tensor, src: int = 0) -> None:
        self.count("broadcast", t)
        self._run("broadcast", lambda: dist.broadcast(t, src=src, group=self.group), False)

    def wait(self, work: dist.Work) -> None:
        op, ev = self._in_flight.pop(id(work), ("collective", None))
        with self._blocked(), self._guard(op):
            if ev is None:
                work.wait()
            else:
                with timeline.span(ev.name, "wait"):
                    work.wait()
                rec = timeline.current()
                if rec is not None and not ev.detail["done"]:  # no future told us sooner
                    ev.end, ev.detail["done"] = rec.now(), True
                    rec.on_device(ev, end=rec.stamp())

    def barrier(self) -> None:
        """Every rank of the group has reached this point (bookkeeping: not counted)."""
        if self.world_size > 1:
            with self._guard("barrier"):
                dist.barrier(group=self.group)

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        with self._guard("all_gather_object"):
            dist.all_gather_object(out, obj, group=self.group)
        return out

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        """Every rank's ``obj`` on rank ``dst`` (None elsewhere)."""
        out: list[Any] | None = [None] * self.world_size if self.env.rank == dst else None
        with self._guard("gather_object"):
            dist.gather_object(obj, out, dst=dst, group=self.group)
        return out

    def sum_scalars(self, values: list[float]) -> list[float]:
        """Sum a few floats over ranks (bookkeeping: not counted in the gradient stats)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.env.device)
        with self._guard("all_reduce"):
            dist.all_reduce(t, group=self.group)
        return t.tolist()


def per_dtype_flat(tensors: list[torch.Tensor], collective: Callable[[torch.Tensor], Any]) -> None:
    """Run ``collective`` in place on one flat copy of ``tensors`` per dtype, then copy the result
    back into them: one collective per dtype instead of one per tensor."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            collective(flat)
            at = 0
            for t in group:
                t.copy_(flat[at : at + t.numel()].view_as(t))
                at += t.numel()


def state_checksum(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, in order: equal iff the replicas are bitwise equal."""
    h = hashlib.sha256()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def replicate(module: torch.nn.Module, comm: Comm) -> None:
    """Broadcast parameters and buffers from rank 0, then verify every rank holds the same bits."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            comm.broadcast(t.data, src=0)
    verify_replicas(module, comm)


def verify_replicas(module: torch.nn.Module, comm: Comm) -> None:
    sums = comm.all_gather_object(state_checksum(module))
    bad = [r for r, s in enumerate(sums) if s != sums[0]]
    if bad:
        raise DistributedError(f"model replicas differ from rank 0 on rank(s) {bad} (parameter checksum mismatch)")
