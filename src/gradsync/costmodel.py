"""How long a data-parallel training step takes, and how much memory it needs: an analytical model.

Pure functions, no process group: ``predict(strategy, workload, world, hardware)`` returns the
time of one optimizer step split into compute, exposed communication, optimizer and compression,
the tokens/s, MFU and per-rank memory. ``gradsync calibrate`` measures the inputs on a real machine
(:class:`Hardware` from a profile); ``gradsync plan`` uses presets (published peak FLOP/s, memory,
link bandwidths). The derivation, with its assumptions, is in ``docs/costmodel.md``.

Communication is the alpha-beta model of ring collectives (Thakur et al. 2005; Patarasuk & Yuan
2009): with p ranks and an n-byte buffer, all-reduce costs 2(p-1)/p * n * beta + 2(p-1) * alpha;
reduce-scatter and all-gather (n = the full buffer) cost (p-1)/p * n * beta + (p-1) * alpha.
Overlap is simulated, not guessed: collectives run one at a time on the link, each starting when
its bucket is ready and the previous one is done; what runs past the end of backward is exposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from gradsync.errors import ConfigError
from gradsync.spec import COMPRESSORS, STRATEGIES, Spec, parse_spec

OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast")


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


def ring_factors(op: str, p: int) -> tuple[float, float]:
    """(bandwidth factor, latency factor) of ``op`` over a ring of ``p``: time = f_b*n*beta + f_a*alpha."""
    if p <= 1:
        return 0.0, 0.0
    if op == "all_reduce":
        return 2 * (p - 1) / p, 2.0 * (p - 1)
    if op in ("reduce_scatter", "all_gather"):
        return (p - 1) / p, float(p - 1)
    if op == "broadcast":  # pipelined along the ring
        return 1.0, float(p - 1)
    raise CostModelError(f"unknown collective '{op}'; known: {', '.join(OPS)}")


@dataclass(frozen=True)
class Network:
    """The link each collective sees: one for all (presets) or one per collective (calibrated)."""

    name: str
    links: dict[str, Link]

    @classmethod
    def uniform(cls, name: str, link: Link) -> "Network":
        return cls(name, {op: link for op in OPS})

    def time(self, op: str, nbytes: float, p: int) -> float:
        """Seconds for one ``op`` on an ``nbytes`` buffer among ``p`` ranks (ring algorithm)."""
        fb, fa = ring_factors(op, p)
        if p <= 1:
            return 0.0
        link = self.links.get(op) or self.links["all_reduce"]
        return fb * nbytes * link.beta_s_per_byte + fa * link.alpha_s


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


GB = 1e9
DEVICES: dict[str, Hardware] = {  # dense bf16 tensor-core peaks from NVIDIA's datasheets
    "a100-40gb": Hardware("A100 40GB", 312e12, 40 * GB, 1.555e12),
    "a100-80gb": Hardware("A100 80GB", 312e12, 80 * GB, 2.039e12),
    "h100": Hardware("H100 SXM", 989e12, 80 * GB, 3.35e12),
    "h200": Hardware("H200 SXM", 989e12, 141 * GB, 4.8e12),
}


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

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.micro_batch < 1 or self.accum < 1:
            raise CostModelError("sequence length, micro-batch and accumulation must be >= 1")

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def tokens_per_rank(self) -> int:
        return self.seq_len * self.micro_batch * self.accum


def gpt_tensors(n_layer: int, n_embd: int, vocab: int, block: int, seq_len: int) -> list[TensorInfo]:
    """gradsync's GPT (``model/gpt.py``: tied head, biases, pre-LN) in registration order, each with
    the fraction of backward FLOPs done when its gradient is final: backward runs head, then blocks
    last to first; the tied embedding's gradient is final only at the very end."""
    h = n_embd
    head = 4.0 * vocab * h  # backward FLOPs per token of the tied head
    blk = 4.0 * 12 * h * h + 8.0 * seq_len * h  # matmuls + attention scores, per token
    total = head + n_layer * blk
    out = [TensorInfo("wte", (vocab, h), -1, 1.0), TensorInfo("wpe", (block, h), -1, 1.0)]
    for i in range(n_layer):
        ready = (head + (n_layer - i) * blk) / total
        for name, shape in (("ln1.w", (h,)), ("ln1.b", (h,)), ("qkv.w", (3 * h, h)), ("qkv.b", (3 * h,)),
                            ("attn.proj.w", (h, h)), ("attn.proj.b", (h,)), ("ln2.w", (h,)), ("ln2.b", (h,)),
                            ("fc.w", (4 * h, h)), ("fc.b", (4 * h,)), ("mlp.proj.w", (h, 4 * h)),
                            ("mlp.proj.b", (h,))):
            out.append(TensorInfo(f"blocks.{i}.{name}", shape, i, ready))
    out += [TensorInfo("ln_f.w", (h,), -1, head / total), TensorInfo("ln_f.b", (h,), -1, head / total)]
    return out


