"""tokens/s of the default job (GPT small, seq 128, global batch 64, 2 workers, bucketed) with and
without ``--compile``, interleaved, median over the steady steps of each run and then over
``--repeats`` runs; the first ``--skip`` steps (compilation) are left out.

    .venv/bin/python benchmarks/compile_speed.py [--steps 60] [--repeats 3] [--skip 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(root: Path, name: str, steps: int, skip: int, extra: list[str]) -> float:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradsync.cli",
            "train",
            "--max-steps",
            str(steps),
            "--sample-tokens",
            "0",
            "--eval-interval",
            "100000",
            "--ckpt-interval",
            "0",
            "--no-progress",
            "--run-dir",
            str(root / name),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    recs = [json.loads(x) for x in (root / name / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    return statistics.median(x["tokens_per_sec"] for x in recs[skip:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", type=int, default=10)
    a = ap.parse_args()
    got: dict[str, list[float]] = {"eager": [], "compiled": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            for name, extra in (("eager", []), ("compiled", ["--compile"])):
                got[name].append(run(Path(tmp), f"{name}-{i}", a.steps, a.skip, extra))
                print(f"{name} run {i}: {got[name][-1]:,.0f} tokens/s", flush=True)
    e, c = statistics.median(got["eager"]), statistics.median(got["compiled"])
    print(f"median of {a.repeats}: eager {e:,.0f} tokens/s, compiled {c:,.0f} tokens/s, compiled / eager {c / e:.3f}")


if __name__ == "__main__":
    main()
