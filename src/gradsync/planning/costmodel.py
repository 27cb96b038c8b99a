"""How long a data-parallel training step takes, and how much memory it needs: an analytical model.

Pure functions, no process group: ``predict(strategy, workload, world, hardware)`` returns the
time of one optimizer step split into compute, exposed communication, optimizer and compression,
the tokens/s, MFU and per-rank memory. ``gradsync calibrate`` measures the inputs on a real machine
(:class:`Hardware` from a profile); ``gradsync plan`` uses presets (published peak FLOP/s, memory,
link bandwidths). The derivation, with its assumptions, is in the guide's chapter 4
(``docs/guide/math.md``).

Communication is the alpha-beta model of ring collectives (Thakur et al. 2005; Patarasuk & Yuan
2009), with the factors of :mod:`gradsync.core.ring`: with p ranks and an n-byte buffer, all-reduce
costs 2(p-1)/p * n * beta + 2(p-1) * alpha; reduce-scatter and all-gather (n = the full buffer)
cost (p-1)/p * n * beta + (p-1) * alpha. Overlap is simulated, not guessed: collectives run one at
a time on the link, each starting when its bucket is ready (buckets planned by
:func:`gradsync.core.buckets.plan_buckets`, as the strategies plan them) and the previous one is done;
what runs past the end of backward is exposed. Each strategy and compressor of
:mod:`gradsync.core.catalog` names its price and memory function here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from gradsync.core import catalog
from gradsync.core.buckets import plan_buckets
from gradsync.core.catalog import COMPRESSOR_SCHEMA, QUANT_BLOCK, STRATEGY_SCHEMA
from gradsync.core.devices import DATASHEETS
from gradsync.core.errors import ConfigError
from gradsync.core.ring import OPS, ring_factors
from gradsync.core.shapes import GPTShape
from gradsync.core.spec import Spec, parse_spec


class CostModelError(ConfigError):
    """Input the model cannot price (a bad link, an unknown device): one line for the user."""


# ---------------------------------------------------------------------------------------------
# Links and collectives

@dataclass(frozen=True)
class Link:
    """Latency ``alpha_s`` per ring step and inverse bandwidth ``beta_s_per_byte``."""

    alpha_s: float
    beta_s_per_byte: float

    def __post_init__(self) -> None:
        if not (self.alpha_s >= 0 and self.beta_s_per_byte >= 0):
            raise CostModelError(f"a link needs latency >= 0 and bandwidth > 0, got alpha={self.alpha_s}, "
                                 f"beta={self.beta_s_per_byte}")

    @classmethod
    def from_bandwidth(cls, gbit_per_s: float, latency_us: float) -> "Link":
        if not gbit_per_s > 0:
            raise CostModelError(f"bandwidth must be > 0 Gbit/s, got {gbit_per_s}")
        if not latency_us >= 0:
            raise CostModelError(f"latency must be >= 0 us, got {latency_us}")
        return cls(latency_us * 1e-6, 8.0 / (gbit_per_s * 1e9))


@dataclass(frozen=True)
class Network:
    """The link each collective sees: one for all (presets) or one per collective (calibrated).

    A two-level network (nodes of ``per_node`` devices joined by ``intra``) keeps these links for
    the network between nodes: a flat ring over all devices is as slow as its slowest hop, which
    crosses that network, and :meth:`two_level` prices reducing inside the node first."""

    name: str
    links: dict[str, Link]
    intra: "Network | None" = None
    per_node: int = 1

    @classmethod
    def uniform(cls, name: str, link: Link) -> "Network":
        return cls(name, {op: link for op in OPS})

    def time(self, op: str, nbytes: float, p: int) -> float:
        """Seconds for one ``op`` on an ``nbytes`` buffer among ``p`` ranks (ring algorithm)."""
        if op not in OPS:
            raise CostModelError(f"unknown collective '{op}'; known: {', '.join(OPS)}")
        fb, fa = ring_factors(op, p)
        if p <= 1:
            return 0.0
        link = self.links.get(op) or self.links.get("all_gather" if op == "all_to_all" else "all_reduce") \
            or self.links["all_reduce"]
        return fb * nbytes * link.beta_s_per_byte + fa * link.alpha_s

    def two_level(self, nbytes: float, p: int) -> float:
        """An all-reduce of ``nbytes`` among ``p`` devices in two levels
        (:mod:`gradsync.parallel.grad_paths.hierarchical`): reduce-scatter inside each node, all-reduce across
        the N nodes, all-gather inside the node. The node's p/N workers each send their shard's
        share across at once, so the node's link carries the whole 2(N−1)/N · n. One level when
        there is one node or one device per node."""
        nodes = p // self.per_node if self.per_node > 0 else p
        if self.intra is None or self.per_node <= 1 or nodes <= 1:
            return self.time("all_reduce", nbytes, p)
        return (self.intra.time("reduce_scatter", nbytes, self.per_node) + self.time("all_reduce", nbytes, nodes)
                + self.intra.time("all_gather", nbytes, self.per_node))


# Published line rates; latencies are typical small-message figures (assumptions, see the docs).
NETWORKS: dict[str, tuple[float, float, str]] = {  # name: (Gbit/s per direction, latency us, what)
    "nvlink": (2400.0, 3.0, "NVLink 3 (A100): 300 GB/s per direction"),
    "nvlink4": (3600.0, 3.0, "NVLink 4 (H100/H200): 450 GB/s per direction"),
    "ib-ndr": (400.0, 5.0, "InfiniBand NDR, 400 Gbit/s per GPU"),
    "ib-hdr": (200.0, 5.0, "InfiniBand HDR, 200 Gbit/s per GPU"),
    "100gbe": (100.0, 20.0, "100 Gbit Ethernet"),
    "25gbe": (25.0, 30.0, "25 Gbit Ethernet"),
    "10gbe": (10.0, 40.0, "10 Gbit Ethernet"),
    "1gbe": (1.0, 60.0, "1 Gbit Ethernet"),
}


def network_preset(name: str) -> Network:
    if name not in NETWORKS:
        raise CostModelError(f"unknown network '{name}'; choose one of {', '.join(NETWORKS)} "
                             "or give --bandwidth-gbps and --latency-us")
    gbps, lat, what = NETWORKS[name]
    return Network.uniform(what, Link.from_bandwidth(gbps, lat))


# ---------------------------------------------------------------------------------------------
# Devices

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

    def __post_init__(self) -> None:
        if not (self.peak_flops > 0 and self.memory_bytes > 0 and self.mem_bw > 0 and 0 < self.efficiency <= 1):
            raise CostModelError(f"device '{self.name}' needs positive peak FLOP/s, memory and memory bandwidth, "
                                 "and an efficiency in (0, 1]")

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
DEVICES: dict[str, Hardware] = {  # dense bf16 tensor-core peaks from NVIDIA's datasheets (gradsync.core.devices)
    key: Hardware(d.name, d.peak_flops, d.memory_bytes, d.mem_bw) for key, d in DATASHEETS.items()}


def device_preset(name: str) -> Hardware:
    if name not in DEVICES:
        raise CostModelError(f"unknown device '{name}'; choose one of {', '.join(DEVICES)} or a profile "
                             "written by `gradsync calibrate` (--device PROFILE.json)")
    return DEVICES[name]


# ---------------------------------------------------------------------------------------------
# The workload

@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    unit: int  # ZeRO-3 unit: the block index, or -1 for the root (embeddings, final norm)
    ready: float  # fraction of the backward pass done when its gradient is final

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
        if self.checkpointing not in ACTIVATIONS:
            raise CostModelError(f"activation checkpointing '{self.checkpointing}' is unknown; "
                                 f"choose one of {', '.join(ACTIVATIONS)}")

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def tokens_per_rank(self) -> int:
        return self.seq_len * self.micro_batch * self.accum


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


def gpt_workload(n_layer: int, n_head: int, n_embd: int, vocab: int, seq_len: int, micro_batch: int,
                 accum: int = 1, precision: str = "fp32", bucket_mb: float = 25.0,
                 first_bucket_mb: float = 1.0, checkpointing: str = "none") -> Workload:
    """The workload of gradsync's GPT at block size ``seq_len``; FLOPs per token from its shape."""
    if min(n_layer, n_head, n_embd, vocab) < 1 or n_embd % n_head:
        raise CostModelError(f"bad GPT shape: {n_layer} layers, {n_head} heads, width {n_embd}, vocab {vocab}")
    shape = GPTShape(vocab, seq_len, n_layer, n_head, n_embd)
    return Workload(tuple(gpt_tensors(shape, seq_len)), shape.flops_per_token(seq_len), seq_len, micro_batch,
                    accum, n_layer, n_embd, vocab, precision, int(bucket_mb * 2**20), int(first_bucket_mb * 2**20),
                    checkpointing)


