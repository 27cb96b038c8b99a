"""Workers die for real (SIGKILL) under ``gradsync train --max-restarts``: the elastic agent
restarts every worker, they continue from the newest checkpoint, and the run ends with exactly the
parameters of a run that was never interrupted."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradsync.checkpoint import format as ckpt
from gradsync.core.errors import EXIT_PREEMPTED

ARGS = (
    "--nproc 2 --model tiny --data synthetic --seq-len 32 --micro-batch 4 --global-batch 8 "
    "--max-steps 300 --ckpt-interval 50 --eval-interval 1000 --eval-sequences 8 --sample-tokens "
    "0 --no-progress --model.dropout=0.1"
).split()


def _start(cwd: Path, run: str, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "gradsync.cli", "train", *ARGS, "--run-dir", run, *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _workers(agent: int) -> list[int]:
    """PIDs of the agent's worker processes (children running gradsync.runtime.worker)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent and b"gradsync.runtime.worker" in cmd:
            pids.append(int(d.name))
    return sorted(pids)


def _workers_after(proc: subprocess.Popen[str], checkpoint: Path) -> list[int]:
    """Wait until ``checkpoint`` is written, then return the run's two worker PIDs."""
    deadline = time.time() + 180
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists(), f"the run never wrote {checkpoint.name}"
    victims = _workers(proc.pid)
    assert len(victims) == 2, victims
    return victims


