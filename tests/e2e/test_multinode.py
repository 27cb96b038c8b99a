"""Two "nodes" (two elastic agents, two workers each) meeting at a c10d rendezvous on loopback:
the multi-node path of ``gradsync train`` that torchrun users take, run for real, with the
two-level all-reduce finding its nodes from what the agents tell the workers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gradsync.testing import free_port


def test_two_agents_rendezvous_and_train_together(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "gradsync.cli",
        "train",
        "--nnodes",
        "2",
        "--nproc",
        "2",
        "--strategy",
        "bucketed:hierarchical=true",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "e2e",
        "--run-dir",
        "run",
        "--model",
        "tiny",
        "--seq-len",
        "32",
        "--max-steps",
        "4",
        "--micro-batch",
        "2",
        "--global-batch",
        "8",
        "--sample-tokens",
        "0",
        "--no-progress",
        "--timeout",
        "60",
    ]
    logs = [(tmp_path / f"node{i}.out", tmp_path / f"node{i}.err") for i in range(2)]
    nodes = []
    for out, err in logs:
        # On real clusters exactly one node owns the endpoint's address; on one machine both agents
        # would, so the second starts a moment later and joins as a client, as a remote node does.
        nodes.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out.open("w"), stderr=err.open("w")))
        time.sleep(1.0)
    deadline = time.monotonic() + 150
    for n in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            n.wait(timeout=max(1.0, deadline - time.monotonic()))
    hung = [i for i, n in enumerate(nodes) if n.poll() is None]
    for n in nodes:
        n.kill()
        n.wait()
    outs = [(o.read_text(), e.read_text()) for o, e in logs]
    assert not hung, f"node(s) {hung} did not finish in 150 s: {[e[-2000:] for _, e in outs]}"
    for n, (out, err) in zip(nodes, outs):
        assert n.returncode == 0, (out[-2000:], err[-3000:])
    assert sum("4 worker(s)" in out for out, _ in outs) == 1  # rank 0 reports, on one node only
    assert sum("two-level all-reduce over 2 node(s) x 2 worker(s)" in out for out, _ in outs) == 1
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    assert steps == [1, 2, 3, 4]
