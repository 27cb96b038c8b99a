"""The workload: a model's tensors in registration order (each with the fraction of backward done
when its gradient is final), its FLOPs per token, the batch, and the buckets and ZeRO-3 units the
strategies would plan over it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gradsync.core.buckets import plan_buckets
from gradsync.core.config import CHECKPOINTING
from gradsync.core.shapes import GPTShape
from gradsync.planning.costmodel.network import CostModelError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    unit: int  # ZeRO-3 unit: the block index, or -1 for the root (embeddings, final norm)
    ready: float  # fraction of the backward pass done when its gradient is final
    trainable: bool = True  # False: frozen (requires_grad=False), held but never communicated or updated

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Workload:
    """A GPT (or any model given its tensors) trained at ``micro_batch`` sequences of ``seq_len``
    per rank per micro-step, ``accum`` micro-steps per optimizer step."""

    tensors: tuple[TensorInfo, ...]
    flops_per_token: float
    seq_len: int
    micro_batch: int
    accum: int = 1
    n_layer: int = 1
    n_embd: int = 1
    vocab: int = 1
    precision: str = "fp32"
    bucket_bytes: int = 25 * 2**20
    first_bucket_bytes: int = 2**20
    checkpointing: str = "none"  # activation checkpointing per block: none, selective or full

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.micro_batch < 1 or self.accum < 1:
            raise CostModelError("sequence length, micro-batch and accumulation must be >= 1")
        if self.checkpointing not in CHECKPOINTING:
            raise CostModelError(
                f"activation checkpointing '{self.checkpointing}' is unknown; choose one of {', '.join(CHECKPOINTING)}"
            )

    @property
    def n_params(self) -> int:
        """Every parameter, frozen ones included (what each replica holds)."""
        return sum(t.numel for t in self.tensors)

    @property
    def n_trainable(self) -> int:
        """The parameters that have gradients and optimizer state, and travel."""
        return sum(t.numel for t in self.tensors if t.trainable)


def frozen(w: Workload, prefixes: list[str]) -> Workload:
    """``w`` with the tensors whose names start with one of ``prefixes`` frozen (fine-tuning the
    top of a model, adapters): they are held on every rank, but never communicated, sharded or
    updated, as the strategies treat parameters with ``requires_grad=False``."""
    unknown = [x for x in prefixes if not any(t.name.startswith(x) for t in w.tensors)]
    if unknown:
        raise CostModelError(f"no tensor of the model starts with {', '.join(unknown)}")
    return replace(
        w,
        tensors=tuple(replace(t, trainable=t.trainable and not t.name.startswith(tuple(prefixes))) for t in w.tensors),
    )


def gpt_tensors(shape: GPTShape, seq_len: int) -> list[TensorInfo]:
    """The GPT's tensors (:meth:`gradsync.core.shapes.GPTShape.tensors`, registration order), each with
    the fraction of backward FLOPs done when its gradient is final: backward runs head, then blocks
    last to first; the tied embedding's gradient is final only at the very end."""
    h, n_layer = shape.n_embd, shape.n_layer
    head = 4.0 * shape.vocab_size * h  # backward FLOPs per token of the tied head
    blk = 4.0 * 12 * h * h + 8.0 * seq_len * h  # matmuls + attention scores, per token
    total = head + n_layer * blk
    out = []
    for t in shape.tensors():
        if t.name.startswith("ln_f."):
            ready = head / total
        elif t.unit >= 0:
            ready = (head + (n_layer - t.unit) * blk) / total
        else:
            ready = 1.0
        out.append(TensorInfo(t.name, t.shape, t.unit, ready))
    return out


def gpt_workload(
    n_layer: int,
    n_head: int,
    n_embd: int,
    vocab: int,
    seq_len: int,
    micro_batch: int,
    accum: int = 1,
    precision: str = "fp32",
    bucket_mb: float = 25.0,
    first_bucket_mb: float = 1.0,
    checkpointing: str = "none",
) -> Workload:
    """The workload of gradsync's GPT at block size ``seq_len``; FLOPs per token from its shape."""
    if min(n_layer, n_head, n_embd, vocab) < 1 or n_embd % n_head:
        raise CostModelError(f"bad GPT shape: {n_layer} layers, {n_head} heads, width {n_embd}, vocab {vocab}")
    shape = GPTShape(vocab, seq_len, n_layer, n_head, n_embd)
    return Workload(
        tuple(gpt_tensors(shape, seq_len)),
        shape.flops_per_token(seq_len),
        seq_len,
        micro_batch,
        accum,
        n_layer,
        n_embd,
        vocab,
        precision,
        int(bucket_mb * 2**20),
        int(first_bucket_mb * 2**20),
        checkpointing,
    )


def buckets(w: Workload, pad_to: int = 1) -> list[tuple[int, float]]:
    """(bytes, ready fraction) of each gradient bucket, in launch order, planned by
    :func:`gradsync.core.buckets.plan_buckets` on the fp32 gradients in reverse registration order, as
    the strategies plan them; ``pad_to`` pads each to a multiple of that many elements (ZeRO-1/2
    pad to the world size). Frozen tensors have no gradient and are in no bucket."""
    tensors = [t for t in w.tensors[::-1] if t.trainable]
    groups = plan_buckets([4 * t.numel for t in tensors], w.first_bucket_bytes, w.bucket_bytes)
    out = []
    for g in groups:
        elems = sum(tensors[i].numel for i in g)
        out.append((4 * (-(-elems // pad_to) * pad_to), max(tensors[i].ready for i in g)))
    return out


def units(w: Workload) -> list[int]:
    """Bytes of each ZeRO-3 unit (the blocks, then the root), unpadded: trainable tensors only
    (frozen ones stay whole on every rank, :func:`frozen_bytes`)."""
    by_unit: dict[int, int] = {}
    for t in w.tensors:
        if not t.trainable:
            continue
        by_unit[t.unit] = by_unit.get(t.unit, 0) + 4 * t.numel
    return [by_unit[k] for k in sorted(k for k in by_unit if k >= 0)] + [by_unit.get(-1, 0)]


def frozen_bytes(w: Workload) -> float:
    """fp32 bytes of the frozen tensors, which every rank holds whole under every strategy."""
    return 4.0 * (w.n_params - w.n_trainable)


def with_accum(w: Workload, micro_batch: int, accum: int) -> Workload:
    return replace(w, micro_batch=micro_batch, accum=accum)
