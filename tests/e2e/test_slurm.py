"""``examples/slurm/train.sbatch`` run for real on this host, with the environment a one-node
Slurm job has and stand-ins for ``srun`` (one task, the job step's variables) and ``scontrol``
(records the requeue): preempted by SIGTERM to every process of the job, as Slurm does, it saves,
requeues itself, and the requeued job resumes and finishes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gradsync.checkpoint import format as ckpt
from gradsync.core import slurm

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "examples" / "slurm" / "train.sbatch"
ARGS = (
    "--nproc 2 --model tiny --data synthetic --seq-len 32 --micro-batch 4 --global-batch 8 "
    "--max-steps 150 --ckpt-interval 50 --eval-interval 1000 --eval-sequences 8 --sample-tokens "
    "0 --no-progress"
).split()

FAKE_SRUN = """#!/bin/bash
# srun on one host: its own options dropped, one task with a one-node job step's environment
while [[ "$1" == --* ]]; do shift; done
export SLURM_STEP_ID=0 SLURM_STEP_NUM_NODES=$SLURM_JOB_NUM_NODES SLURM_STEP_NUM_TASKS=$SLURM_JOB_NUM_NODES \\
       SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_STEP_NODELIST=$SLURM_JOB_NODELIST
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
echo "$@" >> "$SCONTROL_LOG"
"""


def _job(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "scontrol.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}",
        SCONTROL_LOG=str(log),
        SLURM_JOB_ID="4242",
        SLURM_JOB_NUM_NODES="1",
        SLURM_JOB_NODELIST=socket.gethostname(),
        PYTHONUNBUFFERED="1",
    )
    return env, log


def test_sbatch_is_preempted_requeues_and_the_requeued_job_finishes(tmp_path: Path) -> None:
    env, log = _job(tmp_path)
    run = tmp_path / "runs" / "slurm-4242"
    first = subprocess.Popen(
        ["bash", str(SBATCH), *ARGS],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while not ckpt.list_checkpoints(run) and time.time() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()[1][-2000:]
    os.killpg(first.pid, signal.SIGTERM)  # Slurm's preemption: every process of the job
    out, err = first.communicate(timeout=120)
    assert first.returncode == 3, err[-3000:]
    assert "gradsync: Slurm job 4242: node 0 of 1, 2 worker(s) per node" in err
    assert "requeueing job 4242" in out
    assert log.read_text().split() == ["requeue", "4242"]
    stopped_at = ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])["step"]
    assert 50 <= stopped_at < 150

    log.unlink()
    second = subprocess.run(
        ["bash", str(SBATCH), *ARGS], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert (
        f"gradsync: resumed from runs/slurm-4242/checkpoints/ckpt_{stopped_at:07d}.pt at step {stopped_at}"
        in second.stdout
    ), second.stdout[-2000:]
    assert not log.exists()  # a finished job is not requeued
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])["step"] == 150
    assert (run / "summary.json").is_file()


def _free_job_id() -> str:
    """A job id whose rendezvous port (20000 + id mod 10000) is free now."""
    for job in random.sample(range(10000, 20000), 200):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", slurm.rendezvous_port(str(job))))
            except OSError:
                continue
        return str(job)
    raise RuntimeError("no free port in 20000-29999")


def test_a_two_node_job_step_trains_with_the_rendezvous_slurm_gives(tmp_path: Path) -> None:
    """Two "nodes" of one job step on this host (each its own launcher, SLURM_NODEID 0 and 1, the
    node list naming this host twice): node 0 hosts the rendezvous at the first node, port from
    the job id, and both train together with nothing but the environment."""
    env, _ = _job(tmp_path)
    job = _free_job_id()
    step = dict(
        env,
        SLURM_JOB_ID=job,
        SLURM_STEP_NUM_NODES="2",
        SLURM_STEP_NUM_TASKS="2",
        SLURM_STEP_NODELIST="localhost,localhost",
    )
    args = [a if a != "2" or i == 0 or ARGS[i - 1] != "--nproc" else "1" for i, a in enumerate(ARGS)]
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gradsync.cli",
                "train",
                *args,
                "--max-steps",
                "8",
                "--run-dir",
                "run",
                "--timeout",
                "60",
            ],
            cwd=tmp_path,
            env=dict(step, SLURM_NODEID=str(n)),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in (0, 1)
    ]
    outs = [n.communicate(timeout=240) for n in nodes]
    for n, (_, err) in zip(nodes, outs):
        assert n.returncode == 0, err[-3000:]
    port = slurm.rendezvous_port(job)
    assert f"gradsync: Slurm job {job}: node 1 of 2, 1 worker(s) per node, rendezvous at localhost:{port}" in outs[1][1]
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "run")[-1])["step"] == 8
