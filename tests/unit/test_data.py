"""Token sources: text files, folders, globs, both .bin shard formats, the synthetic Markov chain
(with its exact entropy rate), BPE, and the fixed train/validation split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gradsync.core.config import DataConfig
from gradsync.core.errors import DataError
from gradsync.data import load_tokens
from gradsync.data.markov import MarkovChain
from gradsync.data.sources import LLMC_MAGIC, read_shard


def _corpus(folder: Path, n: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(f"document {i}: " + "the quick brown fox. " * 20)
    return folder


def test_stdlib_corpus_is_real_text_split_by_document() -> None:
    d = load_tokens(DataConfig(source="stdlib"))
    assert len(d.train) > 10_000_000 and len(d.val) > 100_000
    assert d.vocab_size == 256 and "split by document" in d.description
    assert b"def " in bytes(d.train.head(200_000).astype(np.uint8))


def test_stdlib_split_is_deterministic() -> None:
    a, b = load_tokens(DataConfig(source="stdlib")), load_tokens(DataConfig(source="stdlib"))
    assert np.array_equal(a.val.to_numpy(), b.val.to_numpy()) and len(a.train) == len(b.train)


def test_folder_glob_and_file_sources(tmp_path: Path) -> None:
    folder = _corpus(tmp_path / "c")
    whole = load_tokens(DataConfig(source=str(folder), seq_len=8))
    globbed = load_tokens(DataConfig(source=str(folder / "*.txt"), seq_len=8))
    assert len(whole.train) + len(whole.val) == len(globbed.train) + len(globbed.val) > 0
    single = load_tokens(DataConfig(source=str(folder / "doc00.txt"), seq_len=8))
    assert "split by tail" in single.description
    assert single.tokenizer is not None and single.tokenizer.decode(single.train.head(8)) == "document"


def test_missing_empty_and_tiny_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_tokens(DataConfig(source=str(tmp_path / "nope")))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_tokens(DataConfig(source=str(tmp_path / "empty.txt")))
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="contains no files"):
        load_tokens(DataConfig(source=str(tmp_path / "d")))
    os.mkfifo(tmp_path / "fifo")  # reading it would block forever
    with pytest.raises(DataError, match="is not a regular file or folder"):
        load_tokens(DataConfig(source=str(tmp_path / "fifo")))
    with pytest.raises(DataError, match="matches no files"):
        load_tokens(DataConfig(source=str(tmp_path / "*.md")))
    (tmp_path / "small.txt").write_text("abc")
    with pytest.raises(DataError, match="too small"):
        load_tokens(DataConfig(source=str(tmp_path / "small.txt"), seq_len=64))


def _write_llmc(path: Path, tokens: np.ndarray, version: int = 1, claim: int | None = None) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = [LLMC_MAGIC, version, len(tokens) if claim is None else claim]
    path.write_bytes(header.tobytes() + tokens.astype("<u2" if version == 1 else "<u4").tobytes())


def test_llmc_and_nanogpt_shards(tmp_path: Path) -> None:
    toks = (np.arange(5000) % 300).astype(np.uint16)
    _write_llmc(tmp_path / "fw_train_000.bin", toks)
    _write_llmc(tmp_path / "fw_val_000.bin", toks[:1000])
    d = load_tokens(DataConfig(source=str(tmp_path / "fw_*.bin"), seq_len=16))
    assert np.array_equal(d.train.to_numpy(), toks) and np.array_equal(d.val.to_numpy(), toks[:1000])
    assert d.vocab_size == 300 and isinstance(d.train.parts[0], np.memmap)
    raw = tmp_path / "raw"
    raw.mkdir()
    toks.tofile(raw / "train.bin")
    d2 = load_tokens(DataConfig(source=str(raw / "*.bin"), seq_len=16, vocab_size=512))
    assert np.array_equal(np.concatenate([d2.train.to_numpy(), d2.val.to_numpy()]), toks)
    assert d2.vocab_size == 512


def test_damaged_shards_are_clear_errors(tmp_path: Path) -> None:
    toks = np.arange(100, dtype=np.uint16)
    _write_llmc(tmp_path / "a.bin", toks, claim=200)
    with pytest.raises(DataError, match="truncated"):
        read_shard(tmp_path / "a.bin")
    _write_llmc(tmp_path / "b.bin", toks, version=7)
    with pytest.raises(DataError, match="version 7"):
        read_shard(tmp_path / "b.bin")
    (tmp_path / "c.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="odd size"):
        read_shard(tmp_path / "c.bin")


def test_markov_entropy_rate_exact_cases() -> None:
    iid = MarkovChain(4, 1, np.full((4, 4), 0.25))
    assert iid.entropy_rate() == pytest.approx(np.log(4), abs=1e-12)
    # two-state chain: pi = (b, a)/(a+b) for flip probabilities a (0->1) and b (1->0)
    a, b = 0.1, 0.3
    chain = MarkovChain(2, 1, np.array([[1 - a, a], [b, 1 - b]]))
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    assert chain.entropy_rate() == pytest.approx((b * h(a) + a * h(b)) / (a + b), abs=1e-9)


def test_markov_samples_match_the_entropy_rate() -> None:
    chain = MarkovChain.random(8, 2, alpha=0.5, seed=3)
    x = chain.sample(400_000, seed=1, n_chains=64).astype(np.int64).reshape(64, -1)
    ctx = x[:, :-2] * 8 + x[:, 1:-1]
    nll = -np.log(chain.probs[ctx, x[:, 2:]]).mean()
    assert nll == pytest.approx(chain.entropy_rate(), abs=0.02)


def test_synthetic_source_reports_its_optimum() -> None:
    d = load_tokens(DataConfig(source="synthetic", synthetic_tokens=20_000))
    assert d.entropy_rate is not None and 0 < d.entropy_rate < np.log(16)
    assert len(d.train) + len(d.val) == 20_000


def test_bpe_is_trained_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADSYNC_CACHE", str(tmp_path / "cache"))
    folder = _corpus(tmp_path / "c")
    cfg = DataConfig(source=str(folder), tokenizer="bpe", bpe_vocab_size=300, seq_len=8)
    d = load_tokens(cfg)
    assert d.vocab_size <= 300 and len(d.train) < sum(f.stat().st_size for f in folder.iterdir())
    assert len(list((tmp_path / "cache").glob("bpe-300-*.json"))) == 1
    again = load_tokens(cfg)
    assert np.array_equal(again.train.to_numpy(), d.train.to_numpy())
    assert d.tokenizer is not None and d.tokenizer.decode(d.tokenizer.encode(b"the quick fox")) == "the quick fox"
