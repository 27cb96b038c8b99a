"""Token sources: turn ``data.source`` into fixed train/validation token streams.

Sources:
- ``stdlib``: every ``.py`` file of the running interpreter's standard library (~30 MB of real
  code written by many people, present on every machine without a download);
- a text file, a folder (all files below it) or a glob (``'corpus/**/*.txt'``);
- pre-tokenized ``.bin`` shards: nanoGPT's raw little-endian uint16, or llm.c's format (a
  256 x int32 header with magic 20240520, version, token count; then uint16/uint32 tokens);
- ``synthetic``: an order-k Markov chain with a known entropy rate (see ``markov.py``).

The split is fixed and deterministic: a text document goes to validation when a CRC32 of its name
falls in the first ``val_fraction`` of the hash range; shards whose name contains ``val`` are the
validation set (else the last ``val_fraction`` of tokens is); synthetic data keeps its tail.
"""

from __future__ import annotations

import glob
import json
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradsync.core.config import DataConfig
from gradsync.core.errors import DataError
from gradsync.data.documents import Corpus
from gradsync.data.markov import MarkovChain
from gradsync.data.stream import TokenStream
from gradsync.data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer, tokenizer_for

LLMC_MAGIC = 20240520
LLMC_HEADER_INTS = 256
SHARDS_META = "shards.json"  # written by gradsync prepare (gradsync.data.shard_writer)


@dataclass
class TokenData:
    train: TokenStream
    val: TokenStream
    vocab_size: int
    tokenizer: Tokenizer | None
    description: str
    entropy_rate: float | None = None  # nats/token, when the source knows its optimum


def load_tokens(cfg: DataConfig) -> TokenData:
    """Resolve ``cfg.source`` into train/validation token arrays, or raise a one-line DataError."""
    if cfg.source == "synthetic":
        return _synthetic(cfg)
    paths, label = resolve_paths(cfg.source)
    meta = [p for p in paths if p.name == SHARDS_META]
    if len(meta) == 1:  # a folder written by gradsync prepare
        return _shards([p for p in paths if p.suffix == ".bin"], cfg, label, _read_meta(meta[0]))
    if paths and all(p.suffix == ".bin" for p in paths):
        return _shards(paths, cfg, label)
    return _text(paths, cfg, label)


def _read_meta(path: Path) -> dict[str, Any]:
    """``shards.json`` of a ``gradsync prepare`` folder, checked."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        int(meta["vocab_size"]), str(meta["tokenizer"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"'{path}' is damaged (not the JSON gradsync prepare writes); prepare the corpus again"
        ) from None
    return meta


def _synthetic(cfg: DataConfig) -> TokenData:
    chain = MarkovChain.random(cfg.synthetic_vocab, cfg.synthetic_order, cfg.synthetic_alpha, cfg.synthetic_seed)
    tokens = chain.sample(cfg.synthetic_tokens, seed=cfg.synthetic_seed)
    n_val = max(int(len(tokens) * cfg.val_fraction), cfg.seq_len + 1)
    h = chain.entropy_rate()
    return TokenData(
        TokenStream([tokens[:-n_val]]),
        TokenStream([tokens[-n_val:]]),
        cfg.synthetic_vocab,
        None,
        f"synthetic order-{cfg.synthetic_order} Markov chain, V={cfg.synthetic_vocab}, entropy rate {h:.4f} nats/token",
        entropy_rate=h,
    )


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        p
        for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "dist-packages" not in p.parts and p.is_file()
    )


def resolve_paths(source: str) -> tuple[list[Path], str]:
    if source == "stdlib":
        files = _stdlib_files()
        if not files:
            raise DataError(
                "data source 'stdlib' found no .py files in this interpreter's standard "
                "library; pass --data PATH to a text corpus"
            )
        return files, "stdlib"
    if any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"data source '{source}' matches no files; check the glob pattern")
        return files, source
    p = Path(source)
    if not p.exists():
        raise DataError(
            f"data path '{source}' does not exist; pass --data PATH to a file, folder, glob, 'stdlib' or 'synthetic'"
        )
    if p.is_dir():
        files = sorted(
            f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not files:
            raise DataError(f"data folder '{source}' contains no files")
        return files, source
    if not p.is_file():  # a FIFO, socket or device would block or never end
        raise DataError(f"data path '{source}' is not a regular file or folder")
    return [p], source


def is_val_document(name: str, fraction: float) -> bool:
    """Whether the document named ``name`` is held out for validation (a CRC-32 of the name)."""
    return (zlib.crc32(name.encode("utf-8", "surrogateescape")) % 10_000) < fraction * 10_000  # any file name


def _text(paths: list[Path], cfg: DataConfig, label: str) -> TokenData:
    docs = list(Corpus(paths, label, "text").documents())
    n_bytes = sum(len(d) for _, d in docs)
    if n_bytes == 0:
        raise DataError(f"data source '{label}' is empty: {len(paths)} file(s), 0 bytes of text")

    tokenizer = tokenizer_for(cfg.tokenizer, lambda: [d for _, d in docs], cfg.bpe_vocab_size)
    encoded = (
        tokenizer.encode_batch([d for _, d in docs])
        if isinstance(tokenizer, BPETokenizer)
        else [tokenizer.encode(d) for _, d in docs]
    )

    is_val = [is_val_document(name, cfg.val_fraction) for name, _ in docs]
    train = [e for e, v in zip(encoded, is_val) if not v]
    val = [e for e, v in zip(encoded, is_val) if v]
    if train and val:
        train_arr, val_arr = np.concatenate(train), np.concatenate(val)
        split = "by document"
    else:  # too few documents to split by name: hold out the tail instead
        all_tokens = np.concatenate(encoded)
        n_val = max(int(len(all_tokens) * cfg.val_fraction), cfg.seq_len + 1)
        train_arr, val_arr = all_tokens[:-n_val], all_tokens[-n_val:]
        split = "by tail"
    train_s, val_s = TokenStream([train_arr]), TokenStream([val_arr])
    _check_sizes(label, train_s, val_s, cfg.seq_len)
    desc = (
        f"{label}: {len(docs)} file(s), {n_bytes / 1e6:.1f} MB, {cfg.tokenizer} tokenizer "
        f"(vocab {tokenizer.vocab_size}), {len(train_arr):,} train / {len(val_arr):,} val tokens "
        f"(split {split})"
    )
    return TokenData(train_s, val_s, tokenizer.vocab_size, tokenizer, desc)


def read_shard(path: Path) -> np.ndarray:
    """Tokens of one ``.bin`` shard in llm.c's headered format or nanoGPT's raw uint16 format,
    memory-mapped (read-only), after checking that the file's size matches its format."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"shard '{path}' is empty")
    with open(path, "rb") as f:
        raw = f.read(4 * LLMC_HEADER_INTS)
    head = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4")
    if len(head) >= 3 and head[0] == LLMC_MAGIC:
        version, n = int(head[1]), int(head[2])
        if version not in (1, 2):
            raise DataError(f"shard '{path}' has llm.c header version {version}; expected 1 (uint16) or 2 (uint32)")
        dtype = np.dtype("<u2") if version == 1 else np.dtype("<u4")
        expected = 4 * LLMC_HEADER_INTS + n * dtype.itemsize
        if size != expected:
            raise DataError(
                f"shard '{path}' is truncated or padded: header says {n} tokens "
                f"({expected} bytes), file has {size} bytes"
            )
        return np.memmap(path, dtype=dtype, mode="r", offset=4 * LLMC_HEADER_INTS, shape=(n,))
    if size % 2:
        raise DataError(f"shard '{path}' has an odd size ({size} bytes); raw shards hold uint16 tokens")
    return np.memmap(path, dtype="<u2", mode="r")


