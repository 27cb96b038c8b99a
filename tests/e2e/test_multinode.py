"""Two "nodes" (two elastic agents, one worker each) meeting at a c10d rendezvous on loopback:
the multi-node path of ``gradsync train`` that torchrun users take, run for real."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_agents_rendezvous_and_train_together(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ, GRADSYNC_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "gradsync.cli", "train", "--nnodes", "2", "--nproc", "1",
           "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "e2e", "--run-dir", "run",
           "--model", "tiny", "--seq-len", "32", "--max-steps", "4", "--micro-batch", "4",
           "--global-batch", "8", "--sample-tokens", "0", "--no-progress", "--timeout", "60"]
    nodes = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [n.communicate(timeout=180) for n in nodes]
    for n, (out, err) in zip(nodes, outs):
        assert n.returncode == 0, err[-3000:]
    assert sum("2 worker(s)" in out for out, _ in outs) == 1  # rank 0 reports, on one node only
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if '"train"' in line]
    assert steps == [1, 2, 3, 4]
