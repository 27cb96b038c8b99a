"""Gradient compression on the bucketed path: each bucket's all-reduce is replaced by a reducer
(one per compressor of :mod:`gradsync.core.catalog`).

A reducer is called twice per bucket and step: :meth:`Reducer.start` from the backward hook when
the bucket is full (it launches the asynchronous part of the communication) and
:meth:`Reducer.finish` before the optimizer step (it waits, finishes, and leaves the *average* of
the ranks' gradients, or its compressed estimate, in ``bucket.flat``). Every reducer counts the
payload the uncompressed gradient would have needed (``comm.stats.raw_bytes``), so the trainer
reports the compression ratio next to the bytes actually sent.

- ``none``: all-reduce in fp32, averaged before the sum (the plain ``bucketed`` path).
- ``fp16`` / ``bf16``: the gradient is divided by the world size in fp32, cast, summed in the low
  precision (half the bytes), and cast back.
- ``powersgd:rank=r``: PowerSGD (Vogels, Karimireddy & Jaggi, NeurIPS 2019), rank-r factors P, Q
  with error feedback and warm-started Q; matrices only (viewed as shape[0] x rest), tensors with
  fewer than ``min_numel`` elements and vectors travel uncompressed in the same all-reduce as P.
- ``topk:ratio=ρ``: each rank sends the ρ·n entries of largest magnitude (values and int32
  indices, all-gathered) of gradient + residual; the residual keeps the rest (error feedback,
  Stich et al. NeurIPS 2018; Lin et al. ICLR 2018).
- ``int8`` / ``int4``: gradient + residual in 8 or 4 bits per element with an fp32 scale per 128
  (:mod:`gradsync.parallel.grad_paths.quantize`), averaged in two stages that move 1/p of the codes per rank
  each (all-to-all; each rank averages and re-encodes its chunk; all-gather), every encoding's
  error kept for the next step (error feedback): :class:`~gradsync.parallel.grad_paths.quantized_mean.QuantizedMean`,
  streaming DiLoCo's pseudo-gradient path, per bucket. A quarter (an eighth) of the fp32 bytes;
  every rank decodes the same bytes, so replicas stay identical.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch

from gradsync.core import catalog
from gradsync.core.spec import Spec
from gradsync.parallel.grad_paths.quantized_mean import InFlight, QuantizedMean
from gradsync.parallel.layout import Bucket
from gradsync.runtime.dist import Comm


class Reducer(ABC):
    """Averages one bucket's gradient over the ranks, possibly compressed."""

    compresses = True

    def __init__(self, spec: Spec, comm: Comm) -> None:
        self.spec = spec
        self.comm = comm

    @abstractmethod
    def start(self, b: Bucket) -> Any:
        """Launch the bucket's communication (asynchronously where possible); return a handle."""

    @abstractmethod
    def finish(self, b: Bucket, handle: Any) -> None:
        """Wait for ``handle`` and leave the averaged gradient in ``b.flat``."""

    def _raw(self, b: Bucket) -> None:
        self.comm.stats.raw_bytes += b.flat.numel() * b.flat.element_size()

    def state_dict(self) -> dict[str, Any]:
        """This rank's compressor state (error-feedback residuals, warm-start factors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (stateless by default)
        """Restore what :meth:`state_dict` returned."""


class AllReduceMean(Reducer):
    compresses = False

    def start(self, b: Bucket) -> Any:
        b.flat.div_(self.comm.world_size)  # average before the sum, off the critical path after it
        return self.comm.all_reduce(b.flat, async_op=True)

    def finish(self, b: Bucket, handle: Any) -> None:
        self.comm.wait(handle)


class LowPrecision(Reducer):
    def __init__(self, spec: Spec, comm: Comm) -> None:
        super().__init__(spec, comm)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[spec.name]

    def start(self, b: Bucket) -> Any:
        self._raw(b)
        low = (b.flat / self.comm.world_size).to(self.dtype)
        return low, self.comm.all_reduce(low, async_op=True)

    def finish(self, b: Bucket, handle: Any) -> None:
        low, work = handle
        self.comm.wait(work)
        b.flat.copy_(low)


class PowerSGD(Reducer):
    def __init__(self, spec: Spec, comm: Comm) -> None:
        super().__init__(spec, comm)
        self.rank = int(spec["rank"])
        self.min_numel = int(spec["min_numel"])
        self.warm_start = bool(spec["warm_start"])
        self.errors: dict[tuple[int, int], torch.Tensor] = {}
        self.qs: dict[tuple[int, int], torch.Tensor] = {}

    def _layout(self, b: Bucket) -> tuple[list[tuple[int, int, int, int]], list[int]]:
        """(param index, n, m, r) for the compressed matrices of the bucket, and the indices of
        the parameters sent as they are."""
        mats, plain = [], []
        for i, p in enumerate(b.params):
            if p.dim() >= 2 and p.numel() >= self.min_numel:
                n = p.shape[0]
                m = p.numel() // n
                mats.append((i, n, m, min(self.rank, n, m)))
            else:
                plain.append(i)
        return mats, plain

    def _q(self, key: tuple[int, int], m: int, r: int, like: torch.Tensor) -> torch.Tensor:
        if key not in self.qs or not self.warm_start:
            # the same Q on every rank: seeded by the bucket and the parameter's place in it
            g = torch.Generator().manual_seed(1_000_003 * key[0] + key[1])
            self.qs[key] = torch.randn(m, r, generator=g).to(like)
        return self.qs[key]

    def start(self, b: Bucket) -> Any:
        self._raw(b)
        mats, plain = self._layout(b)
        ms, ps = [], []
        for i, n, m, r in mats:
            key = (b.index, i)
            grad = b.views[i].reshape(n, m)
            if key not in self.errors:
                self.errors[key] = torch.zeros_like(grad)
            mat = grad + self.errors[key]  # error feedback: what earlier rounds failed to send
            ms.append(mat)
            ps.append(mat @ self._q(key, m, r, mat))
        first = torch.cat([t.reshape(-1) for t in ps] + [b.views[i].reshape(-1) for i in plain])
        return mats, plain, ms, first, self.comm.all_reduce(first, async_op=True)

    def finish(self, b: Bucket, handle: Any) -> None:
        mats, plain, ms, first, work = handle
        self.comm.wait(work)
        first.div_(self.comm.world_size)
        at, p_hats = 0, []
        for _, n, _, r in mats:
            p = first[at : at + n * r].view(n, r)
            at += n * r
            p_hats.append(torch.linalg.qr(p, mode="reduced").Q)
        for i in plain:
            v = b.views[i]
            v.copy_(first[at : at + v.numel()].view_as(v))
            at += v.numel()
        if not mats:
            return
        qs = [mat.T @ p_hat for mat, p_hat in zip(ms, p_hats)]
        second = torch.cat([q.reshape(-1) for q in qs])
        self.comm.all_reduce(second)
        second.div_(self.comm.world_size)
        at = 0
        for (i, _, m, r), mat, p_hat in zip(mats, ms, p_hats):
            q = second[at : at + m * r].view(m, r)
            at += m * r
            approx = p_hat @ q.T
            key = (b.index, i)
            self.errors[key] = mat - approx
            self.qs[key] = q.clone()
            b.views[i].copy_(approx.view_as(b.views[i]))

    def state_dict(self) -> dict[str, Any]:
        return {"errors": dict(self.errors), "qs": dict(self.qs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.errors = dict(state["errors"])
        self.qs = dict(state["qs"])


class TopK(Reducer):
    def __init__(self, spec: Spec, comm: Comm) -> None:
        super().__init__(spec, comm)
        self.ratio = float(spec["ratio"])
        self.warmup = int(spec["warmup"])
        self.errors: dict[int, torch.Tensor] = {}
        self.steps = 0

    def current_ratio(self) -> float:
        """DGC's sparsity warm-up (Lin et al. 2018, section 3.3): the kept fraction falls
        exponentially from 1 to ``ratio`` over the first ``warmup`` steps."""
        if self.warmup <= 0 or self.steps >= self.warmup:
            return self.ratio
        return self.ratio ** (self.steps / self.warmup)

    def start(self, b: Bucket) -> Any:
        self._raw(b)
        if b.index == 0:
            self.steps += 1
        n = b.flat.numel()
        k = max(1, math.ceil(self.current_ratio() * n))
        acc = b.flat + self.errors.get(b.index, 0)
        idx = acc.abs().topk(k, sorted=False).indices
        vals = acc[idx]
        acc[idx] = 0
        self.errors[b.index] = acc  # the residual: everything not sent this time
        world = self.comm.world_size
        all_vals = torch.empty(world * k, dtype=vals.dtype, device=vals.device)
        all_idx = torch.empty(world * k, dtype=torch.int32, device=vals.device)
        w1 = self.comm.all_gather(all_vals, vals, async_op=True)
        w2 = self.comm.all_gather(all_idx, idx.to(torch.int32), async_op=True)
        return all_vals, all_idx, (w1, w2)

    def finish(self, b: Bucket, handle: Any) -> None:
        all_vals, all_idx, works = handle
        for w in works:
            self.comm.wait(w)
        b.flat.zero_()
        b.flat.index_add_(0, all_idx.long(), all_vals)
        b.flat.div_(self.comm.world_size)

    def state_dict(self) -> dict[str, Any]:
        return {"errors": dict(self.errors), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.errors = dict(state["errors"])
        self.steps = int(state["steps"])


class Quantized(Reducer):
    """``int8`` / ``int4`` (see the module docstring). A bucket's second stage (its all-gather)
    starts when the next bucket is launched, a point that is the same on every rank, so both
    stages of all but the last bucket travel while backward runs."""

    def __init__(self, spec: Spec, comm: Comm) -> None:
        super().__init__(spec, comm)
        self.mean = QuantizedMean(comm, spec.name)
        self._first_stage: list[InFlight] = []

    def start(self, b: Bucket) -> Any:
        self._raw(b)
        for job in self._first_stage:
            self.mean.advance(job)
        job = self.mean.start(b.index, b.flat)
        self._first_stage = [job]
        return job

    def finish(self, b: Bucket, handle: Any) -> None:
        self._first_stage = []
        b.flat.copy_(self.mean.finish(handle))

    def state_dict(self) -> dict[str, Any]:
        return self.mean.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean.load_state_dict(state)


def build_reducer(spec: Spec, comm: Comm) -> Reducer:
    """The reducer the compressor's catalog entry names."""
    cls: type[Reducer] = catalog.resolve(catalog.compressor(spec.name).reducer)
    return cls(spec, comm)
