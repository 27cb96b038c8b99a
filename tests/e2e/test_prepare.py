"""``gradsync prepare`` end to end: a corpus tokenized once into shards (2 processes, shards small
enough that sequences cross them) trains bitwise like the same corpus tokenized in the run, and
``sample`` decodes text from a run on shards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from gradsync.checkpoint import format as ckpt

TRAIN = (
    "--nproc 2 --model tiny --seq-len 32 --micro-batch 4 --global-batch 8 --max-steps 6 "
    "--eval-interval 3 --eval-sequences 8 --sample-tokens 0 --no-progress"
).split()


def _gradsync(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GRADSYNC_CACHE=str(cwd / "cache"))
    r = subprocess.run(
        [sys.executable, "-m", "gradsync.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _params(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])["strategy"]["model"]


@pytest.mark.parametrize("tokenizer", ["bpe"])  # byte passes too; one keeps the suite short
def test_prepared_shards_train_exactly_like_tokenizing_in_the_run(tmp_path: Path, tokenizer: str) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(
        Path(sysconfig.get_paths()["stdlib"]) / "email", corpus, ignore=shutil.ignore_patterns("__pycache__")
    )
    extra = ["--tokenizer", tokenizer, "--data.bpe_vocab_size=320"]
    r = _gradsync(
        tmp_path,
        *"prepare corpus shards --workers 2 --shard-tokens 20000 --tokenizer".split(),
        tokenizer,
        "--bpe-vocab-size",
        "320",
        "--no-progress",
    )
    assert "split by document" in r.stdout and "with 2 process(es)" in r.stdout
    assert len(list((tmp_path / "shards").glob("train_*.bin"))) > 3  # sequences cross shard ends

    _gradsync(tmp_path, "train", *TRAIN, "--data", "corpus", *extra, "--run-dir", "text")
    on_shards = _gradsync(tmp_path, "train", *TRAIN, "--data", "shards", "--run-dir", "shards-run")
    assert "pre-tokenized shard(s), memory-mapped" in on_shards.stdout
    a, b = _params(tmp_path / "text"), _params(tmp_path / "shards-run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    text_metrics = (tmp_path / "text" / "metrics.jsonl").read_text().splitlines()
    shard_metrics = (tmp_path / "shards-run" / "metrics.jsonl").read_text().splitlines()
    evals = [line for line in text_metrics if '"eval"' in line]
    assert evals and evals == [line for line in shard_metrics if '"eval"' in line]

    s = _gradsync(tmp_path, "sample", "shards-run", "--prompt", "def ", "--tokens", "20")
    assert s.stdout.startswith("def ")
