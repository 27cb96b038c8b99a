"""Two nodes in their own network namespaces (their own addresses, a veth link through a bridge),
one elastic agent and one worker each, meeting at torch's c10d rendezvous on node 0; then a node
dies for real (every process in its namespace gets SIGKILL).

* Node 1 dies and comes back (``--resume``): node 0's worker fails with a line naming the rank and
  the collective, node 0's agent waits in the rendezvous (``--max-restarts``), and the job
  continues from the newest checkpoint to parameters bitwise equal to an uninterrupted run.
* Node 1 dies for good: node 0 stops within the timeout with one line saying which nodes are missing.
* Node 0, which hosts the rendezvous, dies: node 1 stops with one line saying the rendezvous is lost.
* Node 1's link goes down (silence, no closed connection): both nodes' workers stop within the
  collective timeout with a line naming the rank and the collective, and node 1's agent, stuck in
  a call to the store on node 0, is stopped by gradsync's watchdog: never a hang.

Skipped, with the reason, where network namespaces cannot be made (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradsync.checkpoint import format as ckpt
from gradsync.testing import netns

_why = netns.unavailable_reason()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"multi-node tests need network namespaces: {_why}")

ARGS = (
    "--model tiny --data synthetic --seq-len 32 --micro-batch 4 --global-batch 8 --max-steps "
    "300 --ckpt-interval 50 --eval-interval 1000 --eval-sequences 8 --sample-tokens 0 "
    "--no-progress --model.dropout=0.1 --threads 1 --run-dir run"
).split()


class Node:
    """One ``gradsync train`` agent in one namespace, its output in files."""

    def __init__(self, cluster: netns.Cluster, i: int, cwd: Path, *extra: str, timeout: int) -> None:
        self.out, self.err = cwd / f"node{i}-{time.monotonic_ns()}.out", cwd / f"node{i}-{time.monotonic_ns()}.err"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        argv = [
            sys.executable,
            "-m",
            "gradsync.cli",
            "train",
            *ARGS,
            "--nnodes",
            "2",
            "--nproc",
            "1",
            "--rdzv-endpoint",
            f"{cluster.addrs[0]}:29400",
            "--rdzv-id",
            "faults",
            "--local-addr",
            cluster.addrs[i],
            "--timeout",
            str(timeout),
            *extra,
        ]
        self.proc = cluster.popen(i, argv, cwd=cwd, env=env, stdout=self.out.open("w"), stderr=self.err.open("w"))

    def finish(self, within: float) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"node did not finish within {within:.0f} s:\n{self.err.read_text()[-3000:]}")
        return self.proc.returncode, self.out.read_text(), self.err.read_text()


def _wait_for(path: Path, node: Node) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline and node.proc.poll() is None:
        time.sleep(0.05)
    assert path.exists(), f"the run never wrote {path.name}:\n{node.err.read_text()[-3000:]}"


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("gradsync: error:")]
    assert lines, f"no one-line error in:\n{err[-3000:]}"
    return lines[-1]


def _final_params(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])["strategy"]["model"]


@pytest.fixture
def cluster():
    with netns.Cluster(2) as c:
        yield c


def test_node_dies_and_comes_back_resumes_to_the_uninterrupted_result(cluster: netns.Cluster, tmp_path: Path) -> None:
    a = Node(cluster, 0, tmp_path, "--max-restarts", "2", timeout=60)
    time.sleep(0.5)  # node 0 hosts the rendezvous store; node 1 joins it as a client
    b = Node(cluster, 1, tmp_path, "--max-restarts", "2", timeout=60)
    _wait_for(tmp_path / "run" / "checkpoints" / "ckpt_0000100.pt", a)
    t_kill = time.monotonic()
    assert cluster.kill_node(1) >= 2  # node 1's agent and its worker
    b.proc.wait()
    time.sleep(3.0)
    assert a.proc.poll() is None, "node 0 gave up instead of waiting for node 1 in the rendezvous"
    b = Node(cluster, 1, tmp_path, "--max-restarts", "2", "--resume", timeout=60)
    (code_a, out_a, err_a), (code_b, _, err_b) = a.finish(180), b.finish(60)
    assert code_a == 0 and code_b == 0, (err_a[-3000:], err_b[-3000:])
    # The survivor's worker failed at once with a line naming its rank and the collective.
    first = next(ln for ln in err_a.splitlines() if ln.startswith("gradsync: error:"))
    assert "rank 0" in first and "all_reduce failed" in first and "peer" in first, first
    assert "resumed from run/checkpoints/ckpt_0000" in out_a
    assert time.monotonic() - t_kill < 180
    steps = [
        json.loads(ln)["step"]
        for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"train"' in ln
    ]
    assert steps == list(range(1, 301)), "every step logged exactly once across the restart"

    # The same job, never interrupted, on one node with two workers: bitwise the same parameters.
    ref = subprocess.run(
        [sys.executable, "-m", "gradsync.cli", "train", *ARGS[:-1], "ref", "--nproc", "2"],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    got, want = _final_params(tmp_path / "run"), _final_params(tmp_path / "ref")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("dead", [1, 0], ids=["worker-node-dies", "rendezvous-host-dies"])
def test_a_node_that_stays_dead_stops_the_other_with_one_line(
    cluster: netns.Cluster, tmp_path: Path, dead: int
) -> None:
    nodes = [Node(cluster, 0, tmp_path, "--max-restarts", "1", timeout=8)]
    time.sleep(0.5)
    nodes.append(Node(cluster, 1, tmp_path, "--max-restarts", "1", timeout=8))
    _wait_for(tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt", nodes[0])
    t_kill = time.monotonic()
    cluster.kill_node(dead)
    code, _, err = nodes[1 - dead].finish(90)
    assert code == 2
    line = _error_line(err)
    assert "Traceback" not in err, err[-3000:]
    if dead == 1:
        assert "not all 2 nodes joined the rendezvous" in line and "within 8s" in line, line
    else:
        assert "lost the rendezvous at" in line, line
    assert time.monotonic() - t_kill < 90
    assert ckpt.resolve_resume("auto", tmp_path / "run") is not None  # what was saved is still there


def test_a_link_that_goes_silent_fails_both_nodes_within_the_timeout(cluster: netns.Cluster, tmp_path: Path) -> None:
    nodes = [Node(cluster, 0, tmp_path, timeout=6)]
    time.sleep(0.5)
    nodes.append(Node(cluster, 1, tmp_path, timeout=6))
    _wait_for(tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt", nodes[0])
    t_cut = time.monotonic()
    cluster.set_link(1, up=False)
    for rank, node in enumerate(nodes):
        code, _, err = node.finish(90)
        assert code == 2
        first = next((ln for ln in err.splitlines() if ln.startswith("gradsync: error: [rank")), err[-3000:])
        assert f"rank {rank}:" in first and "failed while waiting up to 6s" in first, first
        if rank == 1:  # its agent was inside a call to the store on node 0 when the link went silent
            assert "the rendezvous store at" in _error_line(err) and "has not answered for 6s" in _error_line(err)
    assert time.monotonic() - t_cut < 60
