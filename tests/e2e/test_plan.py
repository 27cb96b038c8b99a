"""``gradsync plan``: the cost model as a user asks it, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _plan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradsync.cli", "plan", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_plan_124m_on_8_a100_over_100gbe(tmp_path: Path) -> None:
    r = _plan(
        *"--model 124m --devices 8 --device a100-80gb --network 100gbe --plot scaling.png".split(),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "124.4M parameters" in r.stdout and "8 x A100 80GB" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| strategy")]
    assert {ln.split("|")[1].strip() for ln in rows} >= {"allreduce", "bucketed", "zero1", "zero2", "zero3"}
    rec = next(ln for ln in r.stdout.splitlines() if ln.startswith("recommendation:"))
    assert rec.split(":")[1].strip() in ("bucketed", "zero1", "zero2", "zero3"), rec
    assert "fastest exact strategy that fits" in rec
    png = tmp_path / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_says_when_nothing_fits(tmp_path: Path) -> None:
    r = _plan(
        "--params", "7e10", "--devices", "2", "--global-batch", "2", "--device", "a100-40gb", "--plot", "", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "recommendation: none: nothing fits" in r.stdout


def test_an_8b_model_at_8k_tokens_fits_with_activation_checkpointing(tmp_path: Path) -> None:
    """8B parameters, sequence 8192, 8 x 80 GB: without checkpointing only ZeRO-3 fits; with it the
    plan recommends a sharded strategy and names the checkpointing it needs."""
    args = ("--params", "8e9", "--seq-len", "8192", "--devices", "8", "--device", "a100-80gb", "--plot", "")
    none = _plan(*args, "--activation-checkpointing", "none", cwd=tmp_path)
    assert none.returncode == 0, none.stderr
    fits = {ln.split("|")[1].strip() for ln in none.stdout.splitlines() if ln.startswith("| ") and "| yes |" in ln}
    assert fits <= {"zero3", "torch-fsdp"}, fits
    auto = _plan(*args, cwd=tmp_path)
    rec = next(ln for ln in auto.stdout.splitlines() if ln.startswith("recommendation:"))
    assert rec.split(":")[1].strip().split()[0] in ("zero1", "zero2", "zero3"), rec
    assert "activation checkpointing" in rec.split(":")[1], rec


def test_plan_with_a_failure_rate_compares_restart_and_live_recovery(tmp_path: Path) -> None:
    args = "--params 8e9 --seq-len 8192 --global-batch 1024 --devices 1024 --gpus-per-node 8 --device h100"
    r = _plan(*args.split(), "--network", "ib-ndr", "--plot", "", "--mtbf", "3h", "--restart", "2m", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "a node every 3.0 h x 128 node(s) = the job every 1.4 min" in r.stdout
    rows = {ln.split("|")[1].strip(): ln.split("|")[2].strip() for ln in r.stdout.splitlines() if "% |" in ln}
    restart, live = (float(rows[k].rstrip("%")) for k in ("restart from checkpoint", "live recovery"))
    assert 0 < restart < 50 < live < 100  # a failure every 84 s: restarting for 2 min barely progresses
    assert "the best interval (Young/Daly:" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--device", "tpu-v9"), "unknown device 'tpu-v9'"),
        (("--devices", "0"), "--devices must be >= 1"),
        (("--bandwidth-gbps", "-10", "--latency-us", "5"), "bandwidth must be > 0"),
        (("--latency-us", "5"), "--latency-us needs --bandwidth-gbps"),
        (("--network", "carrier-pigeon"), "unknown network 'carrier-pigeon'"),
        (("--model", "gpt5"), "unknown model 'gpt5'"),
        (("--global-batch", "100", "--devices", "8"), "must be divisible by the number of devices"),
        (("--device", "missing.json"), "calibration profile 'missing.json' does not exist"),
        (("--params", "nan"), "--params must be between 1e5 and 1e13, got nan"),
        (("--efficiency", "0"), "--efficiency must be in (0, 1], got 0.0"),
        (("--gpus-per-node", "3", "--devices", "8"), "must be a whole number of nodes of --gpus-per-node (3)"),
        (("--mtbf", "soon"), "plan: --mtbf must be a positive duration such as 3h"),
        (("--mtbf", "3h", "--disk-gbs", "0"), "plan: --disk-gbs must be > 0"),
    ],
)
def test_plan_bad_input_is_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    r = _plan(*args, "--plot", "", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradsync: error:") and message in lines[0], r.stderr


def _profile(path: Path, beta: float) -> None:
    """A calibration profile with chosen numbers (the format `gradsync calibrate` writes)."""
    import json

    coll = {
        op: {"alpha_s": 1e-4, "beta_s_per_byte": beta, "residual": 0.0, "points": []}
        for op in ("all_reduce", "reduce_scatter", "all_gather", "broadcast")
    }
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "device": "test CPU",
                "backend": "gloo",
                "world_size": 2,
                "threads": 1,
                "peak_flops": 5e10,
                "memory_bytes": 8e9,
                "optimizer_s_per_param": 5e-9,
                "elementwise_s_per_elem": 1e-10,
                "compute": {"flops_per_token": 3e5, "tokens": 128, "forward_s": 1e-3, "backward_s": 2e-3},
                "collectives": coll,
            }
        )
    )


def test_train_strategy_auto_uses_the_cost_model(tmp_path: Path) -> None:
    import os

    _profile(tmp_path / "p.json", beta=1e-8)  # a slow link: 100 MB/s
    env = dict(os.environ, GRADSYNC_CACHE=str(tmp_path / "cache"))
    args = [
        sys.executable,
        "-m",
        "gradsync.cli",
        "train",
        "--nproc",
        "2",
        "--model",
        "tiny",
        "--data",
        "synthetic",
        "--seq-len",
        "16",
        "--micro-batch",
        "4",
        "--global-batch",
        "8",
        "--max-steps",
        "3",
        "--sample-tokens",
        "0",
        "--no-progress",
        "--strategy",
        "auto",
    ]

    def train(*more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, *more], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)

    r = train("--parallel.profile", "p.json", "--bucket-mb", "0", "--run-dir", "a")
    assert r.returncode == 0, r.stderr[-3000:]
    chosen = r.stdout.split("--strategy auto chose ", 1)[1].split(":", 1)[0]
    assert chosen in ("bucketed", "zero1", "zero2", "zero3")
    assert f"strategy {chosen}," in r.stdout  # the workers ran what was chosen
    assert "--bucket-mb 0 chose 0.25 MB (predicted step: 0.25 MB" in r.stdout  # tiny: every size gives one bucket
    from gradsync.core.config import load_toml

    assert load_toml(tmp_path / "a" / "config.toml")["parallel"]["bucket_mb"] == 0.25  # what the workers read
    _profile(tmp_path / "slow.json", beta=1e-5)  # 100 kB/s: halving the bytes is worth the rounding
    r = train("--parallel.profile", "slow.json", "--auto-allows", "rounded", "--run-dir", "c")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--strategy auto chose bucketed+fp16: the least approximate of --auto-allows rounded" in r.stdout
    ran = load_toml(tmp_path / "c" / "config.toml")["parallel"]
    assert (ran["strategy"], ran["compress"]) == ("bucketed", "fp16")
    missing = train("--run-dir", "b")
    assert missing.returncode == 2
    assert "does not exist; run `gradsync calibrate` first" in missing.stderr.strip().splitlines()[-1]
