"""gradsync against a plain DDP training loop: ``gradsync train`` and ``benchmarks/plain_ddp.py``
under ``torchrun`` (nanoGPT's loop on the same model, data, batch and optimizer settings), 2
workers on this machine, run in turn ``--rounds`` times so a slow phase of a shared machine hits
both alike. Each run's median step time (its first ``--skip`` steps left out); the ratio is the
plain loop's median over gradsync's (> 1: gradsync is faster).

    python benchmarks/vs_plain_ddp.py [--rounds 3] [--steps 40] [--strategy bucketed] \\
        [--gradsync-args "--bucket-mb 0"] [--calibrate] [--floor]

``--floor`` adds, each round, one worker alone training half the global batch: the same work
per worker (micro-batch and accumulation) with no communication and an uncontended core, the
floor under both loops; ``plain / floor`` is the most that any loop could gain over the plain one.

``--calibrate`` first runs ``gradsync calibrate`` with 2 workers and hands the profile to every
gradsync run (what ``--bucket-mb 0`` and ``--strategy auto`` read). ``--out FILE.md`` writes the
table with the command.
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

from gradsync.core.config import build_config
from gradsync.training.metrics import read_metrics

HERE = Path(__file__).resolve().parent


def _run(argv: list[str], env: dict[str, str]) -> None:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"vs_plain_ddp: {' '.join(argv[:6])} ... failed:\n{r.stderr[-3000:]}")


def _step_times(run_dir: Path) -> list[float]:
    """Each training step's time, from a gradsync run's metrics file."""
    return [x["step_time_s"] for x in read_metrics(run_dir / "metrics.jsonl") if x["kind"] == "train"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=5, help="first steps of each run left out")
    ap.add_argument("--strategy", default="bucketed")
    ap.add_argument("--gradsync-args", default="", help="more flags for gradsync train only")
    ap.add_argument("--calibrate", action="store_true", help="calibrate first; gradsync runs read the profile")
    ap.add_argument("--floor", action="store_true", help="also time one worker alone on half the global batch")
    ap.add_argument("--out", type=Path, help="write the table here (markdown)")
    ns = ap.parse_args()
    job = [f"--train.max_steps={ns.steps}", f"--train.eval_interval={10 * ns.steps}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    ours_name = f"gradsync train --strategy {ns.strategy} {ns.gradsync_args}".strip()
    medians: dict[str, list[float]] = {"plain DDP loop (torchrun)": [], ours_name: []}
    floor_name = "floor: 1 worker, half the global batch, no communication"
    floor: list[float] = []
    half = build_config(None, {}).train.global_batch // 2
    with tempfile.TemporaryDirectory(prefix="gradsync-vs-ddp-") as tmp:
        work = Path(tmp)
        gs = [sys.executable, "-m", "gradsync.cli"]
        quiet = ["--no-progress", "--threads", "1", "--ckpt-interval", "0", "--sample-tokens", "0"]
        extra = shlex.split(ns.gradsync_args)
        if ns.calibrate:
            profile = work / "profile.json"
            _run([*gs, "calibrate", "--nproc", "2", *quiet, "--out", str(profile), "--max-mb", "16"], env)
            extra += ["--parallel.profile", str(profile)]
        for r in range(ns.rounds):
            out = work / f"plain-{r}.json"
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
            _run([*torchrun, str(29650 + r), str(HERE / "plain_ddp.py"), "--out", str(out), *job], env)
            plain = json.loads(out.read_text())["step_time_s"][ns.skip :]
            run_dir = work / f"gradsync-{r}"
            train = [*gs, "train", "--nproc", "2", *quiet, *job, "--strategy", ns.strategy, *extra]
            _run([*train, "--run-dir", str(run_dir)], env)
            ours = _step_times(run_dir)
            for name, ts in zip(medians, (plain, ours[ns.skip :]), strict=True):
                medians[name].append(statistics.median(ts))
            if ns.floor:
                one = [*gs, "train", "--nproc", "1", *quiet, *job, "--global-batch", str(half), *extra]
                _run([*one, "--strategy", ns.strategy, "--run-dir", str(work / f"floor-{r}")], env)
                floor.append(statistics.median(_step_times(work / f"floor-{r}")[ns.skip :]))
            shown = {**medians, **({floor_name: floor} if floor else {})}
            print(f"round {r + 1}: " + ", ".join(f"{k} {1e3 * v[-1]:.1f} ms" for k, v in shown.items()), flush=True)
    plain_runs, ours_runs = medians.values()
    ratio = statistics.median(plain_runs) / statistics.median(ours_runs)
    command = "python benchmarks/vs_plain_ddp.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"Default job, 2 workers, {ns.rounds} rounds x {ns.steps} steps (first {ns.skip} left out); "
        "each run's median step, then the median over runs:",
        "",
        "| loop | median step ms | runs ms |",
        "|---|---|---|",
        *(
            f"| {name} | {1e3 * statistics.median(v):.1f} | {', '.join(f'{1e3 * x:.1f}' for x in v)} |"
            for name, v in shown.items()
        ),
        "",
        f"speed of gradsync / plain DDP loop: {ratio:.3f}x",
        *(
            [
                f"plain DDP loop / floor: {statistics.median(plain_runs) / statistics.median(floor):.3f}x "
                "(the most any loop could gain)"
            ]
            if floor
            else []
        ),
        "",
        f"command: `{command}`",
    ]
    text = "\n".join(lines)
    print(text)
    if ns.out:
        ns.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