def _shards(paths: list[Path], cfg: DataConfig, label: str, meta: dict[str, Any] | None = None) -> TokenData:
    """Shards whose name holds ``val`` are the validation set; without any, the last
    ``val_fraction`` of all tokens is (as for text). ``meta``: a ``gradsync prepare`` folder's
    record, which gives the vocabulary and the tokenizer."""
    if not paths:
        raise DataError(f"data folder '{label}' has {SHARDS_META} but no .bin shard; prepare the corpus again")
    val_paths = [p for p in paths if "val" in p.name]
    train_paths = [p for p in paths if p not in val_paths]
    if train_paths and val_paths:
        train = TokenStream([read_shard(p) for p in train_paths])
        val = TokenStream([read_shard(p) for p in val_paths])
    else:  # no validation shard: hold out the tail of the stream
        parts = [read_shard(p) for p in paths]
        whole = sum(len(p) for p in parts)
        cut = whole - max(int(whole * cfg.val_fraction), cfg.seq_len + 1)
        starts = np.cumsum([0] + [len(p) for p in parts])
        train = TokenStream([p[: max(0, cut - s)] for p, s in zip(parts, starts)])
        val = TokenStream([p[max(0, cut - s) :] for p, s in zip(parts, starts)])
    _check_sizes(label, train, val, cfg.seq_len)
    top = max(train.max_token(), val.max_token()) + 1
    tokenizer: Tokenizer | None = None
    vocab = cfg.vocab_size or top
    if meta is not None:
        vocab = cfg.vocab_size or int(meta["vocab_size"])
        folder = paths[0].parent
        tokenizer = (
            ByteTokenizer() if meta["tokenizer"] == "byte" else BPETokenizer.from_file(folder / "tokenizer.json")
        )
    if top > vocab:
        raise DataError(f"shards in '{label}' hold token id {top - 1}, beyond data.vocab_size {vocab}")
    made = f", {meta['tokenizer_source']} tokenizer" if meta is not None and "tokenizer_source" in meta else ""
    desc = (
        f"{label}: {len(paths)} pre-tokenized shard(s), memory-mapped, vocab {vocab}{made}, "
        f"{len(train):,} train / {len(val):,} val tokens"
    )
    return TokenData(train, val, vocab, tokenizer, desc)


def _check_sizes(label: str, train: TokenStream, val: TokenStream, seq_len: int) -> None:
    for name, stream in (("train", train), ("validation", val)):
        if stream.n_sequences(seq_len) == 0:
            raise DataError(
                f"data source '{label}' is too small: the {name} split has {len(stream)} "
                f"tokens, fewer than one sequence of {seq_len + 1}"
            )
