"""``gradsync plan``: which strategy, how fast, and does it fit, before anyone buys or books GPUs.

Given a model (a preset or a parameter count), sequence length, global batch, a number of devices,
a device (datasheet presets or a ``gradsync calibrate`` profile) and a network (presets or
bandwidth + latency), it prints the cost model's prediction for every strategy, recommends one
with its reason, and plots predicted scaling efficiency from 1 to 4096 devices.
:func:`choose` is also what ``gradsync train --strategy auto`` uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from gradsync import costmodel as cm
from gradsync.errors import ConfigError
from gradsync.metrics import save_figure

ALIASES = {"124m": "gpt2", "350m": "gpt2-medium", "774m": "gpt2-large", "1.5b": "gpt2-xl"}
DEFAULT_STRATEGIES = ("allreduce", "bucketed", "zero1", "zero2", "zero3", "torch-fsdp", "bucketed+fp16",
                      "bucketed+powersgd:rank=4", "localsgd:8", "diloco:8")
if TYPE_CHECKING:
    from gradsync.config import Config

SCALING_DEVICES = [2**i for i in range(13)]  # 1 .. 4096


@dataclass
class Row:
    entry: str
    micro_batch: int
    accum: int
    pred: cm.Prediction


def add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gpt2", help="GPT preset (tiny ... gpt2-xl; 124m = gpt2) unless --params")
    p.add_argument("--params", type=float, default=0, help="parameter count (e.g. 7e9) instead of a preset")
    p.add_argument("--n-layer", type=int, default=0, help="layers (with --params; else a preset's)")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--global-batch", type=int, default=512, help="sequences per optimizer step")
    p.add_argument("--micro-batch", type=int, default=0, help="per device (default: the largest that fits)")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--device", default="a100-80gb",
                   help=f"{', '.join(cm.DEVICES)}, or a profile written by `gradsync calibrate`")
    p.add_argument("--efficiency", type=float, default=0.0,
                   help="fraction of peak FLOP/s the model reaches (presets: 0.45; profiles: measured)")
    p.add_argument("--network", default="100gbe", help=f"{', '.join(cm.NETWORKS)}, or 'profile'")
    p.add_argument("--bandwidth-gbps", type=float, default=None, help="instead of --network: Gbit/s per device")
    p.add_argument("--latency-us", type=float, default=None, help="with --bandwidth-gbps")
    p.add_argument("--gpus-per-node", type=int, default=1, help="devices joined by --intra-network")
    p.add_argument("--intra-network", default="nvlink", help="the link inside a node")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="activation precision")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    p.add_argument("--plot", default="plan-scaling.png", help="scaling plot (PNG); '' for none")


def _shape(ns: argparse.Namespace) -> tuple[int, int, int]:
    """(n_layer, n_head, n_embd) of a preset, or of a GPT with about ``--params`` parameters at
    the GPT-2/3 aspect ratio (width = 128 * layers, up to 96 layers) unless --n-layer is given."""
    from gradsync.model.gpt import PRESETS

    if ns.params:
        if ns.params < 1e5 or ns.params > 1e13:
            raise ConfigError(f"plan: --params must be between 1e5 and 1e13, got {ns.params:g}")
        layers = ns.n_layer or next(L for L in range(1, 200) if 12 * L * (128 * L) ** 2 >= ns.params or L >= 96)
        # 12 L h^2 + V h = N  ->  h
        a, b = 12.0 * layers, float(ns.vocab)
        h = (-b + math.sqrt(b * b + 4 * a * ns.params)) / (2 * a)
        n_embd = max(64, int(round(h / 64)) * 64)
        return layers, n_embd // 64, n_embd
    name = ALIASES.get(ns.model.lower(), ns.model)
    if name not in PRESETS:
        raise ConfigError(f"plan: unknown model '{ns.model}'; choose one of {', '.join([*PRESETS, *ALIASES])} "
                          "or give --params")
    d = PRESETS[name]
    return d["n_layer"], d["n_head"], d["n_embd"]


def hardware_and_network(ns: argparse.Namespace) -> tuple[cm.Hardware, cm.Network]:
    from gradsync.calibrate import load_profile, profile_hardware, profile_network

    profile = None
    if ns.device.endswith(".json") or Path(ns.device).is_file():
        profile = load_profile(ns.device)
        hw = profile_hardware(profile)
    else:
        hw = cm.device_preset(ns.device)
    if ns.efficiency:
        if not 0 < ns.efficiency <= 1:
            raise ConfigError(f"plan: --efficiency must be in (0, 1], got {ns.efficiency}")
        hw = dataclasses.replace(hw, efficiency=ns.efficiency)
    if ns.latency_us is not None and ns.bandwidth_gbps is None:
        raise ConfigError("plan: --latency-us needs --bandwidth-gbps")
    if ns.bandwidth_gbps is not None:
        latency = ns.latency_us if ns.latency_us is not None else 0.0
        net = cm.Network.uniform(f"{ns.bandwidth_gbps:g} Gbit/s, {latency:g} us",
                                 cm.Link.from_bandwidth(ns.bandwidth_gbps, latency))
    elif ns.network == "profile":
        if profile is None:
            raise ConfigError("plan: --network profile needs --device PROFILE.json")
        net = profile_network(profile)
    else:
        net = cm.network_preset(ns.network)
    return hw, net


def network_for(p: int, net: cm.Network, intra: cm.Network | None, per_node: int) -> cm.Network:
    """Within a node (p <= gpus_per_node) the intra-node link; beyond, the ring's slowest link,
    which is the network between nodes."""
    return intra if intra is not None and p <= per_node else net


def evaluate(entries: Sequence[str], w: cm.Workload, devices: int, global_batch: int, hw: cm.Hardware,
             net: cm.Network, micro_batch: int = 0) -> list[Row]:
    """Predict every entry (``strategy[+compressor]``) at the largest micro-batch that fits (or
    the given one), with accumulation making up the global batch."""
    if global_batch % devices:
        raise ConfigError(f"the global batch ({global_batch}) must be divisible by the number of devices ({devices})")
    per_device = global_batch // devices
    if micro_batch and per_device % micro_batch:
        raise ConfigError(f"the per-device batch ({per_device}) must be divisible by the micro-batch ({micro_batch})")
    candidates = [micro_batch] if micro_batch else [b for b in range(per_device, 0, -1) if per_device % b == 0]
    rows = []
    for entry in entries:
        strategy, _, compress = entry.partition("+")
        pred, mb = None, candidates[-1]
        for mb in candidates:
            pred = cm.predict(strategy, cm.with_accum(w, mb, per_device // mb), devices, hw, net, compress or "none")
            if pred.fits:
                break
        assert pred is not None
        rows.append(Row(entry, mb, per_device // mb, pred))
    return rows


def choose(rows: Sequence[Row]) -> tuple[Row | None, str]:
    """The fastest exact (synchronous) strategy that fits, and why. Strategies that change the
    optimization (compression, local SGD, DiLoCo) are mentioned, never chosen silently."""
    exact = [r for r in rows if r.entry in cm.EXACT]
    fitting = [r for r in exact if r.pred.fits]
    if not fitting:
        return None, ("nothing fits in device memory even at micro-batch 1: use more devices, a bigger device, "
                      "or a sharded strategy with activation checkpointing (not modelled)")
    best = max(fitting, key=lambda r: r.pred.tokens_per_s)
    others = sorted((r for r in fitting if r is not best), key=lambda r: -r.pred.tokens_per_s)
    p = best.pred
    why = (f"{best.entry}: the fastest exact strategy that fits ({p.tokens_per_s:,.0f} tokens/s, "
           f"{_size(p.memory['total'])} of {_size(p.device_memory)} per device")
    if others:
        why += f"; next {others[0].entry} at {others[0].pred.tokens_per_s / p.tokens_per_s:.2f}x"
    why += f"; communication exposed {p.exposed_comm_s / p.step_s:.0%} of the step)"
    unfit = [r.entry for r in exact if not r.pred.fits]
    if unfit:
        why += f"; {', '.join(unfit)} {'does' if len(unfit) == 1 else 'do'} not fit"
    approx = [r for r in rows if r.entry not in cm.EXACT and r.entry not in ("allreduce", "torch-fsdp", "torch-ddp")
              and r.pred.fits and r.pred.tokens_per_s > 1.2 * p.tokens_per_s]
    if approx:
        fast = max(approx, key=lambda r: r.pred.tokens_per_s)
        why += (f". {fast.entry} would be {fast.pred.tokens_per_s / p.tokens_per_s:.2f}x faster but changes the "
                "optimization (compressed or infrequent synchronization): validate its loss first")
    return best, why


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def format_plan(rows: Sequence[Row], header: str, eff: dict[str, float]) -> str:
    lines = [header, "",
             "| strategy | micro x accum | step ms | compute | exposed comm | optimizer+compress | tokens/s | MFU | "
             "memory/device GB | fits | weak-scaling eff. |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.pred
        lines.append(f"| {r.entry} | {r.micro_batch} x {r.accum} | {1e3 * p.step_s:.1f} | {1e3 * p.compute_s:.1f} | "
                     f"{1e3 * p.exposed_comm_s:.1f} | {1e3 * (p.optimizer_s + p.compression_s):.1f} | "
                     f"{p.tokens_per_s:,.0f} | {p.mfu:.1%} | {p.memory['total'] / 1e9:.1f} | "
                     f"{'yes' if p.fits else 'NO'} | {eff.get(r.entry, float('nan')):.1%} |")
    return "\n".join(lines)


def plot_scaling(curves: dict[str, list[float]], devices: Sequence[int], title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, ys in curves.items():
        ax.plot(devices, [100 * y for y in ys], marker="o", ms=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("devices")
    ax.set_ylabel("predicted scaling efficiency (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, Path(path))
    plt.close(fig)


def workload_of(cfg: "Config", vocab: int) -> cm.Workload:
    """The cost model's workload for a run's config (its GPT, micro-batch, accumulation, buckets)."""
    from gradsync.model.gpt import GPTShape

    m = cfg.model
    s = GPTShape.from_preset(m.preset, vocab, cfg.data.seq_len, n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd)
    return cm.gpt_workload(s.n_layer, s.n_head, s.n_embd, vocab, cfg.data.seq_len, cfg.train.micro_batch,
                           cfg.grad_accum_steps(cfg.parallel.world_size), cfg.train.precision,
                           cfg.parallel.bucket_mb, cfg.parallel.first_bucket_mb)


def auto_strategy(cfg: "Config", vocab: int) -> tuple[str, str]:
    """``--strategy auto``: the exact strategy the cost model, fed this machine's calibration
    profile, predicts fastest for this run (and that fits in memory), with the reason."""
    from gradsync.calibrate import default_profile_path, load_profile, profile_hardware, profile_network

    world = cfg.parallel.world_size
    if world == 1:
        return "bucketed", "one worker: there is no communication to optimize"
    path = cfg.parallel.profile or str(default_profile_path())
    profile = load_profile(path)
    hw, net = profile_hardware(profile), profile_network(profile)
    w = workload_of(cfg, vocab)
    rows = [Row(s, w.micro_batch, w.accum, cm.predict(s, w, world, hw, net)) for s in cm.EXACT]
    best, why = choose(rows)
    if best is None:
        raise ConfigError(f"--strategy auto: {why}")
    return best.entry, f"{why} [profile {path}: {profile['world_size']} workers, {profile['device']}]"


def plan_command(ns: argparse.Namespace) -> int:
    from gradsync.bench import split_entries

    for name in ("seq_len", "global_batch", "devices", "vocab"):
        if getattr(ns, name) < 1:
            raise ConfigError(f"plan: --{name.replace('_', '-')} must be >= 1, got {getattr(ns, name)}")
    if ns.micro_batch < 0 or ns.gpus_per_node < 1:
        raise ConfigError("plan: --micro-batch must be >= 0 and --gpus-per-node >= 1")
    n_layer, n_head, n_embd = _shape(ns)
    hw, net = hardware_and_network(ns)
    intra = cm.network_preset(ns.intra_network) if ns.gpus_per_node > 1 else None
    entries = split_entries(ns.strategies)
    w = cm.gpt_workload(n_layer, n_head, n_embd, ns.vocab, ns.seq_len, 1, precision=ns.precision)
    rows = evaluate(entries, w, ns.devices, ns.global_batch, hw,
                    network_for(ns.devices, net, intra, ns.gpus_per_node), ns.micro_batch)
    eff: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    for r in rows:
        strategy, _, compress = r.entry.partition("+")
        wr = cm.with_accum(w, r.micro_batch, r.accum)
        one = cm.predict(strategy, wr, 1, hw, net, compress or "none").tokens_per_s

        def at(p: int, strategy: str = strategy, compress: str = compress, wr: cm.Workload = wr,
               one: float = one) -> float:
            net_p = network_for(p, net, intra, ns.gpus_per_node)
            return cm.predict(strategy, wr, p, hw, net_p, compress or "none").tokens_per_s / (p * one)

        eff[r.entry] = at(ns.devices)
        curves[r.entry] = [at(p) for p in SCALING_DEVICES]
    params = w.n_params
    header = (f"plan: GPT {n_layer} layers x {n_embd} wide ({params / 1e6:,.1f}M parameters), seq {ns.seq_len}, "
              f"global batch {ns.global_batch} sequences on {ns.devices} x {hw.name} "
              f"({hw.peak_flops / 1e12:,.1f} TFLOP/s peak at {hw.efficiency:.0%} efficiency, "
              f"{hw.memory_bytes / 1e9:.0f} GB) over {net.name}"
              + (f", {ns.gpus_per_node} per node on {ns.intra_network}" if intra else ""))
    print(format_plan(rows, header, eff))
    best, why = choose(rows)
    print(f"\nrecommendation: {why}" if best else f"\nrecommendation: none: {why}")
    if ns.plot:
        title = (f"{params / 1e6:,.0f}M-parameter GPT, seq {ns.seq_len}, {ns.global_batch // ns.devices} sequences per "
                 f"device; {hw.name} over {net.name}\nweak scaling (per-device batch fixed), ring collectives: "
                 "the latency term grows with devices")
        plot_scaling(curves, SCALING_DEVICES, title, ns.plot)
        print(f"scaling plot: {ns.plot}")
    return 0