def gpt_workload(n_layer: int, n_head: int, n_embd: int, vocab: int, seq_len: int, micro_batch: int,
                 accum: int = 1, precision: str = "fp32", bucket_mb: float = 25.0,
                 first_bucket_mb: float = 1.0) -> Workload:
    """The workload of gradsync's GPT; FLOPs per token as ``GPT.flops_per_token`` (6N + 12*L*C*T)."""
    if min(n_layer, n_head, n_embd, vocab) < 1 or n_embd % n_head:
        raise CostModelError(f"bad GPT shape: {n_layer} layers, {n_head} heads, width {n_embd}, vocab {vocab}")
    tensors = gpt_tensors(n_layer, n_embd, vocab, seq_len, seq_len)
    non_embedding = sum(t.numel for t in tensors if t.name != "wpe")
    fpt = 6.0 * non_embedding + 12.0 * n_layer * n_embd * seq_len
    return Workload(tuple(tensors), fpt, seq_len, micro_batch, accum, n_layer, n_embd, vocab, precision,
                    int(bucket_mb * 2**20), int(first_bucket_mb * 2**20))


def buckets(w: Workload, pad_to: int = 1) -> list[tuple[int, float]]:
    """(bytes, ready fraction) of each gradient bucket, in launch order, as ``bucketed.plan_buckets``
    groups the fp32 gradients (reverse registration order); ``pad_to`` pads each to a multiple of
    that many elements (ZeRO-1/2 pad to the world size)."""
    out: list[tuple[int, float]] = []
    size, ready = 0, 0.0
    for t in reversed(w.tensors):
        nbytes = 4 * t.numel
        cap = w.first_bucket_bytes if not out else w.bucket_bytes
        if size and size + nbytes > cap:
            out.append((size, ready))
            size = 0
        size += nbytes
        ready = max(ready, t.ready)
    out.append((size, ready))
    return [(4 * (-(-(b // 4) // pad_to) * pad_to), r) for b, r in out]


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


EXACT = ("bucketed", "zero1", "zero2", "zero3")
# torch's references that move the same bytes at the same moments as one of ours
SAME_AS = {"torch-ddp": "bucketed", "torch-zero1": "zero1"}  # synchronous, same math as one big batch
MODELLED = ("allreduce", "bucketed", "torch-ddp", "zero1", "torch-zero1", "zero2", "zero3", "torch-fsdp",
            "localsgd", "diloco")


def predict(strategy: str | Spec, w: Workload, world: int, hw: Hardware, net: Network,
            compress: str | Spec = "none") -> Prediction:
    """Predict one optimizer step of ``strategy`` (a spec such as ``zero2`` or ``localsgd:8``) with
    ``world`` ranks. Raises CostModelError for strategies the model does not cover."""
    s = strategy if isinstance(strategy, Spec) else parse_spec(strategy, STRATEGIES, "strategy")
    c = compress if isinstance(compress, Spec) else parse_spec(compress, COMPRESSORS, "compress")
    if world < 1:
        raise CostModelError(f"the number of devices must be >= 1, got {world}")
    if s.name not in MODELLED:
        raise CostModelError(f"the cost model does not cover strategy '{s.name}'")
    p = world
    tok_micro = w.seq_len * w.micro_batch
    fwd = w.flops_per_token * tok_micro / hw.achieved_flops / (1.0 + hw.backward_ratio)
    bwd = fwd * hw.backward_ratio
    compute = w.accum * (fwd + bwd)
    grads = 4.0 * w.n_params
    opt_full = hw.optimizer_cost * w.n_params
    comm = exposed = compression = 0.0
    opt = opt_full
    name = SAME_AS.get(s.name, s.name)
    if c.name != "none" and name != "bucketed":
        raise CostModelError(f"the cost model prices compression with bucketed/torch-ddp only, not '{s.name}'")

    if name == "allreduce":  # every tensor, one by one, after backward
        times = [net.time("all_reduce", 4.0 * t.numel, p) for t in w.tensors]
        comm = exposed = sum(times)
    elif name in ("bucketed", "zero1"):
        bks = buckets(w, pad_to=p if name == "zero1" else 1)
        sizes = [b for b, _ in bks]
        durs, compression = _bucket_comm(sizes, w, p, hw, net, c)
        comm = sum(durs)
        exposed = exposed_after([r * bwd for _, r in bks], durs, bwd)
        if name == "zero1":
            opt = opt_full / p
            gathers = [net.time("all_gather", b, p) for b in sizes]
            comm += sum(gathers)
            exposed += exposed_before(gathers[::-1], _forward_split(sizes[::-1], fwd))
    elif name == "zero2":
        bks = buckets(w, pad_to=p)
        sizes = [b for b, _ in bks]
        rs = [net.time("reduce_scatter", b, p) for b in sizes]
        gathers = [net.time("all_gather", b, p) for b in sizes]
        comm = w.accum * sum(rs) + sum(gathers)
        exposed = w.accum * exposed_after([r * bwd for _, r in bks], rs, bwd)
        exposed += exposed_before(gathers[::-1], _forward_split(sizes[::-1], fwd))
        opt = opt_full / p
    elif name in ("zero3", "torch-fsdp"):
        us = [-(-b // (4 * p)) * 4 * p for b in units(w)]
        ag = [net.time("all_gather", b, p) for b in us]
        rs = [net.time("reduce_scatter", b, p) for b in us]
        layer_bwd = [bwd * b / sum(us) for b in us]
        if name == "zero3":  # gathers wait in the hooks (no prefetch): forward and backward see them all
            per_micro = sum(ag) + sum(ag[:-1]) + exposed_after(
                _cumulative(layer_bwd[-2::-1]) + [bwd], rs[-2::-1] + rs[-1:], bwd)
        else:  # FSDP2 prefetches the next unit's gather behind the current unit's compute
            per_micro = exposed_before(ag, _forward_split(us, fwd)) + exposed_before(
                ag[-2::-1], layer_bwd[-2::-1]) + exposed_after(_cumulative(layer_bwd[-2::-1]) + [bwd],
                                                              rs[-2::-1] + rs[-1:], bwd)
        comm = w.accum * (2 * sum(ag) - ag[-1] + sum(rs))
        exposed = w.accum * per_micro
        opt = opt_full / p
    elif name in ("localsgd", "diloco"):
        h = int(s.options["H"])
        comm = exposed = net.time("all_reduce", grads, p) / h
        if name == "diloco":
            opt += 4 * hw.elementwise_cost * w.n_params / h  # pseudo-gradient, Nesterov outer step
    # Communication hidden behind compute is free only if it uses no cores the compute needs.
    exposed += hw.overlap_penalty * max(0.0, comm - exposed)
    if p > 1:  # the trainer's one scalar all-reduce per step (the logged loss)
        log = net.time("all_reduce", 8.0, p)
        comm, exposed = comm + log, exposed + log
    mem = memory(name, w, p, c)
    return Prediction(str(s), world, compute, comm, exposed, opt, compression, mem,
                      tok_micro * w.accum * p, w.flops_per_token, hw.peak_flops, hw.memory_bytes)


def _cumulative(xs: Sequence[float]) -> list[float]:
    out, t = [], 0.0
    for x in xs:
        t += x
        out.append(t)
    return out


def _forward_split(sizes: Sequence[float], fwd: float) -> list[float]:
    """Forward time spent on each unit, in proportion to its parameters."""
    total = sum(sizes)
    return [fwd * b / total for b in sizes]


def _bucket_comm(sizes: Sequence[int], w: Workload, p: int, hw: Hardware, net: Network,
                 c: Spec) -> tuple[list[float], float]:
    """Per-bucket communication time and the compression compute, for ``bucketed`` + ``c``."""
    if c.name == "none":
        return [net.time("all_reduce", b, p) for b in sizes], 0.0
    elems = sum(sizes) / 4
    if c.name in ("fp16", "bf16"):  # divide + cast down, cast up: ~3 passes
        return [net.time("all_reduce", b / 2, p) for b in sizes], 3 * hw.elementwise_cost * elems
    if c.name == "powersgd":
        r = int(c.options["rank"])
        sent = flops = 0.0
        for t in w.tensors:
            if len(t.shape) == 2 and t.numel >= int(c.options["min_numel"]):
                m, n = t.shape
                sent += 4.0 * r * (m + n)
                flops += 2.0 * 3 * m * n * r + 2.0 * 2 * m * r * r  # P=MQ, Q=M^T P, M~=PQ^T; Gram-Schmidt
            else:
                sent += 4.0 * t.numel
        scale = sent / sum(sizes)
        work = flops / hw.achieved_flops + 3 * hw.elementwise_cost * elems  # error feedback
        return [net.time("all_reduce", b * scale / 2, p) * 2 for b in sizes], work
    if c.name == "topk":
        k = float(c.options["ratio"])
        return ([net.time("all_gather", p * k * b * 2, p) for b in sizes],
                (4 + 2) * hw.elementwise_cost * elems)  # select (|g| + partial sort) + error feedback
    raise CostModelError(f"the cost model does not cover compression '{c.name}'")


def memory(strategy: str, w: Workload, p: int, compress: str | Spec = "none") -> dict[str, float]:
    """Bytes per rank: fp32 parameters, gradients, AdamW moments (ZeRO shards them over ``p``),
    strategy extras, and activations of one micro-batch (Korthikanti et al. 2022: 34*s*b*h bytes
    per layer in 16-bit; the s^2 attention term is absent with fused attention), doubled in fp32,
    plus the logits and their gradient."""
    c = compress if isinstance(compress, Spec) else parse_spec(compress, COMPRESSORS, "compress")
    name = {**SAME_AS, "torch-fsdp": "zero3"}.get(strategy, strategy)  # FSDP holds what ZeRO-3 holds
    psi = 4.0 * w.n_params
    params, grads, opt = psi, psi, 2 * psi
    extra = 0.0
    if name == "zero1":
        opt /= p
    elif name == "zero2":
        opt /= p
        grads = psi / p + 2 * w.bucket_bytes  # two buckets in flight
    elif name == "zero3":
        opt /= p
        grads = psi / p + 2 * max(units(w))
        params = psi / p + units(w)[-1] + max(units(w)[:-1] or [0])  # root + the block in use
    elif name == "diloco":
        extra = 2 * psi  # the outer parameters and the outer momentum
    if c.name in ("powersgd", "topk"):
        extra += psi  # error feedback
    act_bytes = 2.0 if w.precision == "bf16" else 4.0
    b, s, h = w.micro_batch, w.seq_len, w.n_embd
    activations = w.n_layer * 34 * s * b * h * act_bytes / 2 + 2 * b * s * w.vocab * 4.0
    total = params + grads + opt + extra + activations
    return {"params": params, "grads": grads, "optimizer": opt, "extra": extra,
            "activations": activations, "total": total}


def scaling_efficiency(strategy: str, w: Workload, worlds: Sequence[int], hw: Hardware, net: Network,
                       compress: str = "none") -> list[float]:
    """Weak scaling (same per-rank batch): tokens/s at p ranks / (p * tokens/s at 1 rank)."""
    one = predict(strategy, w, 1, hw, net, compress).tokens_per_s
    return [predict(strategy, w, p, hw, net, compress).tokens_per_s / (p * one) for p in worlds]


def with_accum(w: Workload, micro_batch: int, accum: int) -> Workload:
    return replace(w, micro_batch=micro_batch, accum=accum)
