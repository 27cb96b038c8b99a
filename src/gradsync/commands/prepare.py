"""``gradsync prepare SRC OUT``: tokenize a corpus once, in parallel, into shards that
``gradsync train --data OUT`` memory-maps (:mod:`gradsync.data.shard_writer`).

SRC is what ``--data`` takes (a text file, folder or glob, ``stdlib``), or JSON Lines, Parquet
files, or a ``datasets`` dataset saved with ``save_to_disk`` (:mod:`gradsync.data.documents`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from gradsync.core.config import DataConfig
from gradsync.core.errors import ConfigError
from gradsync.data.documents import open_corpus
from gradsync.data.shard_writer import prepare_shards
from gradsync.data.sources import resolve_paths


def add_args(p: argparse.ArgumentParser) -> None:
    d = DataConfig()
    p.add_argument(
        "source",
        metavar="SRC",
        help="text file, folder or glob, 'stdlib', .jsonl, .parquet, or a datasets folder saved with save_to_disk",
    )
    p.add_argument("out", metavar="OUT", help="a new folder for the shards")
    p.add_argument(
        "--tokenizer",
        default=d.tokenizer,
        help="byte, bpe (trained on the corpus, as a run trains it) or a tokenizer.json (default: %(default)s)",
    )
    p.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size, help="for --tokenizer bpe (%(default)s)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of documents (by name hash) held out for validation (%(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="tokenizing processes; 0 (default): 1 for the byte tokenizer (faster than shipping bytes "
        f"to other processes), else the cores, at most 8 ({min(8, os.cpu_count() or 1)} here)",
    )
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (%(default)s)")
    p.add_argument(
        "--text-field",
        default="text",
        help="the text field of JSON Lines / column of Parquet and datasets rows (%(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise ConfigError(f"prepare: unrecognized argument(s) {' '.join(extra)}")
    if ns.workers < 0 or ns.shard_tokens < 1 or ns.bpe_vocab_size < 257:
        raise ConfigError("prepare: --workers must be >= 0, --shard-tokens >= 1 and --bpe-vocab-size >= 257")
    workers = ns.workers or (1 if ns.tokenizer == "byte" else min(8, os.cpu_count() or 1))
    if not 0 <= ns.val_fraction < 1:
        raise ConfigError(f"prepare: --val-fraction must be in [0, 1), got {ns.val_fraction}")
    files, label = resolve_paths(ns.source)
    corpus = open_corpus(files, label, ns.text_field)
    r = prepare_shards(
        corpus,
        Path(ns.out),
        ns.tokenizer,
        ns.bpe_vocab_size,
        ns.val_fraction,
        workers,
        ns.shard_tokens,
        progress=not ns.no_progress,
    )
    n_train = len(list(Path(ns.out).glob("train_*.bin")))
    n_val = len(list(Path(ns.out).glob("val_*.bin")))
    print(
        f"gradsync: prepared {r['documents']:,} documents ({r['bytes'] / 1e6:,.1f} MB, {corpus.kind}) into "
        f"{n_train} train + {n_val} val shard(s) in {ns.out}: {r['train_tokens']:,} train / {r['val_tokens']:,} "
        f"val tokens (split {r['split']}), vocab {r['vocab_size']:,}; {r['seconds']:.1f} s, "
        f"{r['mb_per_s']:.1f} MB/s with {workers} process(es). Train with --data {ns.out}"
    )
    return 0
