"""Is the cost model right? Calibrate, predict, measure, compare: on loopback and on real links.

For every setting (1 and 2 workers on loopback; 2 and 4 "nodes" in network namespaces joined by
veth links shaped with ``tc ... tbf`` to 1 Gbit/s and 100 Mbit/s, one worker per node, meeting at
torchrun's c10d rendezvous across the namespaces; and ``netns-2x2x100mbit``, 2 nodes of 2 workers,
the workers of a node on its own loopback) this script

1. runs ``gradsync calibrate`` in exactly that setting (same nodes, links, model, micro-batch),
2. predicts each strategy's step time with ``gradsync.planning.costmodel`` from that profile (for nodes of
   several workers: a two-level network, the link between nodes from the ``netns-NxRATE`` setting's
   profile and the link inside a node from ``loopback-P``'s, both run earlier in the same
   invocation; compute from the setting's own calibration),
3. runs ``gradsync train`` for real and takes the amortized step time (mean over the steps after
   the warm-up, so local SGD's periodic averaging counts), ``--repeats`` times (the median is
   compared),
4. prints predicted vs measured and the error, and writes a JSON of everything, a Markdown table
   and three plots (measured vs predicted, a stacked bar of predicted step time, and scaling).

Needs root for the namespaces; where they cannot be made it says why and runs the loopback part.

    python benchmarks/validate_costmodel.py --out-dir docs/validation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gradsync.core.catalog import split_entries
from gradsync.core.config import build_config
from gradsync.core.files import save_figure
from gradsync.planning import costmodel as cm
from gradsync.planning.calibration_profile import profile_hardware, profile_network
from gradsync.planning.plan import workload_of
from gradsync.testing import netns
from gradsync.training.metrics import read_metrics

STRATEGIES = (
    "allreduce,bucketed,zero1,zero2,zero3,zero3:prefetch=0,localsgd:4,diloco:4,"
    "diloco:8,fragments=4,overlap=1,quant=int8,bucketed+fp16,bucketed+powersgd:rank=4,bucketed+int8"
)
TWO_LEVEL = "bucketed,bucketed:hierarchical=true,zero2,zero2:hybrid=true,zero3,zero3:hybrid=true"
SETTINGS = (
    "loopback-1",
    "loopback-2",
    "netns-2x1gbit",
    "netns-2x100mbit",
    "netns-4x1gbit",
    "netns-4x100mbit",
    "netns-2x2x100mbit",
)


def parse_setting(name: str) -> tuple[str, int, str, int]:
    """``loopback-2`` -> ("loopback", 2, "", 2); ``netns-4x100mbit`` -> ("netns", 4, "100mbit", 1);
    ``netns-2x2x100mbit`` (2 nodes of 2 workers) -> ("netns", 4, "100mbit", 2): kind, world, link,
    workers per node."""
    kind, _, rest = name.partition("-")
    if kind == "loopback":
        return kind, int(rest), "", int(rest)
    parts = rest.split("x")
    nodes, per_node = int(parts[0]), int(parts[1]) if len(parts) == 3 else 1
    return kind, nodes * per_node, parts[-1], per_node


class Runner:
    """Runs gradsync commands in one setting: locally, or one node per namespace."""

    def __init__(self, setting: str, work: Path, common: list[str]) -> None:
        self.kind, self.world, self.rate, self.per_node = parse_setting(setting)
        self.work, self.common = work, common
        self.cluster: netns.Cluster | None = None
        self.env = dict(os.environ, GRADSYNC_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
        if self.kind == "netns":
            self.cluster = netns.Cluster(self.world // self.per_node)
            self.cluster.shape(self.rate)
        self._port = 29500

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    def run(self, command: str, args: list[str], timeout: float = 900) -> None:
        base = [sys.executable, "-m", "gradsync.cli", command, *self.common, *args]
        if self.cluster is None:
            r = subprocess.run(
                [*base, "--nproc", str(self.world), "--threads", "1"],
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if r.returncode != 0:
                raise RuntimeError(f"{command} {' '.join(args)} failed:\n{r.stderr[-3000:]}")
            return
        self._port += 1
        self.cluster.run_job(
            [*base, "--threads", "1", "--timeout", "120"],
            self._port,
            self.per_node,
            cwd=self.work,
            env=self.env,
            timeout=timeout,
            logs=self.work,
        )


def measured_step(metrics: Path, warmup: int) -> dict[str, float]:
    train = [r for r in read_metrics(metrics) if r["kind"] == "train"][warmup:]
    blocked = [r["comm_blocked_s"] for r in train if r.get("comm_blocked_s") is not None]
    return {
        "step_s": statistics.fmean(r["step_time_s"] for r in train),
        "median_step_s": statistics.median(r["step_time_s"] for r in train),
        "blocked_s": statistics.fmean(blocked) if blocked else float("nan"),
    }


def network_of(setting: str, profile: dict[str, Any], work: Path) -> cm.Network:
    """The network a setting's predictions use: its own calibrated links, or for nodes of several
    workers the two-level network of the profiles of ``netns-NxRATE`` (between nodes) and
    ``loopback-P`` (inside a node), calibrated earlier in this invocation."""
    kind, world, rate, per_node = parse_setting(setting)
    if world == 1:
        return cm.Network.uniform("none", cm.Link(0.0, 0.0))
    if kind == "loopback" or per_node == 1:
        return profile_network(profile)
    parts = {"inter": f"netns-{world // per_node}x{rate}", "intra": f"loopback-{per_node}"}
    found = {k: work / f"profile-{v}.json" for k, v in parts.items()}
    missing = [parts[k] for k, f in found.items() if not f.exists()]
    if missing:
        raise SystemExit(
            f"validate_costmodel: {setting} is priced with the profiles of {' and '.join(parts.values())}; "
            f"put {', '.join(missing)} before it in --settings"
        )
    inter = profile_network(json.loads(found["inter"].read_text()))
    return dataclasses.replace(inter, intra=profile_network(json.loads(found["intra"].read_text())), per_node=per_node)


def validate_setting(setting: str, ns: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    kind, world, rate, per_node = parse_setting(setting)
    gb = ns.micro_batch * world
    common = [
        "--model",
        ns.model,
        "--data",
        "synthetic",
        "--seq-len",
        str(ns.seq_len),
        "--micro-batch",
        str(ns.micro_batch),
        "--global-batch",
        str(gb),
    ]
    runner = Runner(setting, work, common)
    rows = []
    try:
        profile_path = work / f"profile-{setting}.json"
        t0 = time.monotonic()
        runner.run(
            "calibrate",
            ["--out", str(profile_path), "--max-mb", str(ns.max_mb), "--run-dir", str(work / f"cal-{setting}")],
        )
        profile = json.loads(profile_path.read_text())
        print(f"[{setting}] calibrated in {time.monotonic() - t0:.0f}s", flush=True)
        hw = profile_hardware(profile)
        net = network_of(setting, profile, work)
        cfg = build_config(
            {},
            {
                "model.preset": ns.model,
                "data.source": "synthetic",
                "data.seq_len": ns.seq_len,
                "train.micro_batch": ns.micro_batch,
                "train.global_batch": gb,
                "parallel.nproc": world,
            },
        )
        w = workload_of(cfg, profile["compute"]["model"]["vocab"])
        entries = (
            ["bucketed"]
            if world == 1
            else (ns.two_level if per_node > 1 and kind == "netns" else ns.strategies).split(";")
        )
        for entry in entries:
            strategy, _, compress = entry.partition("+")
            pred = cm.predict(strategy, w, world, hw, net, compress or "none")
            steps = ns.warmup + ns.steps
            runs = []
            for r in range(ns.repeats):
                run_dir = work / f"run-{setting}-{entry.replace(':', '_').replace('=', '').replace(',', '_')}-{r}"
                runner.run(
                    "train",
                    [
                        "--strategy",
                        strategy,
                        "--compress",
                        compress or "none",
                        "--max-steps",
                        str(steps),
                        "--eval-interval",
                        str(steps),
                        "--eval-sequences",
                        "8",
                        "--ckpt-interval",
                        "0",
                        "--sample-tokens",
                        "0",
                        "--no-progress",
                        "--run-dir",
                        str(run_dir),
                    ],
                )
                runs.append(measured_step(run_dir / "metrics.jsonl", ns.warmup))
            meas = {k: statistics.median(m[k] for m in runs) for k in runs[0]}
            err = pred.step_s / meas["step_s"] - 1
            rows.append(
                {
                    "setting": setting,
                    "kind": kind,
                    "world": world,
                    "per_node": per_node,
                    "rate": rate or "loopback",
                    "strategy": entry,
                    "predicted_s": pred.step_s,
                    "measured_s": meas["step_s"],
                    "measured_runs_s": [m["step_s"] for m in runs],
                    "measured_median_s": meas["median_step_s"],
                    "measured_blocked_s": meas["blocked_s"],
                    "error": err,
                    "compute_s": pred.compute_s,
                    "exposed_comm_s": pred.exposed_comm_s,
                    "comm_s": pred.comm_s,
                    "optimizer_s": pred.optimizer_s + pred.compression_s,
                }
            )
            print(
                f"[{setting}] {entry:26s} predicted {1e3 * pred.step_s:8.1f} ms  measured {1e3 * meas['step_s']:8.1f}"
                f" ms (median of {len(runs)})  error {err:+.1%}",
                flush=True,
            )
    finally:
        runner.close()
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    errs = [abs(r["error"]) for r in rows]
    lines = [
        "| setting | strategy | predicted ms | measured ms | error | predicted compute / exposed comm / optimizer ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['strategy']} | {1e3 * r['predicted_s']:.1f} | {1e3 * r['measured_s']:.1f} "
            f"| {r['error']:+.1%} | {1e3 * r['compute_s']:.1f} / {1e3 * r['exposed_comm_s']:.1f} / "
            f"{1e3 * r['optimizer_s']:.1f} |"
        )
    lines += [
        "",
        f"{len(rows)} runs: median |error| {statistics.median(errs):.1%}, worst {max(errs):.1%} "
        f"({max(rows, key=lambda r: abs(r['error']))['setting']}, "
        f"{max(rows, key=lambda r: abs(r['error']))['strategy']})",
    ]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        e = [abs(r["error"]) for r in rows if r["setting"] == setting]
        lines.append(f"- {setting}: median |error| {statistics.median(e):.1%}, worst {max(e):.1%}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path, profiles: dict[str, dict[str, Any]], ns: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1. measured vs predicted, per strategy (marker) and link (colour)
    fig, ax = plt.subplots(figsize=(7, 6))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    markers = "os^vD<>pP*hX"
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r in rows:
        ax.scatter(
            1e3 * r["measured_s"],
            1e3 * r["predicted_s"],
            color=colours[settings.index(r["setting"]) % 10],
            marker=markers[strategies.index(r["strategy"]) % len(markers)],
            s=40,
        )
    lo = min(min(r["measured_s"], r["predicted_s"]) for r in rows) * 1e3 * 0.8
    hi = max(max(r["measured_s"], r["predicted_s"]) for r in rows) * 1e3 * 1.25
    ax.plot([lo, hi], [lo, hi], "k-", lw=1)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.2, label="±10%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured step time (ms)")
    ax.set_ylabel("predicted step time (ms)")
    for i, s in enumerate(settings):
        ax.scatter([], [], color=colours[i % 10], label=s)
    for i, s in enumerate(strategies):
        ax.scatter([], [], color="grey", marker=markers[i % len(markers)], label=s)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"cost model vs measured: {ns.model} GPT, seq {ns.seq_len}, micro-batch {ns.micro_batch}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, out / "predicted-vs-measured.png")
    plt.close(fig)

    # 2. stacked bars of predicted step time, with the measured time, for the slowest link setting
    setting = next((s for s in reversed(settings) if "100mbit" in s and parse_setting(s)[3] == 1), settings[-1])
    sel = [r for r in rows if r["setting"] == setting]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(sel))
    comp = [1e3 * r["compute_s"] for r in sel]
    expo = [1e3 * r["exposed_comm_s"] for r in sel]
    opt = [1e3 * r["optimizer_s"] for r in sel]
    ax.bar(x, comp, label="compute")
    ax.bar(x, expo, bottom=comp, label="exposed communication")
    ax.bar(x, opt, bottom=[a + b for a, b in zip(comp, expo)], label="optimizer + compression")
    ax.scatter(x, [1e3 * r["measured_s"] for r in sel], color="k", marker="_", s=400, zorder=3, label="measured")
    ax.set_xticks(list(x), [r["strategy"] for r in sel], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("step time (ms)")
    ax.set_title(f"predicted step time, split, vs measured: {setting}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "step-breakdown.png")
    plt.close(fig)

    # 3. scaling: lines extrapolate with one uncontended node's compute (loopback-1) and each link's
    # 4-node profile; hollow markers are the predictions of each measured setting (its own profile:
    # on this 2-core machine the nodes share the cores), filled markers what was measured.
    t1 = {r["strategy"]: r for r in rows if r["setting"] == "loopback-1"}.get("bucketed")
    devices = [1, 2, 4, 8, 16, 32, 64]
    base = profiles.get("loopback-1")
    if t1 is None or base is None or not any(f"netns-4x{rate}" in profiles for rate in ("1gbit", "100mbit")):
        return  # nothing to extrapolate from: the scaling plot needs loopback-1 and a netns-4xRATE setting
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, rate in enumerate(("1gbit", "100mbit")):
        prof = profiles.get(f"netns-4x{rate}")
        if prof is None or t1 is None or base is None:
            continue
        hw, net = profile_hardware(base), profile_network(prof)
        cfg = build_config(
            {},
            {
                "model.preset": ns.model,
                "data.source": "synthetic",
                "data.seq_len": ns.seq_len,
                "train.micro_batch": ns.micro_batch,
                "train.global_batch": ns.micro_batch,
                "parallel.nproc": 1,
            },
        )
        w = workload_of(cfg, prof["compute"]["model"]["vocab"])
        for j, strategy in enumerate(("bucketed", "zero2", "localsgd:4")):
            eff = cm.scaling_efficiency(strategy, w, devices, hw, net)
            ax.plot(
                devices,
                [100 * e for e in eff],
                ls="-" if i == 0 else "--",
                color=colours[j],
                label=f"{strategy}, {rate}: extrapolated",
            )
            sel = [r for r in rows if r["strategy"] == strategy and r["rate"] == rate and r.get("per_node", 1) == 1]
            ax.scatter(
                [r["world"] for r in sel],
                [100 * t1["predicted_s"] / r["predicted_s"] for r in sel],
                facecolors="none",
                edgecolors=colours[j],
                marker="o" if i == 0 else "s",
                zorder=3,
            )
            ax.scatter(
                [r["world"] for r in sel],
                [100 * t1["measured_s"] / r["measured_s"] for r in sel],
                color=colours[j],
                marker="o" if i == 0 else "s",
                zorder=3,
            )
    ax.scatter([], [], facecolors="none", edgecolors="grey", label="predicted, as measured (nodes share 2 cores)")
    ax.scatter([], [], color="grey", label="measured")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 105)
    ax.set_xlabel("nodes (one worker each)")
    ax.set_ylabel("weak-scaling efficiency (%)")
    ax.set_title("weak scaling vs one uncontended worker (loopback-1)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, out / "scaling.png")
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--strategies", default=STRATEGIES, help="comma-separated entries (strategy[+compressor])")
    ap.add_argument("--two-level", default=TWO_LEVEL, help="the entries of settings with several workers per node")
    ap.add_argument("--repeats", type=int, default=3, help="measured runs per row (the median is compared)")
    ap.add_argument("--model", default="small")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--max-mb", type=float, default=16.0, help="largest calibration message")
    ap.add_argument("--out-dir", default="", help="write results.json, results.md and plots here")
    ap.add_argument("--replot", default="", help="only redraw the plots of a results.json into --out-dir")
    ns = ap.parse_args()
    if ns.replot:
        saved = json.loads(Path(ns.replot).read_text())
        plot(saved["rows"], Path(ns.out_dir or Path(ns.replot).parent), saved["profiles"], ns)
        return 0
    ns.strategies = ";".join(split_entries(ns.strategies))
    ns.two_level = ";".join(split_entries(ns.two_level))
    settings = ns.settings.split(",")
    why = netns.unavailable_reason()
    if why is not None and any(s.startswith("netns") for s in settings):
        print(f"validate_costmodel: network namespaces are not available ({why}); running the loopback part only")
        settings = [s for s in settings if not s.startswith("netns")]
    work = Path(tempfile.mkdtemp(prefix="gradsync-validate-"))
    rows: list[dict[str, Any]] = []
    profiles: dict[str, dict[str, Any]] = {}
    for setting in settings:
        rows += validate_setting(setting, ns, work)
        profiles[setting] = json.loads((work / f"profile-{setting}.json").read_text())
    table = summarize(rows)
    print(table)
    if ns.out_dir:
        out = Path(ns.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(
            json.dumps({"rows": rows, "profiles": profiles, "command": " ".join(sys.argv)}, indent=1)
        )
        (out / "results.md").write_text(f"command: `python {' '.join(sys.argv)}`\n\n{table}\n")
        plot(rows, out, profiles, ns)
        print(f"wrote {', '.join(sorted(f.name for f in out.iterdir()))} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
