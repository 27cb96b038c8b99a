"""Train the guide's example runs and keep what they measured, for the guide to quote.

Each run is one ``gradsync train`` command as a user types it (2 workers over gloo on this
machine). What it leaves is copied into ``--out-dir``: ``results.json`` (per run: the command,
wall time, ``summary.json``, every validation line of ``metrics.jsonl``, the median step time
and throughput of steps after warm-up, the first lines of the sample) and ``<run>.png`` (the
run's own ``loss.png``). The guide's numbers and plots of these runs come from there (``docs/numbers.yml``).

    python benchmarks/guide_runs.py --out-dir docs/runs                 # all, ~11 min on 2 cores
    python benchmarks/guide_runs.py --runs image,speech --out-dir docs/runs   # some, merged in
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradsync.core.files import atomic_write_bytes
from gradsync.training.metrics import read_metrics

RUNS = {
    "default": "gradsync train",
    "bert": "gradsync train --task bert",
    "image": (
        "gradsync train --task image --micro-batch 32 --global-batch 64 --max-steps 300 "
        "--eval-interval 50 --train.eval_sequences 1000"
    ),
    "speech": (
        "gradsync train --task speech --micro-batch 32 --global-batch 64 --max-steps 200 "
        "--eval-interval 50 --train.eval_sequences 1000"
    ),
}
WARMUP_STEPS = 10  # steps left out of the median step time and throughput


def run_one(name: str, command: str, work: Path) -> dict:
    """Run ``command`` with its run folder under ``work`` and collect what it measured."""
    run_dir = work / name
    argv = shlex.split(command)
    exe = Path(sys.executable).with_name("gradsync")
    argv = [str(exe)] + argv[1:] + ["--run-dir", str(run_dir)]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    records = read_metrics(run_dir / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "train" and r["step"] > WARMUP_STEPS]
    evals = [r for r in records if r["kind"] == "eval"]
    sample = (run_dir / "sample.txt").read_text() if (run_dir / "sample.txt").exists() else ""
    return {
        "command": command,
        "wall_s": wall,
        "summary": json.loads((run_dir / "summary.json").read_text()),
        "evals": evals,
        "median_step_ms": statistics.median(r["step_time_s"] for r in steps) * 1e3,
        "median_tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in steps),
        "sample": "\n".join(sample.splitlines()[:8]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=",".join(RUNS), help=f"some of {','.join(RUNS)}")
    ap.add_argument("--out-dir", type=Path, default=Path("docs/runs"))
    args = ap.parse_args()
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        sys.exit(f"guide_runs: unknown run(s) {unknown}: choose from {','.join(RUNS)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "results.json"
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"guide_runs: {name}: {RUNS[name]}", flush=True)
            results["runs"][name] = run_one(name, RUNS[name], Path(tmp))
            shutil.copyfile(Path(tmp) / name / "loss.png", args.out_dir / f"{name}.png")
            results["command"] = "python benchmarks/guide_runs.py --out-dir " + str(args.out_dir)
            atomic_write_bytes(out, json.dumps(results, indent=1).encode("utf-8"))
            print(f"guide_runs: {name}: {results['runs'][name]['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