def _final_params(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])["strategy"]["model"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final parameters of the run (``ARGS``) that nothing interrupts: what every stopped,
    killed and resumed run here must end with."""
    cwd = tmp_path_factory.mktemp("straight")
    run = _start(cwd, "straight")
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    return _final_params(cwd / "straight")


def test_killed_worker_restarts_from_the_checkpoint_and_ends_bitwise_equal(
    tmp_path: Path, straight: dict[str, torch.Tensor]
) -> None:
    faulty = _start(tmp_path, "faulty", "--max-restarts", "1")
    victims = _workers_after(faulty, tmp_path / "faulty" / "checkpoints" / "ckpt_0000100.pt")
    os.kill(victims[1], signal.SIGKILL)
    out, err = faulty.communicate(timeout=300)
    assert faulty.returncode == 0, err[-3000:]
    assert "gradsync: restart 1: resuming from the newest checkpoint" in out
    assert "resumed from" in out

    b = _final_params(tmp_path / "faulty")
    assert all(torch.equal(straight[k], b[k]) for k in straight), "the restarted run ended with different parameters"
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "faulty" / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    assert steps == list(range(1, 301)), "metrics after the last checkpoint were logged twice"


def test_without_restarts_a_killed_worker_is_one_clear_error(tmp_path: Path) -> None:
    run = _start(tmp_path, "run")
    first = tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt"
    victims = _workers_after(run, first)
    os.kill(victims[0], signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert "gradsync: error: worker rank 0 was killed by SIGKILL; the other workers were stopped" in err
    assert ckpt.load_checkpoint(first)["step"] == 50  # what was saved is intact


def test_a_stalled_worker_is_an_error_within_the_timeout_not_a_hang(tmp_path: Path) -> None:
    """SIGSTOP one worker: its peer's next collective times out after --timeout seconds with a line
    naming the rank and the collective, and the run ends with gradsync's error exit.

    The agent then gives the stalled worker its SIGTERM grace (30 s) before SIGKILL, since it cannot
    tell a stopped process from one saving a checkpoint; the test wakes it once the error is out, so
    it does not wait out that grace."""
    run = _start(tmp_path, "run", "--timeout", "6", "--max-steps", "100000")
    victims = _workers_after(run, tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt")
    os.kill(victims[1], signal.SIGSTOP)
    t0 = time.time()
    want = "gradsync: error: [rank 0] rank 0: all_reduce failed while waiting up to 6s for the other ranks"
    seen: list[str] = []
    try:
        assert run.stderr is not None
        for line in run.stderr:  # ends when the launcher exits
            seen.append(line)
            if want in line:
                break
        waited = time.time() - t0
        os.kill(victims[1], signal.SIGCONT)
        _, rest = run.communicate(timeout=120)
    finally:
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    err = "".join(seen) + rest
    assert any(want in line for line in seen), err[-3000:]
    assert waited < 30, f"the error came {waited:.0f}s after the stall, with --timeout 6"
    assert run.returncode == 2, err[-3000:]


def test_workers_die_with_a_launcher_killed_by_sigkill(tmp_path: Path) -> None:
    """A scheduler's hard kill (or the OOM killer) takes the launcher with SIGKILL, which it cannot
    handle: its workers must not live on as orphans, training and pruning checkpoints."""
    run = _start(tmp_path, "run", "--max-steps", "100000")
    victims = _workers_after(run, tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt")
    run.kill()
    run.communicate(timeout=30)
    deadline = time.time() + 15
    alive = victims
    while alive and time.time() < deadline:
        alive = [
            p
            for p in victims
            if Path(f"/proc/{p}").exists()
            and (Path(f"/proc/{p}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        ]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their launcher"
    found = ckpt.list_checkpoints(tmp_path / "run")
    assert found and ckpt.load_checkpoint(found[-1])["step"] % 50 == 0  # what was saved stays intact
    time.sleep(1)
    assert ckpt.list_checkpoints(tmp_path / "run") == found  # nobody is writing or pruning any more


def _rank_of(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in env if v.startswith(b"RANK=")).split(b"=")[1])


def test_the_rank_that_died_is_the_rank_named(tmp_path: Path) -> None:
    """Kill rank 1: rank 0 fails right after (its collective to rank 1 errs, exit 2), and the
    last line must still blame rank 1."""
    run = _start(tmp_path, "run")
    victims = _workers_after(run, tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt")
    os.kill(next(p for p in victims if _rank_of(p) == 1), signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert (
        err.strip().splitlines()[-1]
        == "gradsync: error: worker rank 1 was killed by SIGKILL; the other workers were stopped"
    ), err[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_saves_at_that_step_and_resumes_bitwise(
    tmp_path: Path, sig: int, straight: dict[str, torch.Tensor]
) -> None:
    """How Slurm and Kubernetes preempt a job (SIGTERM), and Ctrl-C (SIGINT): every rank finishes
    its step, the checkpoint of that step is written, one line, exit status 3; --resume then ends
    with the parameters of a run that was never stopped."""
    run = _start(tmp_path, "run")
    _workers_after(run, tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt")
    time.sleep(random.uniform(0.0, 1.0))  # somewhere in the middle of a step
    run.send_signal(sig)
    out, err = run.communicate(timeout=120)
    assert run.returncode == EXIT_PREEMPTED, err[-2000:]
    assert err.strip().splitlines() == [err.strip().splitlines()[-1]], err[-2000:]  # one line
    line = err.strip()
    assert line.startswith(f"gradsync: stopped by {signal.Signals(sig).name}; the newest checkpoint is "), line
    stopped_at = int(line.split("ckpt_")[1][:7])
    assert f"stopped by {signal.Signals(sig).name} after step {stopped_at}" in out
    assert stopped_at > 50  # the step it was at, after the periodic save we waited for
    newest = ckpt.list_checkpoints(tmp_path / "run")[-1]
    assert newest.name == f"ckpt_{stopped_at:07d}.pt" and ckpt.load_checkpoint(newest)["step"] == stopped_at
    resumed = _start(tmp_path, "run", "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    b = _final_params(tmp_path / "run")
    assert all(torch.equal(straight[k], b[k]) for k in straight), "the resumed run ended with different parameters"


def test_one_run_per_folder_and_a_dead_runs_lock_is_taken_over(tmp_path: Path) -> None:
    """A second run, or a --resume, started into a folder a run is using gets one line naming the
    holder; after the holder is killed (SIGKILL: its lock stays behind), --resume takes over."""
    first = _start(tmp_path, "run", "--max-steps", "100000")
    _workers_after(first, tmp_path / "run" / "checkpoints" / "ckpt_0000050.pt")
    env = dict(os.environ)
    for extra in (["--resume"], ["--resume", "--nproc", "1"]):
        r = subprocess.run(
            [sys.executable, "-m", "gradsync.cli", "train", *ARGS, "--run-dir", "run", *extra],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2, r.stderr[-2000:]
        assert (
            r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]]
            and "is in use by another gradsync run" in r.stderr
        ), r.stderr
        assert f"PID {first.pid}" in r.stderr
    assert first.poll() is None  # the first run was not disturbed
    first.kill()
    first.communicate(timeout=30)
    time.sleep(1)  # its workers die with it
    again = _start(tmp_path, "run", "--resume", "--max-steps", "60")
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err[-2000:]
    assert not (tmp_path / "run" / ".gradsync.lock").exists()  # given back at the end


def test_a_silent_listener_on_the_rendezvous_port_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    """Something on --rdzv-endpoint accepts connections but never answers (a wrong port, a
    half-dead process): creating the store's client would wait forever; the watchdog ends it."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
        port = silent.getsockname()[1]
        t0 = time.time()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "gradsync.cli",
                "train",
                *ARGS,
                "--run-dir",
                "run",
                "--timeout",
                "4",
                "--global-batch",
                "16",
                "--nnodes",
                "2",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 2, r.stderr[-2000:]
    assert time.time() - t0 < 40
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"the rendezvous store at 127.0.0.1:{port} could not be reached within 4s" in lines[0], (
        r.stderr[-2000:]
    )
