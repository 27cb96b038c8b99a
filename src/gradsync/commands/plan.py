"""``gradsync plan``: which strategy, how fast, and does it fit, before anyone buys or books GPUs.

The cost model (:mod:`gradsync.planning.costmodel`) on a model, a number of devices, a device (datasheet
presets or a ``gradsync calibrate`` profile) and a network: every strategy's predicted step time,
tokens/s, MFU and memory, a recommendation with its reason (:func:`gradsync.planning.plan.choose`), and a
plot of predicted scaling efficiency from 1 to 4096 devices. Runs without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

from gradsync.core import catalog
from gradsync.core.devices import DATASHEETS
from gradsync.core.errors import ConfigError
from gradsync.core.shapes import PRESETS
from gradsync.planning import costmodel as cm
from gradsync.planning import goodput, plan
from gradsync.planning.calibration_profile import load_profile, profile_hardware, profile_network

ALIASES = {"124m": "gpt2", "350m": "gpt2-medium", "774m": "gpt2-large", "1.5b": "gpt2-xl"}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gpt2", help="GPT preset (tiny ... gpt2-xl; 124m = gpt2) unless --params")
    p.add_argument("--params", type=float, default=0, help="parameter count (e.g. 7e9) instead of a preset")
    p.add_argument("--n-layer", type=int, default=0, help="layers (with --params; else a preset's)")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--global-batch", type=int, default=512, help="sequences per optimizer step")
    p.add_argument("--micro-batch", type=int, default=0, help="per device (default: the largest that fits)")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument(
        "--device", default="a100-80gb", help=f"{', '.join(cm.DEVICES)}, or a profile written by `gradsync calibrate`"
    )
    p.add_argument(
        "--efficiency",
        type=float,
        default=None,
        help="fraction of peak FLOP/s the model reaches (presets: fitted to published runs; profiles: measured)",
    )
    p.add_argument("--network", default="100gbe", help=f"{', '.join(cm.NETWORKS)}, or 'profile'")
    p.add_argument("--bandwidth-gbps", type=float, default=None, help="instead of --network: Gbit/s per device")
    p.add_argument("--latency-us", type=float, default=None, help="with --bandwidth-gbps")
    p.add_argument("--gpus-per-node", type=int, default=1, help="devices joined by --intra-network")
    p.add_argument("--intra-network", default="nvlink", help="the link inside a node")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="activation precision")
    p.add_argument(
        "--activation-checkpointing",
        default="auto",
        choices=("auto", *cm.ACTIVATIONS),
        help="per block; auto (default): the fastest of none, selective and full that fits",
    )
    p.add_argument("--mtbf", default="", help="a node's mean time between failures (e.g. 3h): adds goodput")
    p.add_argument("--restart", default="60s", help="with --mtbf: relaunching every worker after a failure")
    p.add_argument(
        "--disk-gbs", type=float, default=1.0, help="with --mtbf: GB/s each node writes and reads checkpoints at"
    )
    p.add_argument(
        "--strategies",
        default=",".join(catalog.plan_entries()),
        help="entries strategy[+compressor], comma-separated (default: every strategy the model prices)",
    )
    p.add_argument("--plot", default="plan-scaling.png", help="scaling plot (PNG); '' for none")


def _shape(ns: argparse.Namespace) -> tuple[int, int, int]:
    """(n_layer, n_head, n_embd) of a preset, or of a GPT with about ``--params`` parameters at
    the GPT-2/3 aspect ratio (width = 128 * layers, up to 96 layers) unless --n-layer is given."""
    if ns.params:
        if not 1e5 <= ns.params <= 1e13:  # (also refuses nan)
            raise ConfigError(f"plan: --params must be between 1e5 and 1e13, got {ns.params:g}")
        layers = ns.n_layer or next(L for L in range(1, 200) if ns.params <= 12 * L * (128 * L) ** 2 or L >= 96)
        # 12 L h^2 + V h = N  ->  h
        a, b = 12.0 * layers, float(ns.vocab)
        h = (-b + math.sqrt(b * b + 4 * a * ns.params)) / (2 * a)
        n_embd = max(64, int(round(h / 64)) * 64)
        return layers, n_embd // 64, n_embd
    name = ALIASES.get(ns.model.lower(), ns.model)
    if name not in PRESETS:
        raise ConfigError(
            f"plan: unknown model '{ns.model}'; choose one of {', '.join([*PRESETS, *ALIASES])} or give --params"
        )
    d = PRESETS[name]
    return d["n_layer"], d["n_head"], d["n_embd"]


def hardware_and_network(ns: argparse.Namespace) -> tuple[cm.Hardware, cm.Network]:
    profile = None
    if ns.device.endswith(".json") or Path(ns.device).is_file():
        profile = load_profile(ns.device)
        hw = profile_hardware(profile)
    else:
        hw = cm.device_preset(ns.device)
    if ns.efficiency is not None:
        if not 0 < ns.efficiency <= 1:
            raise ConfigError(f"plan: --efficiency must be in (0, 1], got {ns.efficiency}")
        hw = dataclasses.replace(hw, efficiency=ns.efficiency)
    if ns.latency_us is not None and ns.bandwidth_gbps is None:
        raise ConfigError("plan: --latency-us needs --bandwidth-gbps")
    if ns.bandwidth_gbps is not None:
        latency = ns.latency_us if ns.latency_us is not None else 0.0
        net = cm.Network.uniform(
            f"{ns.bandwidth_gbps:g} Gbit/s, {latency:g} us", cm.Link.from_bandwidth(ns.bandwidth_gbps, latency)
        )
    elif ns.network == "profile":
        if profile is None:
            raise ConfigError("plan: --network profile needs --device PROFILE.json")
        net = profile_network(profile)
    else:
        net = cm.network_preset(ns.network)
    return hw, net


def _goodput(ns: argparse.Namespace, params: float, step_s: float, net: cm.Network) -> str:
    """``--mtbf``: goodput of restart-from-checkpoint and live recovery for this cluster. A
    checkpoint is the fp32 parameters and AdamW's two moments (12 bytes a parameter), written and
    read by every node in parallel at ``--disk-gbs``; a live newcomer receives the same state
    from a peer node, each of its devices over its own link."""
    if ns.disk_gbs <= 0:
        raise ConfigError(f"plan: --disk-gbs must be > 0, got {ns.disk_gbs}")
    nodes = ns.devices // ns.gpus_per_node
    state = 12.0 * params
    io_s = state / (nodes * ns.disk_gbs * 1e9)
    f = goodput.Failures(
        mtbf_node_s=goodput.parse_duration(ns.mtbf, "plan: --mtbf"),
        nodes=nodes,
        checkpoint_s=io_s,
        restart_s=goodput.parse_duration(ns.restart, "plan: --restart"),
        reload_s=io_s,
        join_s=net.time("broadcast", state / ns.gpus_per_node, 2),
        step_s=step_s,
    )
    return goodput.format_goodput(f, goodput.compare(f))


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise ConfigError(f"plan: unrecognized argument(s) {' '.join(extra)}")
    for name in ("seq_len", "global_batch", "devices", "vocab"):
        if getattr(ns, name) < 1:
            raise ConfigError(f"plan: --{name.replace('_', '-')} must be >= 1, got {getattr(ns, name)}")
    if ns.micro_batch < 0 or ns.gpus_per_node < 1:
        raise ConfigError("plan: --micro-batch must be >= 0 and --gpus-per-node >= 1")
    if ns.devices % ns.gpus_per_node:
        raise ConfigError(
            f"plan: --devices ({ns.devices}) must be a whole number of nodes of --gpus-per-node ({ns.gpus_per_node})"
        )
    n_layer, n_head, n_embd = _shape(ns)
    hw, net = hardware_and_network(ns)
    intra = cm.network_preset(ns.intra_network) if ns.gpus_per_node > 1 else None
    entries = catalog.split_entries(ns.strategies)
    w = cm.gpt_workload(n_layer, n_head, n_embd, ns.vocab, ns.seq_len, 1, precision=ns.precision)
    rows = plan.evaluate(
        entries,
        w,
        ns.devices,
        ns.global_batch,
        hw,
        plan.network_for(ns.devices, net, intra, ns.gpus_per_node),
        ns.micro_batch,
        ns.activation_checkpointing,
    )
    eff: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    for r in rows:
        strategy, compress = catalog.split_entry(r.entry)
        wr = dataclasses.replace(cm.with_accum(w, r.micro_batch, r.accum), checkpointing=r.checkpointing)
        one = cm.predict(strategy, wr, 1, hw, net, compress).tokens_per_s

        def at(
            p: int, strategy: str = strategy, compress: str = compress, wr: cm.Workload = wr, one: float = one
        ) -> float:
            net_p = plan.network_for(p, net, intra, ns.gpus_per_node)
            return cm.predict(strategy, wr, p, hw, net_p, compress).tokens_per_s / (p * one)

        eff[r.entry] = at(ns.devices)
        curves[r.entry] = [at(p) for p in plan.SCALING_DEVICES]
    params = w.n_params
    header = (
        f"plan: GPT {n_layer} layers x {n_embd} wide ({params / 1e6:,.1f}M parameters), seq {ns.seq_len}, "
        f"global batch {ns.global_batch} sequences on {ns.devices} x {hw.name} "
        f"({hw.peak_flops / 1e12:,.1f} TFLOP/s peak at {hw.efficiency:.0%} efficiency, "
        f"{hw.memory_bytes / 1e9:.0f} GB) over {net.name}"
        + (f", {ns.gpus_per_node} per node on {ns.intra_network}" if intra else "")
    )
    sheet = DATASHEETS.get(ns.device)  # None for a calibration profile: its efficiency is measured
    if sheet is not None and ns.efficiency is None:
        header += f"\nefficiency {hw.efficiency:.0%}: {sheet.efficiency_source} (--efficiency to change it)"
    print(plan.format_plan(rows, header, eff))
    best, why = plan.choose(rows)
    print(f"\nrecommendation: {why}" if best else f"\nrecommendation: none: {why}")
    if ns.mtbf:
        step_s = (best or min(rows, key=lambda r: r.pred.step_s)).pred.step_s
        print("\n" + _goodput(ns, params, step_s, net))
    if ns.plot:
        title = (
            f"{params / 1e6:,.0f}M-parameter GPT, seq {ns.seq_len}, {ns.global_batch // ns.devices} sequences per "
            f"device; {hw.name} over {net.name}\nweak scaling (per-device batch fixed), ring collectives: "
            "the latency term grows with devices"
        )
        plan.plot_scaling(curves, plan.SCALING_DEVICES, title, ns.plot)
        print(f"scaling plot: {ns.plot}")
    return 0
