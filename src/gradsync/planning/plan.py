"""Planning a job with the cost model: which strategy, how fast, and does it fit.

Given a model (a preset or a parameter count), sequence length, global batch, a number of devices,
a device (datasheet presets or a ``gradsync calibrate`` profile) and a network (presets or
bandwidth + latency), it prints the cost model's prediction for every strategy, recommends one
with its reason, and plots predicted scaling efficiency from 1 to 4096 devices.
:func:`choose` is also what ``gradsync train --strategy auto`` uses (:func:`auto_strategy`). The
command around it is :mod:`gradsync.commands.plan`. Torch-free: plans run anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gradsync.core import catalog
from gradsync.core.config import Config
from gradsync.core.errors import ConfigError
from gradsync.core.files import save_figure
from gradsync.core.shapes import GPTShape
from gradsync.planning import costmodel as cm
from gradsync.planning.calibration_profile import default_profile_path, load_profile, profile_hardware, profile_network

SCALING_DEVICES = [2**i for i in range(13)]  # 1 .. 4096


@dataclass
class Row:
    entry: str
    micro_batch: int
    accum: int
    pred: cm.Prediction
    checkpointing: str = "none"  # activation checkpointing the prediction assumes

    @property
    def label(self) -> str:
        """The entry, with the activation checkpointing it needs."""
        return (
            self.entry
            if self.checkpointing == "none"
            else f"{self.entry} with {self.checkpointing} activation checkpointing"
        )


def network_for(p: int, net: cm.Network, intra: cm.Network | None, per_node: int) -> cm.Network:
    """Within a node (p <= gpus_per_node) the intra-node link; beyond, the network between nodes
    (the slowest hop of a flat ring) with the intra-node link attached, which the two-level
    all-reduce uses."""
    if intra is None:
        return net
    return intra if p <= per_node else replace(net, intra=intra, per_node=per_node)


def evaluate(
    entries: Sequence[str],
    w: cm.Workload,
    devices: int,
    global_batch: int,
    hw: cm.Hardware,
    net: cm.Network,
    micro_batch: int = 0,
    checkpointing: str = "auto",
) -> list[Row]:
    """Predict every entry (``strategy[+compressor]``) at the fastest micro-batch and activation
    checkpointing (``auto``: none, selective or full; or the one given) that fit, with
    accumulation making up the global batch; where nothing fits, at micro-batch 1 and the least
    memory."""
    if global_batch % devices:
        raise ConfigError(f"the global batch ({global_batch}) must be divisible by the number of devices ({devices})")
    per_device = global_batch // devices
    if micro_batch and per_device % micro_batch:
        raise ConfigError(f"the per-device batch ({per_device}) must be divisible by the micro-batch ({micro_batch})")
    candidates = [micro_batch] if micro_batch else [b for b in range(per_device, 0, -1) if per_device % b == 0]
    modes = list(cm.ACTIVATIONS) if checkpointing == "auto" else [checkpointing]
    rows = []
    for entry in entries:
        strategy, compress = catalog.split_entry(entry)
        tried = [
            (
                mb,
                mode,
                cm.predict(
                    strategy,
                    replace(cm.with_accum(w, mb, per_device // mb), checkpointing=mode),
                    devices,
                    hw,
                    net,
                    compress,
                ),
            )
            for mb in candidates
            for mode in modes
        ]
        fitting = [t for t in tried if t[2].fits]
        if fitting:  # the fastest; within 0.1% of it, the largest micro-batch and least recomputation
            top = max(t[2].tokens_per_s for t in fitting)
            mb, mode, pred = next(t for t in fitting if t[2].tokens_per_s >= 0.999 * top)
        else:
            mb, mode, pred = min(tried, key=lambda t: t[2].memory["total"])
        rows.append(Row(entry, mb, per_device // mb, pred, mode))
    return rows


def choose(rows: Sequence[Row]) -> tuple[Row | None, str]:
    """The fastest exact (synchronous) strategy that fits, and why. Strategies that change the
    optimization (compression, local SGD, DiLoCo) are mentioned, never chosen silently."""
    exact = [r for r in rows if r.entry in catalog.exact_strategies()]
    fitting = [r for r in exact if r.pred.fits]
    if not fitting:
        return None, (
            "nothing fits in device memory even at micro-batch 1 with full activation checkpointing: "
            "use more devices or a bigger device"
        )
    best = max(fitting, key=lambda r: r.pred.tokens_per_s)
    others = sorted((r for r in fitting if r is not best), key=lambda r: -r.pred.tokens_per_s)
    p = best.pred
    why = (
        f"{best.label}: the fastest exact strategy that fits ({p.tokens_per_s:,.0f} tokens/s, "
        f"{_size(p.memory['total'])} of {_size(p.device_memory)} per device"
    )
    if others:
        why += f"; next {others[0].label} at {others[0].pred.tokens_per_s / p.tokens_per_s:.2f}x"
    why += f"; communication exposed {p.exposed_comm_s / p.step_s:.0%} of the step)"
    unfit = [r.entry for r in exact if not r.pred.fits]
    if unfit:
        why += f"; {', '.join(unfit)} {'does' if len(unfit) == 1 else 'do'} not fit"
    approx = [
        r
        for r in rows
        if catalog.changes_optimization(r.entry) and r.pred.fits and r.pred.tokens_per_s > 1.2 * p.tokens_per_s
    ]
    if approx:
        fast = max(approx, key=lambda r: r.pred.tokens_per_s)
        why += (
            f". {fast.entry} would be {fast.pred.tokens_per_s / p.tokens_per_s:.2f}x faster but changes the "
            "optimization (compressed or infrequent synchronization): validate its loss first"
        )
    return best, why


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def format_plan(rows: Sequence[Row], header: str, eff: dict[str, float]) -> str:
    lines = [
        header,
        "",
        "| strategy | micro x accum | act. ckpt | step ms | compute | exposed comm | optimizer+compress | tokens/s | "
        "MFU | memory/device GB | fits | weak-scaling eff. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.pred
        lines.append(
            f"| {r.entry} | {r.micro_batch} x {r.accum} | {r.checkpointing} | {1e3 * p.step_s:.1f} | "
            f"{1e3 * p.compute_s:.1f} | "
            f"{1e3 * p.exposed_comm_s:.1f} | {1e3 * (p.optimizer_s + p.compression_s):.1f} | "
            f"{p.tokens_per_s:,.0f} | {p.mfu:.1%} | {p.memory['total'] / 1e9:.1f} | "
            f"{'yes' if p.fits else 'NO'} | {eff.get(r.entry, float('nan')):.1%} |"
        )
    return "\n".join(lines)


def plot_scaling(curves: dict[str, list[float]], devices: Sequence[int], title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one colour, marker and line style per curve: a dozen strategies outrun any colour cycle, and
    # curves that coincide (zero3 under torch-fsdp) stay visible by their markers
    cmap = plt.get_cmap("tab20")
    colours = [cmap(i) for i in range(cmap.N)]
    markers, styles = "osD^vP*Xh<>p", ("-", "--", "-.", ":")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(
            devices,
            [100 * y for y in ys],
            color=colours[i % len(colours)],
            marker=markers[i % len(markers)],
            ls=styles[i % len(styles)],
            ms=4,
            mfc="none" if i % 2 else None,
            label=name,
        )
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


def workload_of(cfg: Config, vocab: int) -> cm.Workload:
    """The cost model's workload for a run's config (its GPT, micro-batch, accumulation, buckets)."""
    m = cfg.model
    s = GPTShape.from_preset(m.preset, vocab, cfg.data.seq_len, n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd)
    w = cm.gpt_workload(
        s.n_layer,
        s.n_head,
        s.n_embd,
        vocab,
        cfg.data.seq_len,
        cfg.train.micro_batch,
        cfg.grad_accum_steps(cfg.parallel.world_size),
        cfg.train.precision,
        cfg.parallel.bucket_mb,
        cfg.parallel.first_bucket_mb,
    )
    return replace(w, checkpointing=cfg.train.activation_checkpointing)


BUCKET_CHOICES_MB = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)
AUTO_SLACK = 1.10  # --strategy auto takes the least approximate entry predicted within 10% of the fastest


def _launch_profile(cfg: Config) -> tuple[str, dict[str, Any], cm.Hardware, cm.Network]:
    path = cfg.parallel.profile or str(default_profile_path())
    profile = load_profile(path)
    return path, profile, profile_hardware(profile), profile_network(profile)


def _by_bucket(
    entry: str, base: cm.Workload, world: int, hw: cm.Hardware, net: cm.Network
) -> dict[float, cm.Prediction]:
    """The prediction of ``entry`` at each bucket size of :data:`BUCKET_CHOICES_MB`."""
    strategy, compress = catalog.split_entry(entry)
    return {
        mb: cm.predict(strategy, replace(base, bucket_bytes=int(mb * 2**20)), world, hw, net, compress)
        for mb in BUCKET_CHOICES_MB
    }


def _fastest_bucket(preds: dict[float, cm.Prediction]) -> float:
    """Ties (sizes above the model's, which give the same buckets) go to the smallest."""
    return min(preds, key=lambda mb: (round(preds[mb].step_s, 9), mb))


def auto_bucket_mb(cfg: Config, vocab: int) -> tuple[float, str]:
    """``--bucket-mb 0``: the bucket size (of :data:`BUCKET_CHOICES_MB`) for which the cost model,
    fed this machine's calibration profile, predicts the run's strategy fastest, with the reason.
    The trade-off it weighs (Li et al. VLDB 2020, section 3.2.3): every collective pays the link's
    latency α, so small buckets cost more in all; but a bucket starts only when backward has filled
    it, so large buckets leave more of the communication after backward. On a slow link the
    second term wins and the buckets shrink."""
    path, _, hw, net = _launch_profile(cfg)
    entry = catalog.entry_name(cfg.parallel.strategy, cfg.parallel.compress)
    preds = _by_bucket(entry, workload_of(cfg, vocab), cfg.parallel.world_size, hw, net)
    best = _fastest_bucket(preds)
    table = ", ".join(f"{mb:g} MB {1e3 * p.step_s:.1f} ms" for mb, p in preds.items())
    return best, f"{best:g} MB (predicted step: {table}) [profile {path}]"


def auto_strategy(cfg: Config, vocab: int) -> tuple[str, str]:
    """``--strategy auto``: an entry (``strategy[+compressor]``) for this run, chosen by the cost
    model fed this machine's calibration profile, with the reason. With ``auto_allows exact`` (the
    default) the fastest exact strategy that fits (:func:`choose`). Otherwise it climbs
    :func:`gradsync.core.catalog.auto_ladder` and takes the first rung whose best entry is
    predicted within :data:`AUTO_SLACK` of the fastest entry allowed: on a fast link that is an
    exact strategy (communication is hidden already), on a slow one the least change to the
    optimization that hides it. With ``--bucket-mb 0`` each entry is priced at its best bucket."""
    world = cfg.parallel.world_size
    if world == 1:
        return "bucketed", "one worker: there is no communication to optimize"
    path, profile, hw, net = _launch_profile(cfg)
    w = workload_of(cfg, vocab)
    where = f"[profile {path}: {profile['world_size']} workers, {profile['device']}]"
    if cfg.parallel.auto_allows == "exact":
        rows = [Row(s, w.micro_batch, w.accum, cm.predict(s, w, world, hw, net)) for s in catalog.exact_strategies()]
        best, why = choose(rows)
        if best is None:
            raise ConfigError(f"--strategy auto: {why}")
        return best.entry, f"{why} {where}"
    rungs = []
    for rung in catalog.auto_ladder(cfg.parallel.auto_allows):
        priced = []
        for entry in rung:
            if cfg.parallel.bucket_mb == 0:
                preds = _by_bucket(entry, w, world, hw, net)
                pred = preds[_fastest_bucket(preds)]
            else:
                strategy, compress = catalog.split_entry(entry)
                pred = cm.predict(strategy, w, world, hw, net, compress)
            if pred.fits:
                priced.append(Row(entry, w.micro_batch, w.accum, pred))
        if priced:
            rungs.append(min(priced, key=lambda r: r.pred.step_s))
    if not rungs:
        raise ConfigError("--strategy auto: nothing fits in device memory; use more devices or a bigger device")
    fastest = min(rungs, key=lambda r: r.pred.step_s)
    best = next(r for r in rungs if r.pred.step_s <= AUTO_SLACK * fastest.pred.step_s)
    p = best.pred
    why = (
        f"{best.entry}: the least approximate of --auto-allows {cfg.parallel.auto_allows} predicted within "
        f"{AUTO_SLACK - 1:.0%} of the fastest ({1e3 * p.step_s:.1f} ms a step, communication exposed "
        f"{p.exposed_comm_s / p.step_s:.0%}"
    )
    if best is not fastest:
        why += f"; fastest {fastest.entry} at {1e3 * fastest.pred.step_s:.1f} ms"
    ladder = ", ".join(f"{r.entry} {1e3 * r.pred.step_s:.0f} ms" for r in rungs)
    return best.entry, f"{why}; weighed: {ladder}) {where}"
