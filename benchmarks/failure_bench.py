"""Failures, measured: restart from a checkpoint against live recovery, a replica killed every N steps.

``--replicas`` network-namespace nodes (:mod:`gradsync.testing.netns`, links shaped to ``--rate``;
needs root) train the same job, one worker each, twice over:

* **restart**: one elastic job over all nodes (``--nnodes R --max-restarts``), a checkpoint every
  ``--ckpt-every`` steps. A node's death stops every worker; the other agents wait in the
  rendezvous until it is back, then every worker reloads the newest checkpoint and redoes the steps
  since it.
* **live**: ``--fault-tolerance live``, each node one replica, a Lighthouse on one more node that
  never fails (``--heartbeat`` seconds without a heartbeat drop a replica). A node's death drops
  its replica at the next step; the others go on with its share of the batch; when it is back it
  copies the state of a live peer.

Every ``--kill-every`` steps of progress the last node "loses power" (SIGKILL to every process in
its namespace) and is started again ``--down`` seconds later (with ``--resume``). Each mode also
runs once unbroken. The benchmark watches the metrics of a node that never fails (the shared run
of the restart job; the live replicas that are never killed) and notes the wall time at which each
new step first appears:

* time to step ``--steps`` from the first step: the time to the target loss, which both modes reach
  at that step (restart is bitwise the unbroken run; live differs by rounding: the table shows the
  validation losses);
* steps per hour of the healthy replicas over that time, and the longest wait for a new step;
* the planner's prediction beside it: :mod:`gradsync.planning.goodput` fed this run's failure
  interval (wall time / kills), the unbroken run's step time and start-up time, and the
  checkpoint interval; predicted steps per hour = unbroken steps per hour x goodput.

    python benchmarks/failure_bench.py --out-dir docs/failures

Writes ``failures.json`` (every run) and ``failures.md`` (the table, with the command).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gradsync.planning import goodput
from gradsync.testing import netns
from gradsync.training.metrics import read_metrics

JOB = ["--sample-tokens", "0", "--no-progress", "--threads", "1", "--peak-tflops", "1", "--nproc", "1"]


class Progress:
    """The wall time at which each new step (beyond every step seen so far) first appears in the
    metrics of the healthy replicas: steps redone after a restart are not progress, and a live
    replica that copied a step from a peer (whose commit failed only on it) does not log it."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.first: dict[int, float] = {}

    def poll(self) -> int:
        now, top = time.time(), self.top
        steps = sorted(
            {r["step"] for p in self.paths if p.exists() for r in read_metrics(p) if r.get("kind") == "train"}
        )
        for s in steps:
            if s > top:
                self.first[s] = now
        return self.top

    @property
    def top(self) -> int:
        return max(self.first, default=0)


