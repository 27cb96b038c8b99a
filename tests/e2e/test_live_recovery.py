"""Live recovery (``--fault-tolerance live``, on torchft) with real processes: a Lighthouse and three
replicas of ``gradsync train`` on loopback. One replica is killed (SIGKILL) mid-run and started
again; the other two never stop, the returning one copies the live state from a peer, every
replica ends with the same weights, and the run ends where an unbroken one does."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradsync.checkpoint import format as ckpt
from gradsync.training.metrics import read_metrics

if importlib.util.find_spec("torchft") is None:  # the 'ft' extra, which the README's set-up installs
    pytest.skip("torchft is not installed", allow_module_level=True)

# One worker per replica, 12 sequences a step: 4 each with three replicas, 6 with two (micro-batches
# of 4 and 2, weighted). The default per-tensor AdamW, as every equivalence test.
ARGS = (
    "--nproc 1 --model tiny --data synthetic --seq-len 32 --micro-batch 4 --global-batch 12 "
    "--sample-tokens 0 --no-progress --timeout 10 --eval-sequences 24 --peak-tflops 1 --optim.kernel default"
).split()
QUORUM_TIMEOUT_S = 15.0  # no step of a healthy replica may wait longer than this
HEARTBEAT_S = 2.0  # the Lighthouse drops a replica silent this long


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def _gradsync(tmp_path: Path, *args: str, log: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gradsync.cli", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=open(tmp_path / log, "w"),  # noqa: SIM115 (the process holds it)
        stderr=subprocess.STDOUT,
        text=True,
    )


class Lighthouse:
    def __init__(self, tmp_path: Path, min_replicas: int) -> None:
        self.proc = _gradsync(
            tmp_path,
            "lighthouse",
            "--port",
            "0",
            "--min-replicas",
            str(min_replicas),
            "--heartbeat-timeout",
            str(HEARTBEAT_S),
            log="lighthouse.txt",
        )
        deadline, log = time.time() + 60, tmp_path / "lighthouse.txt"
        while time.time() < deadline:
            found = re.search(r"lighthouse at http://[^:\s]+:(\d+)", log.read_text())
            if found:
                self.address = f"localhost:{found.group(1)}"
                return
            assert self.proc.poll() is None, log.read_text()
            time.sleep(0.1)
        raise AssertionError("the lighthouse did not start")

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=30) == 0


def _replica(tmp_path: Path, lighthouse: Lighthouse, i: int, *extra: str, log: str = "") -> subprocess.Popen[str]:
    return _gradsync(
        tmp_path,
        "train",
        *ARGS,
        "--fault-tolerance",
        "live",
        "--lighthouse",
        lighthouse.address,
        "--replica-id",
        str(i),
        "--quorum-timeout-s",
        str(QUORUM_TIMEOUT_S),
        "--run-dir",
        f"r{i}",
        *extra,
        log=log or f"r{i}.txt",
    )


def _train_records(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]


def _final_model(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])["strategy"]["model"]


def _unbroken(tmp_path: Path, steps: int, eval_every: int) -> dict:
    """The same run as one process: the whole global batch each step, never interrupted."""
    r = subprocess.run(
        [sys.executable, "-m", "gradsync.cli", "train", *ARGS, "--max-steps", str(steps), "--run-dir", "ref"]
        + ["--eval-interval", str(eval_every)],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((tmp_path / "ref" / "summary.json").read_text())


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and any(r["step"] >= step for r in _train_records(run)):
            return
        assert proc.poll() is None, f"{run} ended before step {step}"
        time.sleep(0.05)
    raise AssertionError(f"{run} did not reach step {step}")


def _kill_the_third_and_bring_it_back(
    tmp_path: Path, lighthouse: Lighthouse, run: list[str], killed_at: int, *again: str
) -> list[int]:
    """Three replicas; the third SIGKILLed once it logged step ``killed_at`` and started again (with
    ``again``) once the others have gone on as two. The exit codes of the two and the returned one."""
    procs = [_replica(tmp_path, lighthouse, i, *run) for i in range(3)]
    _wait_for_step(tmp_path / "r2", killed_at, procs[2])
    procs[2].kill()
    procs[2].wait()
    deadline = time.time() + 60
    while not any(r.get("replicas") == 2 and r["step"] > killed_at for r in _train_records(tmp_path / "r0")):
        assert time.time() < deadline, "the survivors did not go on as two replicas"
        time.sleep(0.05)
    back = _replica(tmp_path, lighthouse, 2, *run, *again, log="r2-back.txt")
    return [p.wait(timeout=600) for p in (procs[0], procs[1], back)]


def test_a_killed_replica_rejoins_from_a_peer_while_the_others_never_stop(tmp_path: Path) -> None:
    steps, killed_at = 150, 20
    lighthouse = Lighthouse(tmp_path, min_replicas=2)
    run = ["--max-steps", str(steps), "--eval-interval", "50", "--ckpt-interval", "50", "--min-replicas", "2"]
    codes = _kill_the_third_and_bring_it_back(tmp_path, lighthouse, run, killed_at, "--resume")
    lighthouse.stop()
    logs = {n: (tmp_path / f"{n}.txt").read_text() for n in ("r0", "r1", "r2-back")}
    assert codes == [0, 0, 0], {n: t[-1500:] for n, t in logs.items()}

    taken: set[int] = set()
    for name in ("r0", "r1"):  # the survivors: no step twice, none held up beyond the quorum timeout
        records = _train_records(tmp_path / name)
        trained = [r["step"] for r in records]
        assert trained[0] < killed_at  # the first quorums may form before a slow starter is there
        assert trained == sorted(set(trained))
        # a step whose collective failed on one survivor only is committed by the other, and the
        # first copies its state ("caught up"): between them the survivors took every step
        caught_up = logs[name].count("caught up with the live job")
        assert len(trained) >= steps - trained[0] + 1 - caught_up
        taken |= set(trained)
        assert max(r["step_time_s"] for r in records) < QUORUM_TIMEOUT_S
        assert {r["replicas"] for r in records} == {2, 3}  # steps were taken by two while one was away
    assert taken == set(range(1, steps + 1))
    rejoined = re.search(r"joined the live job at step (\d+)", logs["r2-back"])
    assert rejoined and killed_at <= int(rejoined.group(1)) < steps, logs["r2-back"][-1500:]
    assert _train_records(tmp_path / "r2")[0]["step"] == int(rejoined.group(1)) + 1

    final = [_final_model(tmp_path / f"r{i}") for i in range(3)]
    for other in final[1:]:  # the returning replica's copy and every update since: bitwise the same
        assert all(torch.equal(final[0][k], other[k]) for k in final[0])
    # Against one process taking the whole batch: the same examples at every step, summed in
    # another order (per replica, then across them), so the runs differ by fp32 rounding, which
    # Adam's normalised update carries along; measured 1e-5 nats apart in validation loss.
    ref = _unbroken(tmp_path, steps, 50)
    live = json.loads((tmp_path / "r0" / "summary.json").read_text())
    assert abs(live["final_val_loss"] - ref["final_val_loss"]) < 1e-3


def test_a_whole_live_job_stopped_and_resumed_continues_from_its_checkpoints(tmp_path: Path) -> None:
    """Nothing saved is lost in live mode: both replicas stop after 10 steps, start again with
    --resume, continue from their own checkpoints, and end as an unbroken run does."""
    lighthouse = Lighthouse(tmp_path, min_replicas=2)
    run = ["--max-steps", "20", "--eval-interval", "20", "--ckpt-interval", "5", "--min-replicas", "2"]
    for stage in ("--stop-after=10", "--resume"):
        procs = [_replica(tmp_path, lighthouse, i, *run, stage) for i in range(2)]
        assert [p.wait(timeout=300) for p in procs] == [0, 0], (tmp_path / "r0.txt").read_text()[-1500:]
    lighthouse.stop()
    assert "resumed from" in (tmp_path / "r0.txt").read_text()
    for i in range(2):
        assert [r["step"] for r in _train_records(tmp_path / f"r{i}")] == list(range(1, 21))
    a, b = _final_model(tmp_path / "r0"), _final_model(tmp_path / "r1")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref = _unbroken(tmp_path, 20, 20)
    live = json.loads((tmp_path / "r0" / "summary.json").read_text())
    assert abs(live["final_val_loss"] - ref["final_val_loss"]) < 1e-3


def test_no_lighthouse_and_too_few_replicas_are_one_line_errors(tmp_path: Path) -> None:
    lighthouse = Lighthouse(tmp_path, min_replicas=1)
    free = subprocess.run(  # a port nobody listens on
        [sys.executable, "-c", "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    short = ["--max-steps", "5", "--timeout", "3", "--quorum-timeout-s", "3"]
    nobody = _gradsync(
        tmp_path,
        "train",
        *ARGS,
        *short,
        "--fault-tolerance",
        "live",
        "--lighthouse",
        f"localhost:{free}",
        "--replica-id",
        "0",
        "--run-dir",
        "a",
        log="a.txt",
    )
    alone = _replica(tmp_path, lighthouse, 1, *short, "--min-replicas", "2", log="b.txt")
    assert nobody.wait(timeout=120) == 2 and alone.wait(timeout=120) == 2
    lighthouse.stop()
    for log, needle in (
        ("a.txt", f"cannot reach the torchft Lighthouse at localhost:{free}"),
        ("b.txt", "only 1 replica(s) alive for 3s (parallel.quorum_timeout_s), fewer than parallel.min_replicas=2"),
    ):
        errors = [line for line in (tmp_path / log).read_text().splitlines() if line.startswith("gradsync: error:")]
        assert len(errors) == 1 and needle in errors[0], (tmp_path / log).read_text()[-1500:]
        assert "Traceback" not in (tmp_path / log).read_text()


def test_a_late_zero2_replica_copies_its_optimizer_shards_from_the_same_ranks(tmp_path: Path) -> None:
    """ZeRO-2 inside replicas of two workers: each rank holds its shard of the optimizer state, so
    a replica that joins late copies, rank by rank, the shard of the same rank of a live peer.
    Replica 0 trains 10 steps alone first; then both start, replica 1 from nothing. Both end with
    the same parameters and optimizer state (the checkpoint gathers the shards)."""
    run = ["--max-steps", "30", "--eval-interval", "30", "--strategy", "zero2", "--nproc", "2", "--micro-batch", "2"]
    lighthouse = Lighthouse(tmp_path, min_replicas=1)
    assert _replica(tmp_path, lighthouse, 0, *run, "--stop-after", "10").wait(timeout=300) == 0
    lighthouse.stop()
    lighthouse = Lighthouse(tmp_path, min_replicas=2)
    procs = [_replica(tmp_path, lighthouse, 0, *run, "--resume"), _replica(tmp_path, lighthouse, 1, *run)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0], (tmp_path / "r1.txt").read_text()[-1500:]
    lighthouse.stop()
    assert "joined the live job at step 10" in (tmp_path / "r1.txt").read_text()
    a, b = (ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / f"r{i}")[-1])["strategy"] for i in range(2))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_diloco_across_replicas_goes_on_without_a_dead_one_and_takes_it_back(tmp_path: Path) -> None:
    """DiLoCo across three replicas of one worker: no gradient crosses between replicas, the outer
    step every 4 steps averages their parameters. A replica killed mid-run is left out of the next
    average (its work since the last one is lost); when it returns it copies a live peer's model,
    inner and outer optimizer state and place in the period, and the last outer step leaves all
    three bitwise equal."""
    steps, killed_at = 240, 20  # the killed one must come back before the others end: it rejoined at 73-85
    lighthouse = Lighthouse(tmp_path, min_replicas=2)
    run = ["--max-steps", str(steps), "--eval-interval", str(steps), "--strategy", "diloco:4", "--min-replicas", "2"]
    codes = _kill_the_third_and_bring_it_back(tmp_path, lighthouse, run, killed_at)
    lighthouse.stop()
    assert codes == [0, 0, 0], (tmp_path / "r2-back.txt").read_text()[-1500:]
    assert "joined the live job at step" in (tmp_path / "r2-back.txt").read_text()
    for name in ("r0", "r1"):
        assert max(r["step_time_s"] for r in _train_records(tmp_path / name)) < QUORUM_TIMEOUT_S
    final = [_final_model(tmp_path / f"r{i}") for i in range(3)]
    for other in final[1:]:
        assert all(torch.equal(final[0][k], other[k]) for k in final[0])
