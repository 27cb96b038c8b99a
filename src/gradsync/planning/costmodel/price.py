"""The time of one optimizer step: :func:`predict` prices a strategy through the price function its
catalog entry names (one per strategy, and one per compressor for the bucketed path), from the
compute of the workload on the device, the collectives on the network and their overlap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from gradsync.core import catalog
from gradsync.core.catalog import COMPRESSOR_SCHEMA, QUANT_BLOCK, STRATEGY_SCHEMA
from gradsync.core.spec import Spec, parse_spec
from gradsync.planning.costmodel.hardware import Hardware
from gradsync.planning.costmodel.memory import memory, recompute_s
from gradsync.planning.costmodel.network import CostModelError, Network
from gradsync.planning.costmodel.overlap import exposed_after, exposed_before
from gradsync.planning.costmodel.workload import Workload, buckets, units


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
    def shards(self) -> tuple[int, int, Network]:
        """(ranks the state is sharded over, replicas of it, the network among the sharding ranks).
        Hybrid sharding (``hybrid=true``) shards over a node's devices, one replica per node, on a
        two-level network; otherwise (or on one node) over all ``p`` ranks."""
        return shard_group(self.strategy, self.net, self.p)


def shard_group(strategy: Spec, net: Network, p: int) -> tuple[int, int, Network]:
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


def predict(
    strategy: str | Spec, w: Workload, world: int, hw: Hardware, net: Network, compress: str | Spec = "none"
) -> Prediction:
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
    ctx = StepContext(w, world, hw, net, fwd, bwd, hw.optimizer_cost * w.n_trainable, s, c)
    priced: Priced = catalog.resolve(entry.price)(ctx)
    comm, exposed = priced.comm, priced.exposed
    # Communication hidden behind compute is free only if it uses no cores the compute needs.
    exposed += hw.overlap_penalty * max(0.0, comm - exposed)
    if world > 1:  # the trainer's one scalar all-reduce per step (the logged loss)
        log = net.time("all_reduce", 8.0, world)
        comm, exposed = comm + log, exposed + log
    name = strategy if isinstance(strategy, str) else str(s)
    return Prediction(
        name,
        world,
        compute,
        comm,
        exposed,
        priced.opt,
        priced.compression,
        memory(s, w, shard_group(s, net, world)[0], c),
        tok_micro * w.accum * world,
        w.flops_per_token,
        hw.peak_flops,
        hw.memory_bytes,
    )


# -- price functions, one per catalog entry (gradsync.core.catalog names them) ------------------------


def price_allreduce(x: StepContext) -> Priced:
    """Every tensor, one by one, after backward: nothing hidden."""
    comm = sum(x.net.time("all_reduce", 4.0 * t.numel, x.p) for t in x.w.tensors if t.trainable)
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
    per_micro = (
        sum(ag) + sum(regather) + exposed_after(_cumulative(layer_bwd[-2::-1]) + [x.bwd], rs[-2::-1] + rs[-1:], x.bwd)
    )
    return Priced(x.w.accum * (sum(ag) + sum(regather) + sum(rs)), x.w.accum * per_micro, x.opt_full / x.shards[0])


def price_fsdp(x: StepContext) -> Priced:
    """FSDP2: as ZeRO-3, but the next unit's gather is prefetched behind the current unit's compute
    (gradsync's ``zero3:reshard=false``, like FSDP2's ``reshard_after_forward=False``: no gathers
    in backward)."""
    us, ag, rs, layer_bwd = _zero3_collectives(x)
    regather = ag[-2::-1] if x.strategy.options.get("reshard", True) else []
    per_micro = exposed_before(ag, _forward_split(us, x.fwd)) + exposed_after(
        _cumulative(layer_bwd[-2::-1]) + [x.bwd], rs[-2::-1] + rs[-1:], x.bwd
    )
    if regather:
        per_micro += exposed_before(regather, layer_bwd[-2::-1])
    return Priced(x.w.accum * (sum(ag) + sum(regather) + sum(rs)), x.w.accum * per_micro, x.opt_full / x.shards[0])


def price_torch_fsdp(x: StepContext) -> Priced:
    """torch's FSDP2 (``fully_shard``): :func:`price_fsdp` where collectives have their own CUDA
    streams; on CPU it issues every all-gather and reduce-scatter synchronously, so all of its
    communication adds to the step (measured on 2 and 4 gloo ranks: within 2 % of compute + all
    communication at 1 Gbit/s and 100 Mbit/s, where the overlapped price was 25-38 % low)."""
    priced = price_fsdp(x)
    return priced if x.hw.streams else Priced(priced.comm, priced.comm, priced.opt, priced.compression)


def price_local(x: StepContext) -> Priced:
    """Local SGD and DiLoCo: one blocking all-reduce of the parameters every H steps; DiLoCo adds
    the pseudo-gradient and the outer Nesterov step (~4 element-wise passes).

    Streaming DiLoCo (``fragments=P, overlap=τ, quant=...``): each of P fragments (n/P parameters)
    travels once every H steps in its precision (:func:`outer_comm_time`); with τ > 0 its
    communication runs behind the next τ steps' compute and only what outlasts them is exposed.
    Quantisation adds its encode/decode work (:attr:`Hardware.quantize_cost`)."""
    o = x.strategy.options
    h, n = int(o["H"]), x.w.n_trainable
    if x.strategy.name != "diloco":
        comm = x.net.time("all_reduce", 4.0 * n, x.p) / h
        return Priced(comm, comm, x.opt_full)
    frags, overlap, quant = int(o["fragments"]), int(o["overlap"]), str(o["quant"])
    per_fragment = outer_comm_time(x, n / frags, quant)
    step = x.w.accum * (x.fwd + x.bwd) + x.opt_full
    exposed = max(0.0, per_fragment - overlap * step) * frags / h
    per_elem = (4 + (2 if quant == "bf16" else 0)) * x.hw.elementwise_cost + (
        x.hw.quantize_cost if quant in ("int8", "int4") else 0.0
    )
    return Priced(per_fragment * frags / h, exposed, x.opt_full + per_elem * n / h)


def outer_comm_time(x: StepContext, n: float, quant: str) -> float:
    """One fragment of ``n`` parameters averaged over the ranks (:mod:`gradsync.parallel.grad_paths.quantized_mean`):
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


def bucket_times(
    w: Workload, world: int, hw: Hardware, net: Network, strategy: str = "bucketed", compress: str = "none"
) -> list[float]:
    """Each bucket's communication time (:func:`buckets` order) as :func:`price_bucketed` overlaps
    it with backward, for the run's compressor: what ``gradsync timeline`` draws as predicted."""
    s = parse_spec(strategy, STRATEGY_SCHEMA, "strategy")
    c = parse_spec(compress, COMPRESSOR_SCHEMA, "compress")
    return bucket_comm(StepContext(w, world, hw, net, 0.0, 0.0, 0.0, s, c), [b for b, _ in buckets(w)])[0]


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
    for t in (t for t in x.w.tensors if t.trainable):
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


def scaling_efficiency(
    strategy: str, w: Workload, worlds: Sequence[int], hw: Hardware, net: Network, compress: str = "none"
) -> list[float]:
    """Weak scaling (same per-rank batch): tokens/s at p ranks / (p * tokens/s at 1 rank)."""
    one = predict(strategy, w, 1, hw, net, compress).tokens_per_s
    return [predict(strategy, w, p, hw, net, compress).tokens_per_s / (p * one) for p in worlds]