class Run:
    """One mode's processes on the cluster, a node of which can be killed and started again."""

    def __init__(self, mode: str, ns: argparse.Namespace, cluster: netns.Cluster, work: Path, port: int) -> None:
        self.mode, self.ns, self.cluster, self.work, self.port = mode, ns, cluster, work, port
        self.env = dict(os.environ, GRADSYNC_CACHE=str(ns.cache), PYTHONUNBUFFERED="1")
        self.logs: list[Any] = []
        self.procs: dict[int, subprocess.Popen[Any]] = {}
        self.lighthouse: subprocess.Popen[Any] | None = None
        job = [*JOB, *shlex.split(ns.extra), "--max-steps", str(ns.steps), "--ckpt-interval", str(ns.ckpt_every)]
        self.job = [*job, "--eval-interval", str(ns.steps), "--timeout", str(ns.timeout)]
        if mode == "live":
            lh = len(cluster.nodes) - 1
            self.lighthouse = self._popen(
                lh,
                # a quorum needs two replicas: one alone at the start would race ahead of the others
                ["lighthouse", "--port", str(port), "--min-replicas", "2", "--heartbeat-timeout", str(ns.heartbeat)],
                "lighthouse",
            )
            time.sleep(1.0)
        healthy = ["run"] if mode == "restart" else [f"r{i}" for i in range(ns.replicas - 1)]
        self.watch = Progress([work / name / "metrics.jsonl" for name in healthy])
        self.launched = time.time()
        for i in range(ns.replicas):
            self.start(i, resume=False)
            if i == 0 and mode == "restart":
                time.sleep(0.5)  # node 0 hosts the rendezvous

    def _popen(self, node: int, args: list[str], name: str) -> subprocess.Popen[Any]:
        out = (self.work / f"{name}.log").open("a")
        self.logs.append(out)
        argv = [sys.executable, "-m", "gradsync.cli", *args]
        return self.cluster.popen(node, argv, cwd=self.work, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def start(self, i: int, resume: bool) -> None:
        addr = self.cluster.addrs[i]
        if self.mode == "restart":
            where = [
                "--nnodes",
                str(self.ns.replicas),
                "--rdzv-endpoint",
                f"{self.cluster.addrs[0]}:{self.port}",
                "--rdzv-id",
                f"restart{self.port}",
                "--max-restarts",
                "100",
                "--run-dir",
                "run",
            ]
        else:
            where = [
                "--fault-tolerance",
                "live",
                "--lighthouse",
                f"{self.cluster.addrs[-1]}:{self.port}",
                "--replica-id",
                str(i),
                "--quorum-timeout-s",
                str(self.ns.timeout),
                "--run-dir",
                f"r{i}",
            ]
        args = ["train", *self.job, *where, "--local-addr", addr, *(["--resume"] if resume else [])]
        self.procs[i] = self._popen(i, args, f"{self.mode}-node{i}")

    def kill(self, i: int) -> None:
        self.cluster.kill_node(i)
        self.procs[i].wait()

    def done(self) -> bool:
        return all(p.poll() is not None for p in self.procs.values())

    def close(self) -> list[int]:
        codes = [p.wait() for p in self.procs.values()]
        if self.lighthouse is not None:
            self.lighthouse.terminate()
            self.lighthouse.wait()
        for f in self.logs:
            f.close()
        return codes


def measure(mode: str, kills: bool, ns: argparse.Namespace, port: int) -> dict[str, Any]:
    """One run of ``mode`` (with kills or unbroken) on a fresh cluster."""
    work = Path(tempfile.mkdtemp(prefix=f"failures-{mode}-", dir=ns.work))
    victim = ns.replicas - 1
    with netns.Cluster(ns.replicas + (mode == "live")) as cluster:
        cluster.shape(ns.rate)
        run = Run(mode, ns, cluster, work, port)
        next_kill = ns.kill_every if kills else 0
        back_at: float | None = None
        kill_times: list[float] = []
        deadline = time.time() + ns.limit
        while not run.done() and time.time() < deadline:
            top = run.watch.poll()
            if next_kill and top >= next_kill and back_at is None and top < ns.steps:
                run.kill(victim)
                kill_times.append(time.time())
                back_at = time.time() + ns.down
                next_kill += ns.kill_every
            if back_at is not None and time.time() >= back_at:
                run.start(victim, resume=True)
                back_at = None
            time.sleep(0.05)
        if not run.done():
            for p in run.procs.values():
                p.kill()
            raise RuntimeError(f"{mode}: not finished within {ns.limit}s; logs in {work}")
        run.watch.poll()
        codes = run.close()
    if any(codes):
        raise RuntimeError(f"{mode}: a node failed ({codes}); logs in {work}")
    first = run.watch.first
    steps = sorted(first)
    # a live replica may join at step 2: the first quorum can form before it is there
    assert steps[0] <= 2 and steps == list(range(steps[0], ns.steps + 1)), f"{mode}: steps {steps[:3]}..{steps[-3:]}"
    span = first[ns.steps] - first[steps[0]]
    gaps = [first[s + 1] - first[s] for s in steps[:-1]]
    summary = json.loads((work / ("run" if mode == "restart" else "r0") / "summary.json").read_text())
    return {
        "mode": mode,
        "kills": len(kill_times),
        "startup_s": first[steps[0]] - run.launched,
        "time_s": span,
        "steps_per_hour": 3600 * (ns.steps - steps[0]) / span,
        "longest_wait_s": max(gaps),
        "step_s": sorted(gaps)[len(gaps) // 2],
        "val_loss": summary["final_val_loss"],
        "work": str(work),
    }


def predict(mode: str, broken: dict[str, Any], unbroken: dict[str, Any], ns: argparse.Namespace) -> float:
    """Steps per hour the planner predicts for ``broken``'s failure rate, from the unbroken run."""
    if not broken["kills"]:
        return unbroken["steps_per_hour"]
    f = goodput.Failures(
        mtbf_node_s=ns.replicas * broken["time_s"] / broken["kills"],  # the job failed every time_s / kills
        nodes=ns.replicas,
        checkpoint_s=ns.checkpoint_s,
        restart_s=ns.down + unbroken["startup_s"],
        reload_s=ns.checkpoint_s,
        join_s=ns.checkpoint_s,  # the state travels as fast as it is written, here
        step_s=unbroken["step_s"],
        quorum_s=ns.heartbeat,  # the survivors notice the silence, then agree
    )
    tau = ns.ckpt_every * unbroken["step_s"]  # training time between checkpoints
    g = goodput.restart_goodput(f, tau) if mode == "restart" else goodput.live_goodput(f)
    return g * unbroken["steps_per_hour"]


def table(rows: list[dict[str, Any]], ns: argparse.Namespace, command: str) -> str:
    lines = [
        f"{ns.replicas} nodes at {ns.rate}, one worker each, {ns.steps} steps; the last node killed every "
        f"{ns.kill_every} steps of progress and back {ns.down:g} s later; a checkpoint every {ns.ckpt_every} "
        f"steps; live: a replica silent {ns.heartbeat:g} s is dropped.",
        "",
        f"| recovery | kills | time to step {ns.steps} (s) | steps/h (healthy) | planner: steps/h "
        f"| longest wait (s) | cost per failure (s) | val loss at {ns.steps} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cost = "" if r["cost_per_failure_s"] is None else f"{r['cost_per_failure_s']:.1f}"
        lines.append(
            f"| {r['mode']}{'' if r['kills'] else ' (unbroken)'} | {r['kills']} | {r['time_s']:.1f} | "
            f"{r['steps_per_hour']:,.0f} | {r['predicted_steps_per_hour']:,.0f} | {r['longest_wait_s']:.1f} | "
            f"{cost} | {r['val_loss']:.4f} |"
        )
    lines += ["", f"    {command}", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path("failure-results"))
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--kill-every", type=int, default=75, help="steps of progress between kills")
    ap.add_argument("--down", type=float, default=5.0, help="seconds a killed node stays down")
    ap.add_argument("--ckpt-every", type=int, default=20)
    ap.add_argument("--heartbeat", type=float, default=2.0, help="live: seconds of silence that drop a replica")
    ap.add_argument("--checkpoint-s", type=float, default=0.05, help="planner: seconds to write or read the state")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--timeout", type=float, default=60.0, help="collective and quorum timeout (s)")
    ap.add_argument("--limit", type=float, default=1200.0, help="seconds a run may take")
    ap.add_argument(
        "--extra",
        default="--model small --data synthetic --seq-len 128 --micro-batch 8 --global-batch 24 --optim.kernel default",
        help="the job: gradsync train flags",
    )
    ap.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    ns = ap.parse_args()
    why = netns.unavailable_reason()
    if why:
        print(f"failure_bench: needs network namespaces: {why}", file=sys.stderr)
        return 2
    ns.work = ns.work or Path(tempfile.mkdtemp(prefix="failure-bench-"))
    ns.work.mkdir(parents=True, exist_ok=True)
    ns.cache = ns.work / "cache"
    command = "python benchmarks/failure_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rows: list[dict[str, Any]] = []
    port = 29800
    for mode in ("restart", "live"):
        unbroken = measure(mode, False, ns, port := port + 1)
        broken = measure(mode, True, ns, port := port + 1)
        for r in (unbroken, broken):
            r["predicted_steps_per_hour"] = predict(mode, r, unbroken, ns)
            # what each failure cost the healthy replicas: the time beyond the unbroken run's
            r["cost_per_failure_s"] = (r["time_s"] - unbroken["time_s"]) / r["kills"] if r["kills"] else None
            rows.append(r)
            print(json.dumps(r), flush=True)
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    (ns.out_dir / "failures.json").write_text(json.dumps({"command": command, "runs": rows}, indent=1) + "\n")
    text = table(rows, ns, command)
    (ns.out_dir / "failures.md").write_text("# Restart from a checkpoint vs live recovery\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
