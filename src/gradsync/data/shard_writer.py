"""``gradsync prepare``: tokenize a corpus once, in parallel, into llm.c-format shards, so that a
run on a large corpus memory-maps tokens instead of tokenizing on every start.

The shards train exactly as tokenizing in the run does: documents are read in the same order,
split into train and validation by the same hash of their names (``data.val_fraction``), encoded
by the same tokenizer (``byte``, ``bpe`` trained as the run trains it, or a ``tokenizer.json``),
and concatenated in the same order; a token stream is the concatenation of its shards
(:mod:`gradsync.data.stream`), so where a shard ends changes nothing. When the names put every
document on one side, all go into train shards and the run holds out the tail, as it does for text.

The output folder holds ``train_NNNNNN.bin`` and ``val_NNNNNN.bin`` (llm.c's format: a 256 x int32
header with magic 20240520, version 1 for uint16 tokens or 2 for uint32, the token count; then the
tokens), ``shards.json`` (vocabulary size, tokenizer, counts) and, for a BPE tokenizer,
``tokenizer.json``; ``gradsync train --data OUT`` reads them all. Each shard is written to a
temporary file and renamed when complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gradsync.core.errors import DataError
from gradsync.core.files import atomic_write_bytes
from gradsync.data.documents import Corpus
from gradsync.data.sources import LLMC_HEADER_INTS, LLMC_MAGIC, SHARDS_META, is_val_document
from gradsync.data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer, tokenizer_for

BATCH_BYTES = 1 << 20  # documents are sent to the tokenizing processes in batches of about 1 MB


class ShardWriter:
    """Tokens appended in order, cut into shards of ``shard_tokens``, each in llm.c's format."""

    def __init__(self, out: Path, prefix: str, shard_tokens: int, vocab_size: int) -> None:
        self.out, self.prefix, self.shard_tokens = out, prefix, shard_tokens
        self.version = 1 if vocab_size <= 1 << 16 else 2
        self.dtype = np.dtype("<u2") if self.version == 1 else np.dtype("<u4")
        self.paths: list[Path] = []
        self.tokens = 0
        self._f: Any = None
        self._in_shard = 0

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens).astype(self.dtype, copy=False)
        while len(tokens):
            if self._f is None:
                self._open()
            take = min(len(tokens), self.shard_tokens - self._in_shard)
            self._f.write(tokens[:take].tobytes())
            self._in_shard += take
            self.tokens += take
            tokens = tokens[take:]
            if self._in_shard == self.shard_tokens:
                self._finish()

    def close(self) -> list[Path]:
        if self._f is not None:
            self._finish()
        return self.paths

    def _open(self) -> None:
        path = self.out / f"{self.prefix}_{len(self.paths):06d}.bin"
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._f = open(self._tmp, "wb")  # noqa: SIM115 (one shard stays open across calls)
        self._f.write(b"\0" * 4 * LLMC_HEADER_INTS)
        self._in_shard = 0
        self.paths.append(path)

    def _finish(self) -> None:
        header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
        header[:3] = (LLMC_MAGIC, self.version, self._in_shard)
        self._f.seek(0)
        self._f.write(header.tobytes())
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        self._tmp.replace(self.paths[-1])


_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_json: str | None) -> None:
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # this process is one of the parallel ones
    if tokenizer_json is None:
        _worker_tokenizer = ByteTokenizer()
    else:
        from tokenizers import Tokenizer as HFTokenizer

        _worker_tokenizer = BPETokenizer(HFTokenizer.from_str(tokenizer_json))


def _encode(batch: list[tuple[bool, bytes]]) -> list[tuple[bool, np.ndarray, int]]:
    """(validation?, tokens, source bytes) of each document of a batch."""
    assert _worker_tokenizer is not None
    return [(val, _worker_tokenizer.encode(doc), len(doc)) for val, doc in batch]


def _batches(corpus: Corpus, val_fraction: float) -> Iterator[list[tuple[bool, bytes]]]:
    batch: list[tuple[bool, bytes]] = []
    size = 0
    for name, doc in corpus.documents():
        batch.append((is_val_document(name, val_fraction), doc))
        size += len(doc)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def prepare_shards(
    corpus: Corpus,
    out: Path,
    tokenizer: str = "byte",
    bpe_vocab_size: int = 4096,
    val_fraction: float = 0.05,
    workers: int = 2,
    shard_tokens: int = 100_000_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize ``corpus`` into shards in ``out`` with ``workers`` processes; returns what
    ``shards.json`` records, plus the wall time and throughput."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output folder '{out}' exists and is not empty; choose a new one")
    t0 = time.perf_counter()
    # the tokenizer a run with data.tokenizer = tokenizer would use (BPE trained on the whole corpus, cached alike)
    tok = tokenizer_for(tokenizer, lambda: [d for _, d in corpus.documents()], bpe_vocab_size)
    recorded = tokenizer
    out.mkdir(parents=True, exist_ok=True)
    writers = {
        False: ShardWriter(out, "train", shard_tokens, tok.vocab_size),
        True: ShardWriter(out, "val", shard_tokens, tok.vocab_size),
    }
    n_docs = 0
    total = corpus.n_bytes
    bar = _bar(total, progress)
    tok_json = None if isinstance(tok, ByteTokenizer) else tok.as_hf().to_str()  # type: ignore[attr-defined]
    try:
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (tok_json,)) as pool:
                for done in pool.imap(_encode, _batches(corpus, val_fraction), chunksize=1):
                    n_docs += _write(done, writers, bar)
        else:
            _init_worker(tok_json)
            for batch in _batches(corpus, val_fraction):
                n_docs += _write(_encode(batch), writers, bar)
        paths = {side: w.close() for side, w in writers.items()}
    finally:
        if bar is not None:
            bar.close()
    if n_docs == 0:
        raise DataError(f"data source '{corpus.label}' is empty: no document has any text")
    split = "by document"
    if not paths[False] or not paths[True]:  # every document on one side: the run holds out the tail
        split = "by tail"
        if not paths[False]:
            for i, p in enumerate(paths[True]):
                p.replace(out / f"train_{i:06d}.bin")
            writers[False].tokens, writers[True].tokens = writers[True].tokens, 0
    if recorded != "byte":
        tok.as_hf().save(str(out / "tokenizer.json"))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    meta = {
        "format": "llm.c",
        "tokenizer": "byte" if recorded == "byte" else "tokenizer.json",
        "tokenizer_source": recorded,
        "vocab_size": tok.vocab_size,
        "source": corpus.label,
        "documents": n_docs,
        "bytes": total,
        "train_tokens": writers[False].tokens,
        "val_tokens": writers[True].tokens,
        "val_fraction": val_fraction,
        "split": split,
    }
    atomic_write_bytes(out / SHARDS_META, (json.dumps(meta, indent=1) + "\n").encode())
    return {**meta, "seconds": seconds, "mb_per_s": total / 1e6 / seconds if seconds else 0.0, "workers": workers}


def _write(done: list[tuple[bool, np.ndarray, int]], writers: dict[bool, ShardWriter], bar: Any) -> int:
    for val, tokens, _ in done:
        writers[val].write(tokens)
    if bar is not None:
        bar.update(sum(n for _, _, n in done))
    return len(done)


def _bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="tokenize", mininterval=0.5)
