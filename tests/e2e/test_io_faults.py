"""Faults around the run rather than in it, each reproduced for real: a reader that closes the
pipe (``| head``), a read-only cache or run folder (a read-only tmpfs: root ignores file modes),
a file name that is not UTF-8, running out of memory (an address-space limit), and a data shard
truncated while the run reads it. Each is one line or no harm, never a traceback or a hang."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradsync.checkpoint import format as ckpt

TINY = (
    "--model tiny --data synthetic --seq-len 32 --micro-batch 4 --global-batch 8 "
    "--eval-sequences 8 --sample-tokens 0 --timeout 60"
).split()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "GRADSYNC_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1", **extra}


def _gradsync(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradsync.cli", *args],
        cwd=tmp_path,
        env=env or _env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )  # type: ignore[call-overload]


def _one_line(r: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("gradsync: warning:")]
    assert r.returncode == 2, r.stderr[-2000:]
    assert all(line.startswith("gradsync: error:") for line in lines), r.stderr[-2000:]
    assert needle in r.stderr, r.stderr[-2000:]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system (tmpfs mounted ro), or a skip where mounting is not allowed."""
    where = tmp_path / "ro"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_a_closed_pipe_ends_the_output_not_the_run(tmp_path: Path) -> None:
    """`gradsync train ... | head -3`: the reader goes away after three lines; the run finishes."""
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradsync.cli",
            "train",
            "--nproc",
            "2",
            *TINY,
            "--max-steps",
            "40",
            "--train.print_interval=1",
            "--run-dir",
            "run",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    for _ in range(3):
        p.stdout.readline()
    p.stdout.close()
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert (tmp_path / "run" / "summary.json").is_file()
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "run")[-1])["step"] == 40


def test_a_read_only_cache_is_a_warning_and_the_run_goes_on(tmp_path: Path, read_only: Path) -> None:
    """The BPE vocabulary the run trains cannot be cached: one warning, and the run trains."""
    (tmp_path / "corpus.txt").write_text("".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(3000)))
    args = [a if a != "synthetic" else "corpus.txt" for a in TINY]
    r = _gradsync(
        tmp_path,
        "train",
        "--nproc",
        "1",
        *args,
        *"--tokenizer bpe --data.bpe_vocab_size=300 --max-steps 3 --run-dir run".split(),
        env=_env(tmp_path, GRADSYNC_CACHE=str(read_only / "cache")),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "gradsync: warning: cannot write to the cache folder" in r.stderr and "Traceback" not in r.stderr


def test_a_read_only_run_folder_and_plot_path_are_one_line(tmp_path: Path, read_only: Path) -> None:
    _one_line(
        _gradsync(tmp_path, "train", "--nproc", "1", *TINY, "--max-steps", "3", "--run-dir", str(read_only / "run")),
        "Read-only file system",
    )
    _one_line(
        _gradsync(tmp_path, "plan", "--model", "124m", "--devices", "8", "--plot", str(read_only / "p.png")),
        "Read-only file system",
    )


def test_a_file_name_that_is_not_utf8_is_just_a_document(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    with open(os.fsencode(corpus) + b"/caf\xe9-latin1.txt", "wb") as f:
        f.write(b"a document whose name is Latin-1\n" * 40)
    r = _gradsync(
        tmp_path,
        "train",
        "--nproc",
        "1",
        *[a if a != "synthetic" else "corpus" for a in TINY],
        "--max-steps",
        "2",
        "--run-dir",
        "run",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "7 file(s)" in r.stdout


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2_500_000_000, 2_500_000_000))


def test_out_of_memory_is_one_line_per_rank_and_names_what_to_change(tmp_path: Path) -> None:
    """A model whose state does not fit the address space left (2.5 GB): the rank says so (two ranks
    each say it; one keeps the test short)."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradsync.cli",
            "train",
            "--nproc",
            "1",
            *TINY,
            "--max-steps",
            "2",
            "--n-layer",
            "2",
            "--n-embd",
            "2048",
            "--n-head",
            "16",
            "--peak-tflops",
            "1",
            "--run-dir",
            "run",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_memory,
    )
    _one_line(r, "out of memory")
    assert "lower --micro-batch" in r.stderr and "Traceback" not in r.stderr


def test_a_shard_truncated_during_the_run_is_named(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i} of a corpus that will be cut short\n" for i in range(20000)))
    assert _gradsync(tmp_path, "prepare", "c.txt", "shards", "--workers", "1", "--no-progress").returncode == 0
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradsync.cli",
            "train",
            "--nproc",
            "2",
            *[a if a != "synthetic" else "shards" for a in TINY],
            "--max-steps",
            "100000",
            "--ckpt-interval",
            "20",
            "--run-dir",
            "run",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = ckpt.checkpoint_path(tmp_path / "run", 20)
    deadline = time.time() + 180
    while not first.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert first.exists(), run.communicate()[1][-2000:]
    shard = tmp_path / "shards" / "train_000000.bin"
    os.truncate(shard, shard.stat().st_size // 3)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2, err[-3000:]
    assert f"data shard '{shard.resolve()}' shrank from" in err or f"data shard '{shard}' shrank from" in err, err[
        -3000:
    ]
    assert "SIGBUS" not in err
