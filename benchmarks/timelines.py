"""Timelines of the default job for the guide: where a step's time goes under ``bucketed``,
``zero3`` and streaming DiLoCo, with 2 workers on loopback and on 2 network-namespace nodes
joined by a 100 Mbit/s link (needs root for the namespaces; :mod:`gradsync.testing.netns`).

Each setting is calibrated first (``gradsync calibrate``, the same workers and link); each run
trains the default GPT for ``--steps`` steps with ``--train.profile`` on the last two, then
``gradsync timeline --profile`` draws its last step beside the cost model's prediction for that
link. ``bucketed-chosen-buckets`` is ``--bucket-mb 0``: the bucket size the calibration prices
fastest (small on a slow link, so that communication starts early in backward). Writes into
``--out-dir``: ``WHERE-NAME.png`` per run and ``timelines.md`` (each run's command, the
collectives of the step, every rank's forward, backward and blocked time and the prediction, as
``gradsync timeline`` printed them).

    python benchmarks/timelines.py --out-dir docs/timeline
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from network_bench import Jobs

RUNS = {  # name: the strategy and any more flags
    "bucketed": ["--strategy", "bucketed"],
    "bucketed-chosen-buckets": ["--strategy", "bucketed", "--bucket-mb", "0"],
    "zero3": ["--strategy", "zero3"],
    "streaming-diloco": ["--strategy", "diloco:8,fragments=4,overlap=1,mix=0.5,quant=int8"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("docs/timeline"))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--where", default="loopback,100mbit", help="loopback and/or link rates for 2 nodes")
    ap.add_argument("--calibrate-mb", type=float, default=4.0, help="largest message of each setting's calibration")
    ns = ap.parse_args()
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    report = [f"command: `python benchmarks/timelines.py --out-dir {ns.out_dir}`", ""]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = Jobs(Path(tmp))
        try:
            for where in ns.where.split(","):
                nproc = 2 if where == "loopback" else 1
                profile = jobs.calibrate(where, nproc, ns.calibrate_mb)  # for the predicted lane and --bucket-mb 0
                for name, flags in RUNS.items():
                    args = [*flags, "--max-steps", str(ns.steps), "--eval-interval", "1000"]
                    args += ["--train.profile", f"{ns.steps - 2}:{ns.steps}"]
                    run = Path(tmp) / f"{where}-{name}"
                    jobs.train(where, nproc, [*args, "--parallel.profile", str(profile)], run)
                    png = ns.out_dir / f"{where}-{name}.png"
                    draw = ["timeline", str(run), "--out", str(png), "--profile", str(profile)]
                    shown = subprocess.run(
                        [sys.executable, "-m", "gradsync.cli", *draw],
                        env=dict(os.environ, GRADSYNC_CACHE=str(Path(tmp) / "cache")),
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    nodes = "2 workers on loopback" if where == "loopback" else f"2 nodes at {where}"
                    report += [f"## {name}, {nodes}", "", f"`gradsync train {shlex.join(args)}`", ""]
                    report += [line for line in shown.splitlines() if not line.startswith("timeline: ")]
                    report += ["", f"![{name}, {nodes}]({png.name})", ""]
                    print(f"timelines: {where} {name} done", flush=True)
        finally:
            jobs.close()
    (ns.out_dir / "timelines.md").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
