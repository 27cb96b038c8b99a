"""Timelines of the default job for the guide: where a step's time goes under ``bucketed``,
``zero3`` and streaming DiLoCo, with 2 workers on loopback and on 2 network-namespace nodes
joined by a 100 Mbit/s link (needs root for the namespaces; :mod:`gradsync.testing.netns`).

Each run trains the default GPT for ``--steps`` steps with ``--train.profile`` on the last two,
then ``gradsync timeline`` draws its last step. Writes into ``--out-dir``: ``WHERE-NAME.png`` per
run and ``timelines.md`` (each run's command, the collectives of the step and every rank's
forward, backward and blocked time, as ``gradsync timeline`` printed them).

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

RUNS = {
    "bucketed": "bucketed",
    "zero3": "zero3",
    "streaming-diloco": "diloco:8,fragments=4,overlap=1,mix=0.5,quant=int8",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("docs/timeline"))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--where", default="loopback,100mbit", help="loopback and/or link rates for 2 nodes")
    ns = ap.parse_args()
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    report = [f"command: `python benchmarks/timelines.py --out-dir {ns.out_dir}`", ""]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = Jobs(Path(tmp))
        try:
            for where in ns.where.split(","):
                for name, spec in RUNS.items():
                    args = ["--strategy", spec, "--max-steps", str(ns.steps), "--eval-interval", "1000"]
                    args += ["--train.profile", f"{ns.steps - 2}:{ns.steps}"]
                    run = Path(tmp) / f"{where}-{name}"
                    jobs.train(where, 2 if where == "loopback" else 1, args, run)
                    png = ns.out_dir / f"{where}-{name}.png"
                    shown = subprocess.run(
                        [sys.executable, "-m", "gradsync.cli", "timeline", str(run), "--out", str(png)],
                        env=dict(os.environ, GRADSYNC_CACHE=str(Path(tmp) / "cache")),
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    nodes = "2 workers on loopback" if where == "loopback" else f"2 nodes at {where}"
                    report += [f"## {name}, {nodes}", "", f"`gradsync train {shlex.join(args)}`", ""]
                    # the prediction needs a calibration profile of the link, which these runs do not make
                    report += [
                        line for line in shown.splitlines() if not line.startswith(("timeline: ", "prediction: "))
                    ]
                    report += ["", f"![{name}, {nodes}]({png.name})", ""]
                    print(f"timelines: {where} {name} done", flush=True)
        finally:
            jobs.close()
    (ns.out_dir / "timelines.md").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
