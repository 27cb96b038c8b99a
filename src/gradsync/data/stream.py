"""A token stream made of one or more 1-D token arrays, cut into fixed-length sequences.

Pre-tokenized shards are memory-mapped, not loaded: a worker touches only the sequences of its
batches, so a corpus of many GB costs each worker page cache, not RAM. The stream is the
concatenation of its parts: sequence ``i`` is tokens ``i*T .. i*T+T`` (inputs plus shifted
targets) and may span two parts, so cutting a corpus into shards (``gradsync prepare``) changes
nothing that is trained on, and no part loses its tail (llm.c's loader drops up to ``T`` tokens
at the end of every shard instead).

A memory-mapped shard that shrinks during the run (truncated, or replaced by a shorter file)
would kill the worker that next reads past its new end with SIGBUS, naming nothing; so before
each read the stream checks that the files it touches still have their size, and says which
one changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from gradsync.core.errors import DataError


class TokenStream:
    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = [p for p in parts if len(p)]
        self._cum: np.ndarray | None = None
        # (file, size when opened) of each memory-mapped part
        self._files = [
            (p.filename, os.stat(p.filename).st_size) if isinstance(p, np.memmap) and p.filename else None
            for p in self.parts
        ]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def _offsets(self) -> np.ndarray:
        """Where each part starts in the stream, plus the stream's length at the end (cached)."""
        if self._cum is None:
            self._cum = np.concatenate([[0], np.cumsum([len(p) for p in self.parts], dtype=np.int64)])
        return self._cum

    def n_sequences(self, seq_len: int) -> int:
        return max(0, (int(self._offsets()[-1]) - 1) // seq_len)

    def sequences(self, ids: np.ndarray, seq_len: int) -> np.ndarray:
        """Rows ``ids`` (sequence numbers) as an int64 array of shape (len(ids), seq_len + 1)."""
        offsets = self._offsets()
        out = np.empty((len(ids), seq_len + 1), dtype=np.int64)
        first = np.searchsorted(offsets, np.asarray(ids, dtype=np.int64) * seq_len, side="right") - 1
        self._check_files(set(first.tolist()) | set((first + 1).tolist()))
        for row, i in enumerate(ids):
            start = int(i) * seq_len
            part = int(np.searchsorted(offsets, start, side="right")) - 1
            filled = 0
            while filled < seq_len + 1:  # usually one slice; more where the sequence crosses parts
                local = start + filled - int(offsets[part])
                piece = self.parts[part][local : local + seq_len + 1 - filled]
                out[row, filled : filled + len(piece)] = piece
                filled += len(piece)
                part += 1
        return out

    def _check_files(self, parts: set[int]) -> None:
        checked = set()
        for i in parts:
            f = self._files[i] if 0 <= i < len(self._files) else None
            if f is None or f[0] in checked:
                continue
            checked.add(f[0])
            try:
                now = os.stat(f[0]).st_size
            except OSError as e:
                raise DataError(f"data shard '{f[0]}' became unreadable during the run ({e.strerror})") from None
            if now < f[1]:
                raise DataError(
                    f"data shard '{f[0]}' shrank from {f[1]} to {now} bytes during the run (truncated "
                    "or replaced?); restore it and continue with --resume"
                )

    def head(self, n: int) -> np.ndarray:
        """The first ``n`` tokens (or fewer) of the first part."""
        return np.asarray(self.parts[0][:n]) if self.parts else np.empty(0, dtype=np.uint16)

    def max_token(self) -> int:
        return max(int(p.max()) for p in self.parts)

    def to_numpy(self) -> np.ndarray:
        """All tokens in one array: for small data and tests, never for a large corpus."""
        return np.concatenate(self.parts) if self.parts else np.empty(0, dtype=np.uint16)
