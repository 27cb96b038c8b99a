"""The mean over ranks of one vector per key, sent in fp32, bf16, or 8 / 4 bits, started at one
step and collected later: DiLoCo's outer communication (streaming DiLoCo, Douillard et al. 2025,
sends every fragment's pseudo-gradient this way, overlapped with the inner steps that follow), and
the ``int8`` / ``int4`` gradient compressors of the bucketed path (one mean per bucket).

- ``fp32``: one asynchronous all-reduce of the vector, divided by the world size on arrival.
- ``bf16``: the vector plus this rank's residual is cast to bf16 and all-reduced in bf16 (half
  the bytes); what the cast lost stays in the residual, added to the next vector sent (error
  feedback).
- ``int8`` / ``int4`` (:mod:`gradsync.parallel.grad_paths.quantize`): integers cannot be summed without
  overflow, so the sum is done in two stages, each moving 1/p of the codes per rank: an
  all-to-all gives rank r every rank's codes of chunk r, which it decodes, averages and encodes
  again; an all-gather of the averaged chunks then gives every rank the whole mean, decoded from
  the same bytes on every rank, so replicas stay identical. Both encodings keep their error: the
  first on each rank for its whole vector, the second on the chunk's owner for its chunk.
  Bytes per rank: 2 (p-1)/p of the codes, 1/4 (8 bits) or 1/8 (4 bits) of the fp32 all-reduce.
  Each chunk's codes and block scales travel in one byte buffer (:func:`pack`), so each stage is
  one collective: on a CPU every gloo call costs its own thread hand-offs and wake-ups.

A :class:`InFlight` is advanced by the caller at deterministic steps (the same on every rank):
collectives must be issued in the same order everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gradsync.core.catalog import QUANT
from gradsync.parallel.grad_paths.quantize import dequantize, padded_length, quantize
from gradsync.runtime.dist import Comm

_BITS = {"int8": 8, "int4": 4}


@dataclass
class InFlight:
    """One vector's mean on its way: the works to wait for, the buffers they fill, and, once
    collected, the mean itself."""

    key: int
    n: int
    works: list[Any] = field(default_factory=list)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    stage: int = 1
    mean: torch.Tensor | None = None
    codes_per_chunk: int = 0  # bytes of codes in each rank's chunk of a quantised vector


def pack(codes: torch.Tensor, scales: torch.Tensor, chunks: int) -> torch.Tensor:
    """``chunks`` equal chunks of codes (uint8) and of their fp32 block scales as one uint8 vector,
    chunk by chunk (each chunk's codes, then its scales' bytes): what an all-to-all splits evenly."""
    return torch.cat([codes.view(chunks, -1), scales.view(chunks, -1).view(torch.uint8)], dim=1).view(-1)


def unpack(buf: torch.Tensor, chunks: int, codes_per_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack`: codes ``(chunks, codes_per_chunk)`` and scales ``(chunks, -1)``."""
    rows = buf.view(chunks, -1)
    scales = rows[:, codes_per_chunk:].contiguous().view(torch.float32)
    return rows[:, :codes_per_chunk].contiguous(), scales


class QuantizedMean:
    """Means over ranks of keyed vectors (DiLoCo's fragments, the bucketed path's buckets) in the
    precision ``quant`` (one of :data:`QUANT`), with error feedback for the reduced precisions."""

    def __init__(self, comm: Comm, quant: str) -> None:
        if quant not in QUANT:
            raise ValueError(f"quant '{quant}' is unknown; choose one of {', '.join(QUANT)}")
        self.comm = comm
        self.quant = quant
        self.residuals: dict[str, torch.Tensor] = {}  # "send/KEY", "owner/KEY": what encoding lost

    def _residual(self, name: str, like: torch.Tensor) -> torch.Tensor:
        if name not in self.residuals:
            self.residuals[name] = torch.zeros_like(like)
        return self.residuals[name]

    def start(self, key: int, x: torch.Tensor) -> InFlight:
        """Start the mean of ``x`` (fp32, 1-D; not used afterwards by the caller) over ranks."""
        job = InFlight(key, x.numel())
        p = self.comm.world_size
        if self.quant == "fp32":
            job.buffers["sum"] = x
            job.works.append(self.comm.all_reduce(x, async_op=True))
        elif self.quant == "bf16":
            res = self._residual(f"send/{key}", x)
            x.add_(res)
            low = x.to(torch.bfloat16)
            torch.sub(x, low.float(), out=res)
            job.buffers["sum"] = low
            job.works.append(self.comm.all_reduce(low, async_op=True))
        else:
            bits = _BITS[self.quant]
            v = torch.zeros(padded_length(x.numel(), p), dtype=torch.float32, device=x.device)
            v[: x.numel()] = x
            v.add_(self._residual(f"send/{key}", v))
            codes, scales = quantize(v, bits, error_out=self.residuals[f"send/{key}"])
            sent = pack(codes, scales, p)
            job.buffers["recv"] = torch.empty_like(sent)
            job.works.append(self.comm.all_to_all(job.buffers["recv"], sent, async_op=True))
            job.buffers["sent"] = sent  # kept alive until the exchange is done
            job.codes_per_chunk = codes.numel() // p
        return job

    def advance(self, job: InFlight) -> None:
        """Move a quantised mean to its second stage (wait for the all-to-all, average this rank's
        chunk, start the all-gather); nothing for fp32 / bf16 or a job already there."""
        if self.quant not in _BITS or job.stage != 1 or job.mean is not None:
            return
        for w in job.works:
            self.comm.wait(w)
        bits, p = _BITS[self.quant], self.comm.world_size
        codes, scales = unpack(job.buffers["recv"], p, job.codes_per_chunk)
        chunk = torch.stack([dequantize(codes[r], scales[r], bits) for r in range(p)]).sum(0).div_(p)
        chunk.add_(self._residual(f"owner/{job.key}", chunk))
        c_codes, c_scales = quantize(chunk, bits, error_out=self.residuals[f"owner/{job.key}"])
        sent = pack(c_codes, c_scales, 1)
        gathered = torch.empty(p * sent.numel(), dtype=torch.uint8, device=chunk.device)
        job.works = [self.comm.all_gather(gathered, sent, async_op=True)]
        job.buffers = {"gathered": gathered, "sent": sent}
        job.stage = 2

    def finish(self, job: InFlight) -> torch.Tensor:
        """Wait for ``job`` and return the mean over ranks (the same bits on every rank)."""
        if job.mean is not None:
            return job.mean
        self.advance(job)
        for w in job.works:
            self.comm.wait(w)
        if self.quant in _BITS:
            codes, scales = unpack(job.buffers["gathered"], self.comm.world_size, job.codes_per_chunk)
            mean = dequantize(codes.view(-1), scales.view(-1), _BITS[self.quant])[: job.n]
        else:
            mean = job.buffers["sum"].float().div_(self.comm.world_size)
        job.mean, job.works, job.buffers = mean, [], {}
        return mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's residuals (they differ between ranks)."""
        return {k: v.clone() for k, v in self.residuals.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.residuals = {k: v.clone() for k, v in state.items()}
