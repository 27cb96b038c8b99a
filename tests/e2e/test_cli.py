"""The command line, end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY_FLAGS = (
    "--model tiny --seq-len 32 --micro-batch 2 --global-batch 8 --eval-sequences 8 --sample-tokens 40 --no-progress"
).split()


def gradsync(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "gradsync.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("gradsync")
    assert script.exists(), "pip install should create the 'gradsync' console script"


def test_train_two_workers_leaves_metrics_plot_checkpoint_and_sample(tmp_path: Path) -> None:
    r = gradsync("train", "--nproc", "2", "--max-steps", "5", "--run-dir", "run", *TINY_FLAGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in records if x["kind"] == "train"]
    assert [x["step"] for x in train] == [1, 2, 3, 4, 5]
    for key in ("loss", "lr", "tokens_per_sec", "step_time_s", "comm_blocked_s", "comm_bytes", "mfu"):
        assert all(x[key] is not None for x in train), key
    assert all(x["comm_bytes"] > 0 for x in train) and all(0 < x["mfu"] < 1 for x in train)
    assert any(x["kind"] == "eval" for x in records)
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "checkpoints" / "ckpt_0000005.pt").is_file()
    assert "[parallel]" in (run / "config.toml").read_text()
    assert "---- sample ----" in r.stdout and (run / "sample.txt").read_text()
    assert "2 worker(s), strategy bucketed, backend gloo" in r.stdout

    # Continuing the same run to 8 steps appends to its metrics.
    r2 = gradsync(
        "train", "--nproc", "2", "--max-steps", "8", "--run-dir", "run", "--resume", *TINY_FLAGS, cwd=tmp_path
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "resumed from" in r2.stdout
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert steps == list(range(1, 9))

    # Text from the finished run's latest checkpoint, reproducible with the same seed.
    s1 = gradsync("sample", "run", "--prompt", "import ", "--tokens", "30", cwd=tmp_path)
    s2 = gradsync("sample", "run/checkpoints/ckpt_0000008.pt", "--prompt", "import ", "--tokens", "30", cwd=tmp_path)
    assert s1.returncode == 0, s1.stderr[-2000:]
    assert s1.stdout.startswith("import ") and s1.stdout == s2.stdout
    _one_line_error(gradsync("sample", "nowhere", cwd=tmp_path), "'nowhere' does not exist")


def _one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("gradsync: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--data", "does/not/exist"], ["data path 'does/not/exist' does not exist"]),
        (["--global-batch", "30"], ["train.global_batch (30)", "divisible"]),
        (["--strategy", "magic"], ["parallel.strategy 'magic' is unknown", "bucketed"]),
        (["--strategy", "localsgd:0"], ["H must be a positive number of steps, got 0"]),
        (["--strategy", "diloco:8,outer_lr=fast"], ["outer_lr must be of type float"]),
        (["--compress", "powersgd:rank=4,colour=red"], ["unknown option 'colour' for powersgd"]),
        (["--strategy", "zero2", "--compress", "fp16"], ["fp16 is not implemented for strategy zero2"]),
        (["--strategy", "torch-ddp", "--compress", "topk"], ["topk is not implemented for strategy torch-ddp"]),
        (["--optimizer", "lion"], ["optim.name 'lion' is unknown"]),
        (["--precision", "fp8"], ["train.precision 'fp8'"]),
        (["--nproc", "0"], ["parallel.nproc must be >= 1"]),
        (["--max-steps", "many"], ["train.max_steps must be of type int"]),
        (["--frobnicate", "1"], ["unrecognized argument '--frobnicate'"]),
    ],
)
def test_bad_flags_give_one_line_errors(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    _one_line_error(gradsync("train", "--run-dir", "run", *TINY_FLAGS, *args, cwd=tmp_path), *needles)


def test_empty_corpus_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    _one_line_error(gradsync("train", "--data", "empty.txt", *TINY_FLAGS, cwd=tmp_path), "is empty")


def test_a_run_folder_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    _one_line_error(
        gradsync("train", "--run-dir", "taken", "--nproc", "1", "--data", "synthetic", *TINY_FLAGS, cwd=tmp_path),
        "run folder 'taken' is a file",
    )


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "ckpt_0000005.pt").write_bytes(b"\x00garbage" * 100)
    r = gradsync("train", "--run-dir", "run", "--resume", *TINY_FLAGS, cwd=tmp_path)
    _one_line_error(r, "ckpt_0000005.pt", "corrupt")


def test_incompatible_resume_names_the_fields(tmp_path: Path) -> None:
    r = gradsync("train", "--nproc", "1", "--max-steps", "2", "--run-dir", "run", *TINY_FLAGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = gradsync(
        *"train --nproc 1 --max-steps 4 --run-dir run --resume".split(),
        *TINY_FLAGS,
        "--n-layer",
        "3",
        "--seed",
        "5",
        cwd=tmp_path,
    )
    _one_line_error(r, "different config", "model.n_layer: None -> 3", "train.seed: 1337 -> 5")


def test_fresh_run_refuses_to_mix_with_existing_checkpoints(tmp_path: Path) -> None:
    r = gradsync("train", "--nproc", "1", "--max-steps", "1", "--run-dir", "run", *TINY_FLAGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = gradsync("train", "--nproc", "1", "--max-steps", "1", "--run-dir", "run", *TINY_FLAGS, cwd=tmp_path)
    _one_line_error(r, "already holds checkpoints", "--resume")


def test_zero3_trains_checkpoints_samples_and_resumes_from_the_cli(tmp_path: Path) -> None:
    """ZeRO-3 shards the parameters: sampling and checkpoints must gather them on every rank."""
    args = ["--nproc", "2", "--strategy", "zero3", "--run-dir", "run", "--ckpt-interval", "3", *TINY_FLAGS]
    r = gradsync("train", "--max-steps", "3", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "memory per rank after step 1" in r.stdout and "---- sample ----" in r.stdout
    r2 = gradsync("train", "--max-steps", "6", "--resume", *args, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "resumed from" in r2.stdout
    s = gradsync("sample", "run", "--tokens", "10", cwd=tmp_path)
    assert s.returncode == 0 and s.stdout.strip(), s.stderr[-2000:]


def test_resume_skips_a_corrupt_latest_checkpoint_with_a_warning(tmp_path: Path) -> None:
    args = ["--nproc", "1", "--run-dir", "run", "--ckpt-interval", "2", *TINY_FLAGS]
    r = gradsync("train", "--max-steps", "4", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    latest = tmp_path / "run" / "checkpoints" / "ckpt_0000004.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated behind our back
    r2 = gradsync("train", "--max-steps", "6", "--resume", *args, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "ckpt_0000004.pt' is corrupt (checksum mismatch" in r2.stderr
    assert "resumed from run/checkpoints/ckpt_0000002.pt at step 2" in r2.stdout


def test_in_a_file_progress_is_plain_lines_not_a_bar(tmp_path: Path) -> None:
    """stderr not a terminal (a batch job's output file): no bar's carriage returns; a plain line
    every --train.print_interval steps, with loss, throughput and time left."""
    flags = [f for f in TINY_FLAGS if f != "--no-progress"]
    r = gradsync(
        *(
            "train --nproc 2 --max-steps 6 --run-dir run --data synthetic --sample-tokens 0 --train.print_interval=3"
        ).split(),
        *flags,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stderr + r.stdout
    plain = [line for line in r.stdout.splitlines() if line.startswith("gradsync: step ")]
    assert [line.split(",")[0] for line in plain] == ["gradsync: step 3/6", "gradsync: step 6/6"]
    assert all(" tok/s, " in line and ", eta " in line and "loss " in line for line in plain), plain


def test_config_prints_what_train_would_run_and_every_key_has_a_meaning(tmp_path: Path) -> None:
    import tomllib

    from gradsync.core.config import all_keys, build_config, key_meanings

    assert [k for k, v in key_meanings().items() if not v] == []
    assert sorted(key_meanings()) == sorted(all_keys())
    r = gradsync("config", "--lr", "1e-3", "--nproc", "4", "--train.sample_prompt=a\nb", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads(r.stdout) == {
        "optim": {"lr": 0.001},
        "parallel": {"nproc": 4},
        "train": {"sample_prompt": "a\nb"},
    }
    shown = gradsync("config", "--show", "--lr", "1e-3", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "lr = 0.001  # peak learning rate, after linear warmup" in shown.stdout
    assert build_config(tomllib.loads(shown.stdout)) == build_config(None, {"optim.lr": "1e-3"})
    _one_line_error(gradsync("config", "--lr", "inf", cwd=tmp_path), "optim.lr")
    bert = gradsync("config", "--task", "bert", "--lr", "5e-4", cwd=tmp_path)
    assert "seq_len = 32  # from task bert" in bert.stdout and "lr = 0.0005\n" in bert.stdout, bert.stdout
    assert build_config(tomllib.loads(bert.stdout)) == build_config(None, {"task.name": "bert", "optim.lr": 5e-4})


def test_compile_trains_the_same_losses_and_refuses_zero(tmp_path: Path) -> None:
    """--compile (inductor's C++ backend on CPU) under bucketed, 2 workers, 20 steps: the losses of
    the eager run within 1e-5 (measured 2.4e-7); ZeRO is one line."""
    flags = (
        "train --nproc 2 --model tiny --data synthetic --seq-len 64 --micro-batch 4 --global-batch "
        "8 --max-steps 20 --sample-tokens 0 --no-progress --eval-interval 1000"
    ).split()
    runs = {}
    for name, extra in (("compiled", ["--compile"]), ("eager", [])):
        r = gradsync(*flags, "--run-dir", name, *extra, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = [
            json.loads(line)["loss"]
            for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
            if '"train"' in line
        ]
    assert len(runs["compiled"]) == 20
    assert max(abs(a - b) for a, b in zip(runs["compiled"], runs["eager"])) < 1e-5
    _one_line_error(
        gradsync(*flags, "--run-dir", "z", "--compile", "--strategy", "zero3", cwd=tmp_path),
        "--compile does not compose with --strategy zero3",
    )
