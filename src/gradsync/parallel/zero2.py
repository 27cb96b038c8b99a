"""ZeRO-2: optimizer state and gradients sharded (Rajbhandari et al., SC 2020, stage P_os+g).

Parameters are grouped into buckets (reverse registration order, as in ``bucketed``), padded to a
multiple of the world size. During backward each parameter's gradient is copied into its bucket's
buffer the moment it is accumulated and then released; a full bucket is reduce-scattered
asynchronously (in bucket order, overlapped with the rest of backward), and the rank adds the
chunk it receives to its persistent gradient shard. The buffer is freed when the collective
completes, so a rank holds 4Ψ/N bytes of gradients plus the buckets in flight. With gradient
accumulation every micro-step is reduce-scattered (as DeepSpeed's stage 2 does): communication
grows with the number of micro-steps, memory does not. After the sharded update the parameters
are all-gathered, bucket by bucket.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
import torch.nn as nn

from gradsync.parallel.bucketed import plan_buckets
from gradsync.parallel.sharding import FlatUnit, ZeroStrategy, bind_params


class Zero2Strategy(ZeroStrategy):
    name = "zero2"

    def wrap(self, model: nn.Module) -> nn.Module:
        params = [p for p in model.parameters() if p.requires_grad][::-1]
        mb = 1024 * 1024
        groups = plan_buckets(params, int(self.cfg.first_bucket_mb * mb), int(self.cfg.bucket_mb * mb))
        world, rank = self.comm.world_size, self.comm.env.rank
        self.units = [FlatUnit(i, g, world, rank) for i, g in enumerate(groups)]
        self.names = {id(p): n for n, p in model.named_parameters()}
        self._where: dict[int, tuple[FlatUnit, int]] = {}
        self.param_flats = []
        for u in self.units:
            flat = torch.zeros(u.padded, dtype=u.params[0].dtype, device=u.params[0].device)
            bind_params(u, flat)
            self.param_flats.append(flat)
            for p, off in zip(u.params, u.offsets):
                self._where[id(p)] = (u, off)
                p.register_post_accumulate_grad_hook(self._on_grad_ready)
        self.param_chunks = [u.my_chunk(f) for u, f in zip(self.units, self.param_flats)]
        shard = torch.zeros(sum(u.chunk for u in self.units), dtype=params[0].dtype, device=params[0].device)
        self.grad_chunks, at = [], 0
        for u in self.units:
            self.grad_chunks.append(shard[at:at + u.chunk])
            at += u.chunk
        self._buffers: dict[int, torch.Tensor] = {}
        self._pending: list[set[int]] = []
        self._inflight: list[tuple[FlatUnit, torch.Tensor, torch.Tensor, object]] = []
        self._next_launch = 0
        self._active = False
        self._synced = False
        return model

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        self._pending = [{id(p) for p in u.params} for u in self.units]
        self._next_launch = 0
        self._active = True
        try:
            yield
        finally:
            self._active = False
        self._drain()
        self._synced = last

    def _buffer(self, u: FlatUnit) -> torch.Tensor:
        if u.index not in self._buffers:
            self._buffers[u.index] = torch.zeros(u.padded, dtype=u.params[0].dtype, device=u.params[0].device)
        return self._buffers[u.index]

    def _on_grad_ready(self, p: torch.Tensor) -> None:
        if not self._active:
            raise RuntimeError("zero2: backward ran outside strategy.micro_step(); its gradients would be lost")
        u, off = self._where[id(p)]
        assert p.grad is not None
        self._buffer(u)[off:off + p.numel()].copy_(p.grad.reshape(-1))
        p.grad = None  # the bucket holds it now
        self._pending[u.index].discard(id(p))
        while self._next_launch < len(self.units) and not self._pending[self._next_launch]:
            self._launch(self.units[self._next_launch])

    def _launch(self, u: FlatUnit) -> None:
        buf = self._buffer(u).div_(self.comm.world_size)
        out = torch.empty(u.chunk, dtype=buf.dtype, device=buf.device)
        work = self.comm.reduce_scatter(out, buf, async_op=True)
        self._inflight.append((u, buf, out, work))
        self._next_launch += 1
        self.sample_memory()  # buckets in flight: when gradient memory is highest

    def _drain(self) -> None:
        for u in self.units[self._next_launch:]:
            if self._pending[u.index]:
                missing = [self.names[i] for i in self._pending[u.index]]
                warnings.warn(f"zero2: no gradient this step for {', '.join(missing)}; they contribute zeros",
                              stacklevel=3)
            self._launch(u)
        for u, _, out, work in self._inflight:
            self.comm.wait(work)  # type: ignore[arg-type]
            self.grad_chunks[u.index].add_(out)
        self._inflight = []
        self._buffers = {}

    def finish_grad_sync(self) -> None:
        if not self._synced:
            raise RuntimeError("zero2: step() called without a micro_step(last=True)")
        self._synced = False

    def zero_grad(self) -> None:
        for g in self.grad_chunks:
            g.zero_()

    def after_update(self) -> None:
        self.gather_units(self.param_flats)

    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        held = super().holdings()
        held["grads"] += list(self._buffers.values()) + [out for _, _, out, _ in self._inflight]
        return held