def buckets(w: Workload, pad_to: int = 1) -> list[tuple[int, float]]:
    """(bytes, ready fraction) of each gradient bucket, in launch order, planned by
    :func:`gradsync.core.buckets.plan_buckets` on the fp32 gradients in reverse registration order, as
    the strategies plan them; ``pad_to`` pads each to a multiple of that many elements (ZeRO-1/2
    pad to the world size)."""
    tensors = w.tensors[::-1]
    groups = plan_buckets([4 * t.numel for t in tensors], w.first_bucket_bytes, w.bucket_bytes)
    out = []
    for g in groups:
        elems = sum(tensors[i].numel for i in g)
        out.append((4 * (-(-elems // pad_to) * pad_to), max(tensors[i].ready for i in g)))
    return out


def units(w: Workload) -> list[int]:
    """Bytes of each ZeRO-3 unit (the blocks, then the root), unpadded."""
    by_unit: dict[int, int] = {}
    for t in w.tensors:
        by_unit[t.unit] = by_unit.get(t.unit, 0) + 4 * t.numel
    return [by_unit[k] for k in sorted(k for k in by_unit if k >= 0)] + [by_unit.get(-1, 0)]


# ---------------------------------------------------------------------------------------------
# Overlap

def exposed_after(ready: Sequence[float], durations: Sequence[float], compute_end: float) -> float:
    """Collectives issued in order on one link, each when ``ready`` (seconds) and the previous one
    is done: the time the last one finishes after ``compute_end`` (0 if all are hidden)."""
    t = 0.0
    for r, d in zip(ready, durations, strict=True):
        t = max(t, r) + d
    return max(0.0, t - compute_end)


def exposed_before(durations: Sequence[float], compute: Sequence[float]) -> float:
    """Collectives issued back to back at time 0; compute piece i may start only when collective i
    is done (parameters gathered before the layer runs). The delay this adds to the compute."""
    comm = t = 0.0
    for d, c in zip(durations, compute, strict=True):
        comm += d
        t = max(t, comm) + c
    return t - sum(compute)


# ---------------------------------------------------------------------------------------------
# Predictions

@dataclass
class Prediction:
    strategy: str
    world: int
    compute_s: float
    comm_s: float  # all communication time per step (hidden or not)
    exposed_comm_s: float
    optimizer_s: float
    compression_s: float = 0.0
    memory: dict[str, float] = field(default_factory=dict)  # bytes per rank
    tokens_per_step: int = 0
    flops_per_token: float = 0.0
    peak_flops: float = 0.0
    device_memory: float = math.inf

    @property
    def fits(self) -> bool:
        return self.memory.get("total", 0.0) <= self.device_memory

    @property
    def step_s(self) -> float:
        return self.compute_s + self.exposed_comm_s + self.optimizer_s + self.compression_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s

    @property
    def mfu(self) -> float:
        return self.flops_per_token * self.tokens_per_s / (self.world * self.peak_flops)


@dataclass(frozen=True)
class StepContext:
    """What a price function needs: the workload on ``p`` ranks, the device and the network, the
    forward and backward time of one micro-step, and the full (unsharded) optimizer time."""

    w: Workload
    p: int
    hw: Hardware
    net: Network
    fwd: float
    bwd: float
    opt_full: float
    strategy: Spec
    compress: Spec

    @property
    def shards(self) -> tuple[int, int, "Network"]:
        """(ranks the state is sharded over, replicas of it, the network among the sharding ranks).
        Hybrid sharding (``hybrid=true``) shards over a node's devices, one replica per node, on a
        two-level network; otherwise (or on one node) over all ``p`` ranks."""
        return shard_group(self.strategy, self.net, self.p)


def shard_group(strategy: Spec, net: "Network", p: int) -> tuple[int, int, "Network"]:
    """See :attr:`StepContext.shards`."""
    if strategy.options.get("hybrid") and net.intra is not None and 1 < net.per_node < p:
        return net.per_node, p // net.per_node, net.intra
    return p, 1, net


@dataclass(frozen=True)
class Priced:
    """One step's communication (all of it, and the part compute does not hide), optimizer and
    compression time."""

    comm: float
    exposed: float
    opt: float
    compression: float = 0.0


def predict(strategy: str | Spec, w: Workload, world: int, hw: Hardware, net: Network,
            compress: str | Spec = "none") -> Prediction:
    """Predict one optimizer step of ``strategy`` (a spec such as ``zero2`` or ``localsgd:8``) with
    ``world`` ranks: the strategy's catalog entry names its price function. Raises
    CostModelError for what the model does not cover."""
    s = strategy if isinstance(strategy, Spec) else parse_spec(strategy, STRATEGY_SCHEMA, "strategy")
    c = compress if isinstance(compress, Spec) else parse_spec(compress, COMPRESSOR_SCHEMA, "compress")
    if world < 1:
        raise CostModelError(f"the number of devices must be >= 1, got {world}")
    entry = catalog.STRATEGIES.get(s.name)
    if entry is None:
        raise CostModelError(f"the cost model does not cover strategy '{s.name}'")
    if c.name != "none" and c.name not in entry.compressors:
        takers = "/".join(n for n, e in catalog.STRATEGIES.items() if c.name in e.compressors)
        raise CostModelError(f"compression {c.name} composes with {takers} only, not '{s.name}'")
    tok_micro = w.seq_len * w.micro_batch
    fwd = w.flops_per_token * tok_micro / hw.achieved_flops / (1.0 + hw.backward_ratio)
    bwd = fwd * hw.backward_ratio + recompute_s(w, hw, fwd)
    compute = w.accum * (fwd + bwd)
    ctx = StepContext(w, world, hw, net, fwd, bwd, hw.optimizer_cost * w.n_params, s, c)
    priced: Priced = catalog.resolve(entry.price)(ctx)
    comm, exposed = priced.comm, priced.exposed
    # Communication hidden behind compute is free only if it uses no cores the compute needs.
    exposed += hw.overlap_penalty * max(0.0, comm - exposed)
    if world > 1:  # the trainer's one scalar all-reduce per step (the logged loss)
        log = net.time("all_reduce", 8.0, world)
        comm, exposed = comm + log, exposed + log
    name = strategy if isinstance(strategy, str) else str(s)
    return Prediction(name, world, compute, comm, exposed, priced.opt, priced.compression,
                      memory(s, w, shard_group(s, net, world)[0], c), tok_micro * w.accum * world,
                      w.flops_per_token, hw.peak_flops, hw.memory_bytes)


# -- price functions, one per catalog entry (gradsync.core.catalog names them) ------------------------

def price_allreduce(x: StepContext) -> Priced:
    """Every tensor, one by one, after backward: nothing hidden."""
    comm = sum(x.net.time("all_reduce", 4.0 * t.numel, x.p) for t in x.w.tensors)
    return Priced(comm, comm, x.opt_full)


def price_bucketed(x: StepContext) -> Priced:
    """Bucket all-reduces (or their compressed form) launched as backward fills them."""
    bks = buckets(x.w)
    durs, compression = bucket_comm(x, [b for b, _ in bks])
    return Priced(sum(durs), exposed_after([r * x.bwd for _, r in bks], durs, x.bwd), x.opt_full, compression)


def price_zero1(x: StepContext) -> Priced:
    """``bucketed``'s all-reduces on padded buckets, a sharded update, and parameter all-gathers
    that the next forward waits for, unit by unit."""
    bks = buckets(x.w, pad_to=x.p)
    sizes = [b for b, _ in bks]
    durs = [x.net.time("all_reduce", b, x.p) for b in sizes]
    gathers = [x.net.time("all_gather", b, x.p) for b in sizes]
    exposed = exposed_after([r * x.bwd for _, r in bks], durs, x.bwd)
    exposed += exposed_before(gathers[::-1], _forward_split(sizes[::-1], x.fwd))
    return Priced(sum(durs) + sum(gathers), exposed, x.opt_full / x.p)


def price_zero2(x: StepContext) -> Priced:
    """Reduce-scatters of the buckets on every micro-step, a sharded update, parameter gathers.
    Hybrid: reduce-scatter and gathers inside the node; the node's shards all-reduced across nodes,
    together the whole bucket over the node's link (as :meth:`Network.two_level`)."""
    g, nodes, local = x.shards
    bks = buckets(x.w, pad_to=g)
    sizes = [b for b, _ in bks]
    rs = [local.time("reduce_scatter", b, g) + x.net.time("all_reduce", b, nodes) for b in sizes]
    gathers = [local.time("all_gather", b, g) for b in sizes]
    exposed = x.w.accum * exposed_after([r * x.bwd for _, r in bks], rs, x.bwd)
    exposed += exposed_before(gathers[::-1], _forward_split(sizes[::-1], x.fwd))
    return Priced(x.w.accum * sum(rs) + sum(gathers), exposed, x.opt_full / g)


def _zero3_collectives(x: StepContext) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per unit (blocks, then the root): padded bytes' all-gather and reduce-scatter times, and
    each unit's share of backward (hybrid: gathers inside the node; the reduce-scatter's shard is
    then all-reduced across nodes)."""
    g, nodes, local = x.shards
    us = [-(-b // (4 * g)) * 4 * g for b in units(x.w)]
    ag = [local.time("all_gather", b, g) for b in us]
    rs = [local.time("reduce_scatter", b, g) + x.net.time("all_reduce", b, nodes) for b in us]
    return [float(b) for b in us], ag, rs, [x.bwd * b / sum(us) for b in us]


def price_zero3(x: StepContext) -> Priced:
    """gradsync's ZeRO-3: each unit gathered in its forward hook and again before its backward;
    reduce-scatters overlap. With ``prefetch`` ≥ 1 (the default) the next unit's gather runs
    behind the current unit's compute, as FSDP2's does (:func:`price_fsdp`); with ``prefetch=0``
    forward and backward wait for every gather. ``reshard=false`` keeps units from forward to
    backward: backward gathers nothing."""
    if int(x.strategy.options.get("prefetch", 0)) > 0:
        return price_fsdp(x)
    us, ag, rs, layer_bwd = _zero3_collectives(x)
    regather = ag[:-1] if x.strategy.options.get("reshard", True) else []
    per_micro = sum(ag) + sum(regather) + exposed_after(
        _cumulative(layer_bwd[-2::-1]) + [x.bwd], rs[-2::-1] + rs[-1:], x.bwd)
    return Priced(x.w.accum * (sum(ag) + sum(regather) + sum(rs)), x.w.accum * per_micro, x.opt_full / x.shards[0])


def price_fsdp(x: StepContext) -> Priced:
    """FSDP2: as ZeRO-3, but the next unit's gather is prefetched behind the current unit's compute
    (gradsync's ``zero3:reshard=false``, like FSDP2's ``reshard_after_forward=False``: no gathers
    in backward)."""
    us, ag, rs, layer_bwd = _zero3_collectives(x)
    regather = ag[-2::-1] if x.strategy.options.get("reshard", True) else []
    per_micro = exposed_before(ag, _forward_split(us, x.fwd)) + exposed_after(
        _cumulative(layer_bwd[-2::-1]) + [x.bwd], rs[-2::-1] + rs[-1:], x.bwd)
    if regather:
        per_micro += exposed_before(regather, layer_bwd[-2::-1])
    return Priced(x.w.accum * (sum(ag) + sum(regather) + sum(rs)), x.w.accum * per_micro, x.opt_full / x.shards[0])


def price_local(x: StepContext) -> Priced:
    """Local SGD and DiLoCo: one blocking all-reduce of the parameters every H steps; DiLoCo adds
    the pseudo-gradient and the outer Nesterov step (~4 element-wise passes).

    Streaming DiLoCo (``fragments=P, overlap=τ, quant=...``): each of P fragments (n/P parameters)
    travels once every H steps in its precision (:func:`outer_comm_time`); with τ > 0 its
    communication runs behind the next τ steps' compute and only what outlasts them is exposed.
    Quantisation adds its encode/decode work (:attr:`Hardware.quantize_cost`)."""
    o = x.strategy.options
    h, n = int(o["H"]), x.w.n_params
    if x.strategy.name != "diloco":
        comm = x.net.time("all_reduce", 4.0 * n, x.p) / h
        return Priced(comm, comm, x.opt_full)
    frags, overlap, quant = int(o["fragments"]), int(o["overlap"]), str(o["quant"])
    per_fragment = outer_comm_time(x, n / frags, quant)
    step = x.w.accum * (x.fwd + x.bwd) + x.opt_full
    exposed = max(0.0, per_fragment - overlap * step) * frags / h
    per_elem = (4 + (2 if quant == "bf16" else 0)) * x.hw.elementwise_cost + \
        (x.hw.quantize_cost if quant in ("int8", "int4") else 0.0)
    return Priced(per_fragment * frags / h, exposed, x.opt_full + per_elem * n / h)


def outer_comm_time(x: StepContext, n: float, quant: str) -> float:
    """One fragment of ``n`` parameters averaged over the ranks (:mod:`gradsync.parallel.grad_paths.outer_sync`):
    an fp32 or bf16 all-reduce, or for 8/4 bits an all-to-all and an all-gather of the codes and
    their per-block scales."""
    if quant in ("fp32", "bf16"):
        return x.net.time("all_reduce", (4.0 if quant == "fp32" else 2.0) * n, x.p)
    codes = n * (8 if quant == "int8" else 4) / 8 + 4.0 * n / QUANT_BLOCK
    return x.net.time("all_to_all", codes, x.p) + x.net.time("all_gather", codes, x.p)


def _cumulative(xs: Sequence[float]) -> list[float]:
    out, t = [], 0.0
    for v in xs:
        t += v
        out.append(t)
    return out


def _forward_split(sizes: Sequence[float], fwd: float) -> list[float]:
    """Forward time spent on each unit, in proportion to its parameters."""
    total = sum(sizes)
    return [fwd * b / total for b in sizes]


# -- compressors on the bucketed path: per-bucket communication time and compression compute ---

def bucket_comm(x: StepContext, sizes: Sequence[int]) -> tuple[list[float], float]:
    """Per-bucket communication time and the compression compute, for the run's compressor."""
    return catalog.resolve(catalog.compressor(x.compress.name).price)(x, sizes)


def bucket_comm_none(x: StepContext, sizes: Sequence[int]) -> tuple[list[float], float]:
    if x.strategy.options.get("hierarchical"):
        return [x.net.two_level(b, x.p) for b in sizes], 0.0
    return [x.net.time("all_reduce", b, x.p) for b in sizes], 0.0


def bucket_comm_low_precision(x: StepContext, sizes: Sequence[int]) -> tuple[list[float], float]:
    """Half the bytes; divide + cast down, cast up: ~3 element-wise passes."""
    elems = sum(sizes) / 4
    return [x.net.time("all_reduce", b / 2, x.p) for b in sizes], 3 * x.hw.elementwise_cost * elems


def bucket_comm_quantized(x: StepContext, sizes: Sequence[int]) -> tuple[list[float], float]:
    """8 or 4 bits a value and a scale per block, in two stages (:func:`outer_comm_time`);
    encode, decode and the residuals at the measured :attr:`Hardware.quantize_cost`."""
    elems = sum(sizes) / 4
    return [outer_comm_time(x, b / 4, x.compress.name) for b in sizes], x.hw.quantize_cost * elems


def bucket_comm_powersgd(x: StepContext, sizes: Sequence[int]) -> tuple[list[float], float]:
    """Rank-r factors P and Q (two all-reduces) for matrices, the rest uncompressed."""
    r = int(x.compress.options["rank"])
    elems = sum(sizes) / 4
    sent = flops = 0.0
    for t in x.w.tensors:
        if len(t.shape) == 2 and t.numel >= int(x.compress.options["min_numel"]):
            m, n = t.shape
            sent += 4.0 * r * (m + n)
            flops += 2.0 * 3 * m * n * r + 2.0 * 2 * m * r * r  # P=MQ, Q=M^T P, M~=PQ^T; Gram-Schmidt
        else:
            sent += 4.0 * t.numel
    scale = sent / sum(sizes)
    work = flops / x.hw.achieved_flops + 3 * x.hw.elementwise_cost * elems  # error feedback
    return [x.net.time("all_reduce", b * scale / 2, x.p) * 2 for b in sizes], work


def bucket_comm_topk(x: StepContext, sizes: Sequence[int]) -> tuple[list[float], float]:
    """Values and indices of the top ratio*n entries, all-gathered; select + error feedback."""
    k = float(x.compress.options["ratio"])
    elems = sum(sizes) / 4
    return [x.net.time("all_gather", x.p * k * b * 2, x.p) for b in sizes], (4 + 2) * x.hw.elementwise_cost * elems


# -- memory ----------------------------------------------------------------------------------------

# Activations of one transformer block, in units of s*b*h elements (sequence x micro-batch x width),
# counted for gradsync's GPT block with fused attention: (kept for backward by every block,
# held by the one block being recomputed in backward). Without checkpointing: the inputs of the two
# layer norms (2), their outputs (2), q/k/v (3), the attention output and its contiguous copy (2),
# the MLP's hidden layer before and after GELU (8) = 17, which is Korthikanti et al.'s 34*s*b*h
# bytes in 16-bit. Selective keeps the block input and every matmul/attention output (1 + 3 + 1 +
# 1 + 4 + 1 = 11) and recomputes the rest (7); full keeps the block input (1) and recomputes all 17.
ACTIVATIONS: dict[str, tuple[int, int]] = {"none": (17, 0), "selective": (11, 7), "full": (1, 17)}
RECOMPUTED_ELEMENTWISE = 7  # s*b*h elements per block that selective recomputes (norms, GELU, copies)


def activation_bytes(w: Workload) -> float:
    """Peak activation bytes of one micro-batch: every block's kept tensors, one block's
    recomputation, and the logits with their gradient (fp32)."""
    kept, transient = ACTIVATIONS[w.checkpointing]
    act_bytes = 2.0 if w.precision == "bf16" else 4.0
    sbh = w.seq_len * w.micro_batch * w.n_embd
    return (w.n_layer * kept + transient) * sbh * act_bytes + 2 * w.micro_batch * w.seq_len * w.vocab * 4.0


def recompute_s(w: Workload, hw: Hardware, fwd_s: float) -> float:
    """Extra backward time of activation checkpointing per micro-batch: full runs every block's
    forward again (bounded above by the whole forward); selective recomputes element-wise work."""
    if w.checkpointing == "full":
        return fwd_s
    if w.checkpointing == "selective":
        return RECOMPUTED_ELEMENTWISE * w.n_layer * w.seq_len * w.micro_batch * w.n_embd * hw.elementwise_cost
    return 0.0


def memory(strategy: str | Spec, w: Workload, p: int, compress: str | Spec = "none") -> dict[str, float]:
    """Bytes per rank: fp32 parameters, gradients, AdamW moments and strategy extras (the catalog
    entry's memory function, given the spec's options), error feedback of a compressor, and the
    activations of one micro-batch (:func:`activation_bytes`, with the workload's activation
    checkpointing)."""
    c = compress if isinstance(compress, Spec) else parse_spec(compress, COMPRESSOR_SCHEMA, "compress")
    s = strategy if isinstance(strategy, Spec) else parse_spec(strategy, STRATEGY_SCHEMA, "strategy")
    params, grads, opt, extra = catalog.resolve(catalog.strategy(s.name).memory)(w, p, s.options)
    if catalog.compressor(c.name).error_feedback:
        extra += 4.0 * w.n_params
    activations = activation_bytes(w)
    total = params + grads + opt + extra + activations
    return {"params": params, "grads": grads, "optimizer": opt, "extra": extra,
            "activations": activations, "total": total}


Held = tuple[float, float, float, float]  # params, grads, optimizer, extra: bytes per rank
Options = Mapping[str, Any]  # the strategy spec's options


def memory_replicated(w: Workload, p: int, o: Options) -> Held:
    """The ZeRO paper's yardstick (Rajbhandari et al. 2020): 4Ψ + 4Ψ + 8Ψ bytes for fp32 AdamW."""
    psi = 4.0 * w.n_params
    return psi, psi, 2 * psi, 0.0


def memory_zero1(w: Workload, p: int, o: Options) -> Held:
    psi = 4.0 * w.n_params
    return psi, psi, 2 * psi / p, 0.0


def memory_zero2(w: Workload, p: int, o: Options) -> Held:
    psi = 4.0 * w.n_params
    return psi, psi / p + 2 * w.bucket_bytes, 2 * psi / p, 0.0  # two buckets in flight


def memory_zero3(w: Workload, p: int, o: Options) -> Held:
    """Shards + the root and the block in use; with ``reshard=false`` every block stays gathered
    from its forward to its backward, so at the end of forward all of them are."""
    psi, us = 4.0 * w.n_params, units(w)
    held = us[-1] + max(us[:-1] or [0]) if o.get("reshard", True) else sum(us)
    return psi / p + held, psi / p + 2 * max(us), 2 * psi / p, 0.0


def memory_diloco(w: Workload, p: int, o: Options) -> Held:
    """+ the outer parameters and momentum (8Ψ); quantised sends keep a residual (4Ψ, and the
    owner's Ψ/p); ``keep=true`` holds the fragment in flight (4Ψ/P)."""
    psi = 4.0 * w.n_params
    extra = 2 * psi
    if o.get("quant", "fp32") in ("int8", "int4"):
        extra += psi + psi / p
    elif o.get("quant") == "bf16":
        extra += psi
    if o.get("keep") and int(o.get("overlap", 0)) > 0:
        extra += psi / int(o.get("fragments", 1))
    return psi, psi, 2 * psi, extra


def scaling_efficiency(strategy: str, w: Workload, worlds: Sequence[int], hw: Hardware, net: Network,
                       compress: str = "none") -> list[float]:
    """Weak scaling (same per-rank batch): tokens/s at p ranks / (p * tokens/s at 1 rank)."""
    one = predict(strategy, w, 1, hw, net, compress).tokens_per_s
    return [predict(strategy, w, p, hw, net, compress).tokens_per_s / (p * one) for p in worlds]


def with_accum(w: Workload, micro_batch: int, accum: int) -> Workload:
    return replace(w, micro_batch=micro_batch, accum=accum)
