"""Where the network is the bottleneck: time to a loss on slow links, and the two-level all-reduce.

Two parts, each run for real in network namespaces (one namespace per "node", veth links shaped
with ``tc ... tbf``; :mod:`gradsync.testing.netns`), needs root:

``--part time-to-loss``: the default job with a constant learning rate after a warm-up of
``--lr-warmup`` steps (``--optim.min_lr_ratio 1``), the same schedule in every run whatever its
``--max-steps`` (a run's default warm-up is capped at a quarter of its length, so the reference,
stopped at the target step, would otherwise warm up faster than the runs it is compared with),
and validation every ``--eval-every`` steps. The reference is
``bucketed`` with 2 workers on loopback: the validation loss it reaches at ``--target-step`` is the
target, its training time to that step the reference time. Every strategy then runs on 2 nodes
joined at each ``--rates`` link, up to ``--max-steps``, and its time to the target is the training
time (the sum of step times; evaluation excluded) up to the first validation at or below it. The
ratio is reference time / time to target: 1.0 = as fast as on loopback. Median of ``--repeats``,
each repeat paired with the reference's repeat of the same seed. Runs with one seed are
deterministic (a repeat moves only the times), so whether a method that is not exact reaches the
target at the first validation after it or the next one is decided by one trajectory's ups and
downs; ``--seeds`` gives each repeat its own seed (data order, initialisation, dropout), and the
median is then over trajectories too.
The entry ``auto`` is ``--strategy auto --auto-allows ALLOWS --bucket-mb 0`` fed a calibration of
that very link (``gradsync calibrate`` on the two nodes, once per link); the table says what it ran.

``--part hierarchy``: 2 nodes x 2 workers, the link between the nodes shaped to ``--rate``, the two
workers of a node talking over the namespace's own loopback: ``bucketed`` (a flat ring) against
``bucketed:hierarchical=true`` (reduce-scatter in the node, all-reduce across, all-gather in the
node), tokens/s after the warm-up, median of ``--repeats``.

    python benchmarks/network_bench.py --part time-to-loss --out-dir docs/network
    python benchmarks/network_bench.py --part hierarchy --out-dir docs/network

Writes ``PART.json`` (every run), ``PART.md`` (the table, with the command) and, for time to loss,
``time-to-loss.png`` (validation loss against training time, one line per strategy and link).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gradsync.core.config import load_toml
from gradsync.core.files import save_figure
from gradsync.testing import netns
from gradsync.training.metrics import read_metrics

JOB = ["--optim.min_lr_ratio", "1", "--ckpt-interval", "0", "--sample-tokens", "0", "--no-progress", "--threads", "1"]
STRATEGIES = "bucketed@100mbit;auto;diloco:8,fragments=4,overlap=1,mix=0.5,quant=int8@10mbit"


class Jobs:
    """Runs ``gradsync train`` on loopback or on a fresh 2-node cluster at a given link rate."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = dict(os.environ, GRADSYNC_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
        self.port = 29700
        self.clusters: dict[str, netns.Cluster] = {}

    def cluster(self, rate: str) -> netns.Cluster:
        if rate not in self.clusters:
            c = netns.Cluster(2)
            c.shape(rate)
            self.clusters[rate] = c
        return self.clusters[rate]

    def train(
        self, where: str, nproc: int, args: list[str], run_dir: Path, timeout: float = 1800
    ) -> list[dict[str, Any]]:
        self.run("train", where, nproc, [*args, "--run-dir", str(run_dir)], timeout)
        return read_metrics(run_dir / "metrics.jsonl")

    def calibrate(self, where: str, nproc: int, max_mb: float) -> Path:
        """A calibration profile of the job's model on this link (made once per link)."""
        out = self.work / f"profile-{where}.json"
        if not out.exists():
            args = ["--out", str(out), "--max-mb", str(max_mb), "--run-dir", str(self.work / f"cal-{where}")]
            self.run("calibrate", where, nproc, args, timeout=1800)
            print(f"[{where}] calibrated: {out}", flush=True)
        return out

    def run(self, command: str, where: str, nproc: int, args: list[str], timeout: float = 1800) -> None:
        argv = [sys.executable, "-m", "gradsync.cli", command, *JOB, *args]
        if where == "loopback":
            r = subprocess.run(
                [*argv, "--nproc", str(nproc)],
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if r.returncode != 0:
                raise RuntimeError(f"{command} {' '.join(args)} failed:\n{r.stderr[-3000:]}")
        else:
            self.port += 1
            self.cluster(where).run_job(
                [*argv, "--timeout", "300"],
                self.port,
                nproc,
                cwd=self.work,
                env=self.env,
                timeout=timeout,
                logs=self.work,
            )

    def close(self) -> None:
        for c in self.clusters.values():
            c.close()


def curve(records: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """(step, training seconds so far, validation loss) at every validation."""
    elapsed, at = 0.0, {}
    for r in records:
        if r["kind"] == "train":
            elapsed += r["step_time_s"]
            at[r["step"]] = elapsed
    return [(r["step"], at[r["step"]], r["val_loss"]) for r in records if r["kind"] == "eval" and r["step"] in at]


def ran(run_dir: Path) -> str:
    """What a run trained with: its strategy, compressor and bucket size (as its workers read them)."""
    p = load_toml(run_dir / "config.toml")["parallel"]
    entry = p["strategy"] + ("" if p["compress"] == "none" else f"+{p['compress']}")
    return f"{entry}, {p['bucket_mb']:g} MB buckets" if p["strategy"] == "bucketed" else entry


def time_to(points: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    for step, t, loss in points:
        if loss <= target:
            return step, t
    return None


def time_to_loss(ns: argparse.Namespace, jobs: Jobs) -> tuple[list[dict[str, Any]], str]:
    """Train the reference and every entry, each repeat with its seed; :func:`ttl_table` scores them."""
    seeds = [int(s) for s in ns.seeds.split(",")] if ns.seeds else [None] * ns.repeats
    if len(seeds) != ns.repeats:
        raise SystemExit(f"network_bench: --seeds gives {len(seeds)} seeds for --repeats {ns.repeats}; one each")
    common = ["--eval-interval", str(ns.eval_every), "--optim.warmup_steps", str(ns.lr_warmup), *shlex.split(ns.extra)]
    seeded = [[*common, *([] if s is None else ["--seed", str(s)])] for s in seeds]
    refs = []
    for r in range(ns.repeats):
        args = [*seeded[r], "--strategy", "bucketed", "--max-steps", str(ns.target_step)]
        pts = curve(jobs.train("loopback", 2, args, jobs.work / f"ref-{r}"))
        refs.append(pts)
        print(f"[loopback] bucketed repeat {r + 1}: val {pts[-1][2]:.4f} at step {pts[-1][0]}", flush=True)
    rows: list[dict[str, Any]] = [{"link": "loopback", "entry": "bucketed", "seeds": seeds, "curves": refs}]
    for rate in ns.rates.split(","):
        for item in ns.strategies.split(";"):
            entry, _, only = item.partition("@")
            if only and only != rate:
                continue
            if entry == "auto":  # chosen at launch from this link's calibration
                args = ["--strategy", "auto", "--auto-allows", ns.auto_allows, "--bucket-mb", "0"]
                args += ["--parallel.profile", str(jobs.calibrate(rate, 1, ns.calibrate_mb))]
            else:
                strategy, _, compress = entry.partition("+")
                args = ["--strategy", strategy, "--compress", compress or "none"]
            curves, chosen = [], []
            for r in range(ns.repeats):
                folder = jobs.work / f"{rate}-{entry.replace(':', '_').replace('=', '').replace(',', '_')}-{r}"
                pts = curve(jobs.train(rate, 1, [*seeded[r], *args, "--max-steps", str(ns.max_steps)], folder))
                chosen.append(ran(folder))
                curves.append(pts)
                hit = time_to(pts, refs[r][-1][2])
                print(
                    f"[{rate}] {entry} ({chosen[-1]}) repeat {r + 1}: "
                    + (f"target at step {hit[0]} in {hit[1]:.1f}s" if hit else f"no target by step {pts[-1][0]}"),
                    flush=True,
                )
            rows.append({"link": rate, "entry": entry, "ran": chosen, "curves": curves})
    return rows, ttl_table(rows)


def ttl_table(rows: list[dict[str, Any]]) -> str:
    """Score every run against the reference repeat of its seed (``rows[0]``), filling in each row's
    ``reached`` and ``ratio``, and return the table. The target is the reference's validation loss
    at its last step; the reference's time is its own time to that loss (the first validation at
    or below it, which may come before the last), measured exactly as every other run's is. A run's
    ratio is that time over its own time to the target (a miss: 0); an entry's, the median."""
    ref = rows[0]
    seeds = ref.get("seeds") or [None] * len(ref["curves"])
    targets = [c[-1][2] for c in ref["curves"]]
    ref["reached"] = [time_to(c, t) for c, t in zip(ref["curves"], targets)]
    ref["target"] = targets
    ref_times = [h[1] for h in ref["reached"]]
    if len(set(seeds)) == 1:
        where = f"seed {seeds[0] or 'default'} in every repeat: the same losses, only the times move"
    else:
        where = "one seed a repeat, each run scored against the reference of its seed: " + "; ".join(
            f"seed {s}: {t:.4f}, reached at step {h[0]} in {h[1]:.1f} s"
            for s, t, h in zip(seeds, targets, ref["reached"])
        )
    lines = [
        f"Target: the validation loss `bucketed` has on loopback (2 workers) at step {ref['curves'][0][-1][0]} "
        f"({where}). Median of {len(targets)} repeats.",
        "",
        "| link | strategy | ran | step at target | time to target s | ratio (loopback time / time) | each repeat |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows[1:]:
        row["reached"] = [time_to(c, t) for c, t in zip(row["curves"], targets)]
        ratios = [ref_times[r] / h[1] if h else 0.0 for r, h in enumerate(row["reached"])]
        row["entry_ran"] = f"{row['entry']} | {' / '.join(sorted(set(row['ran'])))}"
        row["ratio"] = statistics.median(ratios)
        each = ", ".join(f"{x:.2f}" if x else "miss" for x in ratios)
        t = statistics.median([h[1] if h else float("inf") for h in row["reached"]])  # a miss counts as never
        if t < float("inf"):
            step = statistics.median(h[0] if h else float("inf") for h in row["reached"])
            cells = f"{step:.0f} | {t:.1f} | {row['ratio']:.2f}"
        else:
            longest = max(c[-1][1] for c in row["curves"])
            cells = (
                f"not by {row['curves'][0][-1][0]} | > {longest:.1f} | < {statistics.median(ref_times) / longest:.2f}"
            )
        lines.append(f"| {row['link']} | {row['entry_ran']} | {cells} | {each} |")
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for row in rows:
        c = row["curves"][0]
        style = "-" if row["link"] in ("loopback", "100mbit") else "--"
        ax.plot([t for _, t, _ in c], [v for _, _, v in c], style, marker=".", label=f"{row['entry']} ({row['link']})")
    ax.axhline(rows[0]["target"][0], color="grey", lw=0.8, ls=":", label="target (first repeat)")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation loss")
    ax.set_title("Validation loss against training time, 2 workers")
    ax.legend(fontsize=7)
    save_figure(fig, out)


def hierarchy(ns: argparse.Namespace, jobs: Jobs) -> tuple[list[dict[str, Any]], str]:
    rows = []
    args = [
        "--max-steps",
        str(ns.warmup + ns.steps),
        "--eval-interval",
        str(ns.warmup + ns.steps),
        "--eval-sequences",
        "8",
        *shlex.split(ns.extra),
    ]
    for entry in ("bucketed", "bucketed:hierarchical=true"):
        tps = []
        for r in range(ns.repeats):
            recs = jobs.train(ns.rate, 2, [*args, "--strategy", entry], jobs.work / f"hier-{entry[-4:]}-{r}")
            train = [x for x in recs if x["kind"] == "train"][ns.warmup :]
            tps.append(statistics.fmean(x["tokens_per_sec"] for x in train))
            print(f"[2x2 {ns.rate}] {entry} repeat {r + 1}: {tps[-1]:,.0f} tokens/s", flush=True)
        rows.append({"entry": entry, "tokens_per_sec": tps, "median": statistics.median(tps)})
    ratio = rows[1]["median"] / rows[0]["median"]
    text = "\n".join(
        [
            "| 2 nodes x 2 workers, inter-node " + ns.rate + " | tokens/s (median) | runs |",
            "|---|---|---|",
            *(
                f"| {r['entry']} | {r['median']:,.0f} | {', '.join(f'{t:,.0f}' for t in r['tokens_per_sec'])} |"
                for r in rows
            ),
            "",
            f"two-level / flat: {ratio:.2f}x",
        ]
    )
    return rows, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("time-to-loss", "hierarchy"), required=True)
    ap.add_argument("--out-dir", type=Path, default=Path("network-results"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--extra", default="", help="more gradsync train flags for every run (e.g. --model tiny)")
    ap.add_argument("--rates", default="100mbit,10mbit", help="time-to-loss: the links between the 2 nodes")
    ap.add_argument(
        "--strategies",
        default=STRATEGIES,
        help="time-to-loss: ';'-separated strategy[+compressor][@rate] (@rate: at that link only)",
    )
    ap.add_argument(
        "--auto-allows", default="approximate", help="time-to-loss: what the entry `auto` may choose (see train --help)"
    )
    ap.add_argument(
        "--calibrate-mb", type=float, default=1.0, help="time-to-loss: largest calibration message for auto"
    )
    ap.add_argument("--target-step", type=int, default=160)
    ap.add_argument("--max-steps", type=int, default=240)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument(
        "--seeds", default="", help="time-to-loss: one --seed a repeat, comma-separated (default: the same seed)"
    )
    ap.add_argument(
        "--from-json",
        type=Path,
        help="time-to-loss: score the runs of a time-to-loss.json this benchmark wrote again, without training",
    )
    ap.add_argument("--lr-warmup", type=int, default=50, help="time-to-loss: learning-rate warm-up steps, every run")
    ap.add_argument("--rate", default="100mbit", help="hierarchy: the link between the nodes")
    ap.add_argument("--steps", type=int, default=30, help="hierarchy: measured steps after the warm-up")
    ap.add_argument("--warmup", type=int, default=5)
    ns = ap.parse_args()
    if ns.from_json:
        saved = json.loads(ns.from_json.read_text())
        rows, table = saved["rows"], ttl_table(saved["rows"])
        write_results(ns.out_dir, "time-to-loss", saved["command"], rows, table)
        return 0
    why = netns.unavailable_reason()
    if why:
        print(f"network_bench: {why}", file=sys.stderr)
        return 2
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gradsync-net-") as tmp:
        jobs = Jobs(Path(tmp))
        try:
            rows, table = (time_to_loss if ns.part == "time-to-loss" else hierarchy)(ns, jobs)
        finally:
            jobs.close()
    command = "python benchmarks/network_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_results(ns.out_dir, ns.part, command, rows, table)
    return 0


def write_results(out_dir: Path, part: str, command: str, rows: list[dict[str, Any]], table: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{part}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    (out_dir / f"{part}.md").write_text(f"{table}\n\ncommand: `{command}`\n")
    if part == "time-to-loss":
        plot_curves(rows, out_dir / "time-to-loss.png")
    print(table)
    print(f"command: {command}")


if __name__ == "__main__":
    raise SystemExit(main())
